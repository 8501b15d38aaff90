//! The live config: an `Arc<Config>` swapped on reload (STYLE.md §7). Calls take a
//! snapshot when they start and keep it; a reload that fails keeps the old config.

use std::sync::{Arc, PoisonError, RwLock};

use super::{Config, ConfigError, Environment, ProcessEnvironment, Transport};

/// The current config, shared by the tasks of the gateway.
#[derive(Debug)]
pub struct SharedConfig {
    current: RwLock<Arc<Config>>,
}

/// What a successful reload changed.
#[derive(Debug)]
pub struct Reloaded {
    /// The new config.
    pub config: Arc<Config>,
    /// Keys whose new values only take effect after a restart (listeners, port ranges).
    pub restart_required: Vec<&'static str>,
}

impl SharedConfig {
    /// Starts with `config`.
    pub fn new(config: Config) -> Self {
        Self {
            current: RwLock::new(Arc::new(config)),
        }
    }

    /// The config a new call should use for its whole life.
    pub fn snapshot(&self) -> Arc<Config> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Swaps in an already loaded config; returns what changed that needs a restart.
    pub fn replace(&self, new: Arc<Config>) -> Reloaded {
        let old = self.snapshot();
        let restart_required = restart_required(&old, &new);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&new);
        Reloaded {
            config: new,
            restart_required,
        }
    }

    /// Re-reads the file the current config came from (SIGHUP). On error nothing changes.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        self.reload_with(&ProcessEnvironment)
    }

    /// [`SharedConfig::reload`] with secrets resolved through `env`.
    pub fn reload_with(&self, env: &dyn Environment) -> Result<Reloaded, ConfigError> {
        let old = self.snapshot();
        let new = Arc::new(Config::load_with(&old.source, env)?);
        let restart_required = restart_required(&old, &new);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&new);
        Ok(Reloaded {
            config: new,
            restart_required,
        })
    }
}

fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.webhook.listen != new.webhook.listen || old.webhook.tls != new.webhook.tls {
        keys.push("webhook");
    }
    if old.sip.listen != new.sip.listen {
        keys.push("sip.listen");
    }
    if old.media.bind != new.media.bind || old.media.rtp_ports != new.media.rtp_ports {
        keys.push("media.bind/rtp_port_*");
    }
    if old.pbx.tls_ca != new.pbx.tls_ca
        || (old.pbx.transport != new.pbx.transport
            && (old.pbx.transport == Transport::Tls || new.pbx.transport == Transport::Tls))
    {
        keys.push("pbx.tls_ca");
    }
    if old.admin != new.admin {
        keys.push("admin.listen");
    }
    if old.logging.format != new.logging.format {
        keys.push("logging.format");
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{BASE, env};

    fn write(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reload_swaps_on_success_and_keeps_old_config_on_error() {
        let dir = std::env::temp_dir().join(format!("whatsip-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("whatsip.toml");
        write(&file, &format!("{BASE}[dialplan]\nring_timeout_s = 20\n"));
        let shared = SharedConfig::new(Config::load_with(&file, &env()).unwrap());
        let call_snapshot = shared.snapshot();

        write(
            &file,
            &format!(
                "{BASE}[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@pbx\"\n[webhook]\nlisten = \"127.0.0.1:9999\"\n"
            ),
        );
        let r = shared.reload_with(&env()).unwrap();
        assert_eq!(r.config.dialplan.len(), 1);
        assert_eq!(r.restart_required, vec!["webhook"]);
        assert_eq!(shared.snapshot().dialplan.len(), 1);
        assert!(
            call_snapshot.dialplan.is_empty(),
            "a live call keeps its snapshot"
        );

        write(
            &file,
            &format!(
                "{BASE}[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:${{9}}@pbx\"\n"
            ),
        );
        assert!(shared.reload_with(&env()).is_err());
        assert_eq!(
            shared.snapshot().dialplan.len(),
            1,
            "failed reload keeps the old config"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
