//! Scenario files (who calls whom and when) and the `serve` configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::config::{opt_secs, secs};
use crate::core::{CoreConfig, DtmfStep, PermissionGrant, UserCall, UserProfile};
use crate::driver::clock::tokio_now;
use crate::driver::{Faults, SimConfig, SimHandle, WebhookConfig};
use crate::error::SimError;
use crate::ids::{WaCallId, WaId};

/// A script of users, permissions and user-initiated calls (TOML or JSON).
///
/// ```toml
/// [[permissions]]
/// phone_number_id = "106540352242922"
/// user = "4915112345678"
/// grant = "temporary"
///
/// [[users]]
/// wa_id = "4915112345678"
/// name = "Alice"
/// behaviour.on_business_call = { action = "answer", after_s = 2, hang_up_after_s = 30 }
///
/// [[calls]]
/// at_s = 1
/// from = "4915100000000"
/// to = "4930901820"          # display number or phone number id
/// count = 10                 # callers 4915100000000 … 4915100000009
/// interval_s = 0.5
/// hang_up_after_s = 20
/// dtmf = [ { after_s = 2, digits = "1#" } ]
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Permissions set before anything else (no webhooks).
    pub permissions: Vec<ScenarioPermission>,
    /// Scripted users added before the calls start.
    pub users: Vec<UserProfile>,
    /// User-initiated calls.
    pub calls: Vec<ScenarioCall>,
}

/// A permission to set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioPermission {
    /// Phone number id or display number.
    pub phone_number_id: String,
    /// User.
    pub user: WaId,
    /// State.
    pub grant: PermissionGrant,
}

/// One or more user-initiated calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioCall {
    /// Start offset from the scenario start.
    #[serde(rename = "at_s", with = "secs", default)]
    pub at: Duration,
    /// Caller (the first one when `count > 1`).
    pub from: WaId,
    /// Phone number id or display number.
    pub to: String,
    /// Number of calls, from consecutive caller numbers.
    #[serde(default = "one")]
    pub count: u32,
    /// Spacing between the calls of a `count`.
    #[serde(rename = "interval_s", with = "secs", default)]
    pub interval: Duration,
    /// Hang up this long after being answered.
    #[serde(rename = "hang_up_after_s", with = "opt_secs", default)]
    pub hang_up_after: Option<Duration>,
    /// Give up if not answered by then.
    #[serde(rename = "give_up_after_s", with = "opt_secs", default)]
    pub give_up_after: Option<Duration>,
    /// Digits pressed after the answer.
    #[serde(default)]
    pub dtmf: Vec<DtmfStep>,
}

fn one() -> u32 {
    1
}

/// What a scenario run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScenarioOutcome {
    /// Calls placed.
    pub placed: Vec<WaCallId>,
    /// Calls Meta refused, with the reason.
    pub refused: Vec<(WaId, String)>,
}

/// Most calls one scenario may place.
pub const MAX_SCENARIO_CALLS: usize = 100_000;

impl Scenario {
    /// Parses TOML.
    pub fn from_toml(s: &str) -> Result<Self, SimError> {
        toml::from_str(s).map_err(|e| SimError::Config(e.to_string()))
    }

    /// Every call to place, as `(offset, UserCall with the number still unresolved)`,
    /// sorted by offset and bounded by [`MAX_SCENARIO_CALLS`].
    pub fn expand(&self) -> Result<Vec<(Duration, String, UserCall)>, SimError> {
        let mut out = Vec::new();
        for c in &self.calls {
            for i in 0..c.count {
                if out.len() >= MAX_SCENARIO_CALLS {
                    return Err(SimError::Config(format!(
                        "scenario places more than {MAX_SCENARIO_CALLS} calls"
                    )));
                }
                let from = nth_number(&c.from, i)?;
                let mut call = UserCall::new(from, crate::ids::PhoneNumberId::trusted("0"));
                call.hang_up_after = c.hang_up_after;
                call.give_up_after = c.give_up_after;
                call.dtmf = c.dtmf.clone();
                out.push((c.at + c.interval.saturating_mul(i), c.to.clone(), call));
            }
        }
        out.sort_by_key(|(at, _, _)| *at);
        Ok(out)
    }
}

/// `base + i`, keeping the digit count.
fn nth_number(base: &WaId, i: u32) -> Result<WaId, SimError> {
    let n: u128 = base
        .as_str()
        .parse()
        .map_err(|_| SimError::Config(format!("bad number {base}")))?;
    let s = format!("{:0width$}", n + u128::from(i), width = base.as_str().len());
    Ok(WaId::parse(&s)?)
}

