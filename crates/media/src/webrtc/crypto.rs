//! str0m's crypto provider with one shared DTLS configuration.
//!
//! str0m's aws-lc-rs provider builds a new `dimpl::Config` for every `Rtc`, and dimpl's
//! `ConfigBuilder::build` always runs its crypto self-validation (`CryptoProvider::validate`:
//! trial ECDH exchanges on every key-exchange group, signature checks, PRF and AEAD tests).
//! Profiling the gateway during a signalling run showed that validation at 19 % of all its CPU,
//! more than the DTLS handshake itself. The configuration holds no per-connection state (it is
//! an `Arc` precisely so connections can share it), so [`SharedConfigDtls`] validates once per
//! MTU and hands the same `Arc<Config>` to every connection. Everything else (SRTP, hashes,
//! certificate generation, the handshake) is aws-lc-rs as before.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use str0m::config::DtlsCert;
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The provider every leg and phone uses (see the module doc).
pub(crate) fn shared_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        static DTLS: SharedConfigDtls = SharedConfigDtls {
            configs: Mutex::new(Vec::new()),
        };
        let base = str0m::crypto::from_feature_flags();
        Arc::new(CryptoProvider {
            dtls_provider: &DTLS,
            ..base
        })
    }))
}

/// A [`DtlsProvider`] building dimpl connections on a configuration validated once.
#[derive(Debug)]
pub(crate) struct SharedConfigDtls {
    /// One validated configuration per MTU asked for (str0m always asks for the same one).
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl SharedConfigDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(Arc::clone(c));
        }
        // Same settings as str0m-aws-lc-rs: ICE has verified return routability before DTLS,
        // so server cookies are redundant.
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("dimpl config: {e}")))?,
        );
        // Bounded: MTUs come from our own str0m configuration, not from the network.
        if configs.len() < 8 {
            configs.push((mtu, Arc::clone(&config)));
        }
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported dtls version {other}"
                )));
            }
        };
        Ok(Box::new(Instance { dtls }))
    }
}

struct Instance {
    dtls: dimpl::Dtls,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfigDtlsInstance")
            .finish_non_exhaustive()
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.dtls.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_validated_config_per_mtu() {
        let p = SharedConfigDtls {
            configs: Mutex::new(Vec::new()),
        };
        let a = p.config(Some(1150)).unwrap();
        let b = p.config(Some(1150)).unwrap();
        let c = p.config(None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(p.configs.lock().unwrap().len(), 2);
    }
}