impl SimHandle {
    /// Runs a scenario in real time: permissions and users first, then each call at its
    /// offset. Returns when the last call was placed (not when calls end).
    pub async fn run_scenario(&self, s: &Scenario) -> Result<ScenarioOutcome, SimError> {
        for p in &s.permissions {
            let pnid = self
                .resolve_number(&p.phone_number_id)
                .ok_or_else(|| SimError::UnknownNumber(p.phone_number_id.clone()))?;
            self.set_permission(&pnid, &p.user, p.grant).await?;
        }
        for u in &s.users {
            self.set_user(u.clone()).await?;
        }
        let start = tokio_now();
        let mut outcome = ScenarioOutcome::default();
        for (at, to, mut call) in s.expand()? {
            call.to = self
                .resolve_number(&to)
                .ok_or_else(|| SimError::UnknownNumber(to.clone()))?;
            tokio::time::sleep_until(start + at).await;
            let from = call.from.clone();
            match self.user_calls(call).await {
                Ok(id) => outcome.placed.push(id),
                Err(e @ (SimError::Stopped | SimError::Io(_))) => return Err(e),
                Err(e) => outcome.refused.push((from, e.to_string())),
            }
        }
        Ok(outcome)
    }
}

/// The `whatsip-sim serve` configuration file.
///
/// ```toml
/// listen = "127.0.0.1:8055"
///
/// [meta]                      # whatsip_sim::core::CoreConfig
/// access_tokens = ["dev-token"]
/// [[meta.numbers]]
/// phone_number_id = "106540352242922"
/// display_phone_number = "4930901820"
///
/// [webhook]
/// url = "http://127.0.0.1:8080/webhooks/whatsapp"
/// app_secret_file = "/etc/whatsip/app_secret"
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimFile {
    /// Listen address (127.0.0.1 only is recommended).
    pub listen: Option<SocketAddr>,
    /// The Meta model.
    pub meta: CoreConfig,
    /// Webhook delivery.
    pub webhook: WebhookFile,
    /// Initial fault rules.
    pub faults: Faults,
    /// Media report polling period.
    #[serde(rename = "media_poll_s", with = "opt_secs")]
    pub media_poll: Option<Duration>,
}

/// `[webhook]` of [`SimFile`]: like [`WebhookConfig`], with the secret in a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookFile {
    /// Callback URL.
    pub url: Option<String>,
    /// File holding the app secret (trailing newline stripped).
    pub app_secret_file: Option<PathBuf>,
    /// Per-attempt timeout.
    #[serde(rename = "timeout_s", with = "secs")]
    pub timeout: Duration,
    /// Attempts per delivery.
    pub max_attempts: u32,
    /// Retry backoff base.
    #[serde(rename = "retry_backoff_s", with = "secs")]
    pub retry_backoff: Duration,
    /// Parallel lanes.
    pub lanes: usize,
}

impl Default for WebhookFile {
    fn default() -> Self {
        let d = WebhookConfig::default();
        Self {
            url: None,
            app_secret_file: None,
            timeout: d.timeout,
            max_attempts: d.max_attempts,
            retry_backoff: d.retry_backoff,
            lanes: d.lanes,
        }
    }
}

impl SimFile {
    /// Parses TOML.
    pub fn from_toml(s: &str) -> Result<Self, SimError> {
        toml::from_str(s).map_err(|e| SimError::Config(e.to_string()))
    }

    /// Builds the runtime configuration, given the app secret read by the caller.
    pub fn into_config(self, app_secret: String) -> SimConfig {
        let d = SimConfig::default();
        SimConfig {
            listen: self.listen.unwrap_or(d.listen),
            core: self.meta,
            webhook: WebhookConfig {
                url: self.webhook.url,
                app_secret,
                timeout: self.webhook.timeout,
                max_attempts: self.webhook.max_attempts,
                retry_backoff: self.webhook.retry_backoff,
                lanes: self.webhook.lanes,
            },
            faults: self.faults,
            media_poll: self.media_poll.unwrap_or(d.media_poll),
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_file_loads() {
        let f = SimFile::from_toml(include_str!("../sim.example.toml")).unwrap();
        assert_eq!(f.meta.numbers.len(), 1);
        assert_eq!(f.meta.timing.answer_timeout, Duration::from_secs(45));
        assert!(f.webhook.url.is_some());
        let cfg = f.into_config("s".into());
        assert_eq!(cfg.webhook.app_secret, "s");
    }

    #[test]
    fn example_scenario_expands_consecutive_callers_in_time_order() {
        let s = Scenario::from_toml(include_str!("../scenario.example.toml")).unwrap();
        let calls = s.expand().unwrap();
        assert!(calls.len() >= 2);
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
        let firsts: Vec<&str> = calls.iter().map(|c| c.2.from.as_str()).collect();
        assert!(firsts.contains(&"4915100000000") && firsts.contains(&"4915100000001"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(SimFile::from_toml("lisen = \"127.0.0.1:1\"").is_err());
        assert!(
            Scenario::from_toml("[[calls]]\nfrom = \"4915100000000\"\nto = \"1\"\nwhen = 3")
                .is_err()
        );
    }
}
