//! One DTLS certificate per endpoint, reused by every call and rotated after a period.
//!
//! str0m generates a fresh self-signed ECDSA P-256 certificate for every `Rtc` unless it is
//! given one (`RtcConfig::set_dtls_cert`). Generating it (key pair, certificate, signature)
//! costs far more than the rest of a leg's creation, so a call rate is bounded by it. WebRTC
//! does not need a new certificate per connection: browsers reuse one certificate across peer
//! connections, and RFC 8827 §6.5 lets an endpoint reuse its DTLS certificate; the peer
//! authenticates it by the `a=fingerprint` in our SDP, which str0m computes from the
//! certificate it was given, so SDP and handshake always agree.
//!
//! [`DtlsCertificates`] hands out the current certificate ([`DtlsCertificates::current`],
//! sans-IO: the caller passes `now`) and generates a new one once the current one is older
//! than the rotation period. Legs keep the certificate they were built with, so rotation never
//! disturbs a call in progress. Clones share one certificate (one per endpoint); a rotation
//! period of zero restores a fresh certificate for every leg.
//!
//! The generated certificates are valid for 365 days (str0m/dimpl's choice), so the rotation
//! period is capped at [`DtlsCertificates::MAX_ROTATION`].

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use tracing::info;

use super::WaLegError;

/// A DTLS certificate with its SHA-256 fingerprint (as written in `a=fingerprint:sha-256`).
pub struct DtlsIdentity {
    cert: DtlsCert,
    fingerprint_sha256: String,
    created: Instant,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("DtlsIdentity")
            .field("fingerprint_sha256", &self.fingerprint_sha256)
            .finish_non_exhaustive()
    }
}

impl DtlsIdentity {
    /// Generates a new self-signed ECDSA P-256 certificate (str0m's aws-lc-rs provider).
    pub fn generate(now: Instant) -> Result<Self, WaLegError> {
        let provider = super::crypto::shared_provider();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| WaLegError::Config("dtls certificate generation failed".to_owned()))?;
        let digest = provider.sha256_provider.sha256(&cert.certificate);
        let mut fingerprint_sha256 = String::with_capacity(32 * 3);
        for (i, b) in digest.iter().enumerate() {
            if i > 0 {
                fingerprint_sha256.push(':');
            }
            let _ = write!(fingerprint_sha256, "{b:02X}");
        }
        Ok(Self {
            cert,
            fingerprint_sha256,
            created: now,
        })
    }

    /// The certificate and key (DER), to give to str0m.
    pub(crate) fn cert(&self) -> &DtlsCert {
        &self.cert
    }

    /// SHA-256 fingerprint, upper-case hex bytes joined by `:` (the value after `sha-256 ` in
    /// `a=fingerprint`).
    pub fn fingerprint_sha256(&self) -> &str {
        &self.fingerprint_sha256
    }

    /// When it was generated.
    pub fn created(&self) -> Instant {
        self.created
    }
}

#[derive(Default)]
struct State {
    current: Option<Arc<DtlsIdentity>>,
    generated: u64,
}

/// The DTLS certificate source of one endpoint: one certificate shared by its legs, replaced
/// after [`DtlsCertificates::rotation`]. Cheap to clone; clones share the certificate.
#[derive(Clone)]
pub struct DtlsCertificates {
    rotation: Duration,
    state: Arc<Mutex<State>>,
}

impl DtlsCertificates {
    /// Default rotation period: one day.
    pub const DEFAULT_ROTATION: Duration = Duration::from_secs(24 * 3600);
    /// Longest rotation period (the certificates are valid for 365 days).
    pub const MAX_ROTATION: Duration = Duration::from_secs(180 * 24 * 3600);

    /// A source that generates its first certificate on first use and a new one once the
    /// current one is `rotation` old (capped at [`Self::MAX_ROTATION`]). `Duration::ZERO`: a
    /// new certificate for every leg (str0m's own behaviour).
    pub fn new(rotation: Duration) -> Self {
        Self {
            rotation: rotation.min(Self::MAX_ROTATION),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// A fresh certificate for every leg (no reuse).
    pub fn per_leg() -> Self {
        Self::new(Duration::ZERO)
    }

    /// The rotation period.
    pub fn rotation(&self) -> Duration {
        self.rotation
    }

    /// The certificate for a leg created at `now`: the current one while it is younger than
    /// the rotation period, else a newly generated one (which becomes current).
    pub fn current(&self, now: Instant) -> Result<Arc<DtlsIdentity>, WaLegError> {
        if self.rotation.is_zero() {
            let id = Arc::new(DtlsIdentity::generate(now)?);
            self.lock().generated += 1;
            return Ok(id);
        }
        let mut state = self.lock();
        if let Some(id) = &state.current
            && now.saturating_duration_since(id.created) < self.rotation
        {
            return Ok(Arc::clone(id));
        }
        // Generation takes about a millisecond, once per rotation period: holding the lock
        // meanwhile keeps other workers from generating the same thing twice.
        let id = Arc::new(DtlsIdentity::generate(now)?);
        state.generated += 1;
        info!(
            fingerprint = %id.fingerprint_sha256,
            rotation_s = self.rotation.as_secs(),
            "new dtls certificate"
        );
        state.current = Some(Arc::clone(&id));
        Ok(id)
    }

    /// How many certificates this source has generated so far.
    pub fn generated(&self) -> u64 {
        self.lock().generated
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for DtlsCertificates {
    fn default() -> Self {
        Self::new(Self::DEFAULT_ROTATION)
    }
}

impl std::fmt::Debug for DtlsCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsCertificates")
            .field("rotation", &self.rotation)
            .field("generated", &self.generated())
            .finish()
    }
}

/// Two sources are equal when they share the same certificate state (clones of one another).
impl PartialEq for DtlsCertificates {
    fn eq(&self, other: &Self) -> bool {
        self.rotation == other.rotation && Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for DtlsCertificates {}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn one_certificate_until_the_period_ends_then_a_new_one() {
        let now = t0();
        let certs = DtlsCertificates::new(Duration::from_secs(10));
        let a = certs.current(now).unwrap();
        let b = certs.clone().current(now + Duration::from_secs(9)).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "clones share the certificate");
        assert_eq!(certs.generated(), 1);
        let c = certs.current(now + Duration::from_secs(10)).unwrap();
        assert_ne!(a.fingerprint_sha256(), c.fingerprint_sha256());
        assert_eq!(c.created(), now + Duration::from_secs(10));
        assert_eq!(certs.generated(), 2);
        // an instant before the current certificate's creation does not rotate it
        let d = certs.current(now).unwrap();
        assert!(Arc::ptr_eq(&c, &d));
    }

    #[test]
    fn zero_period_gives_a_new_certificate_each_time() {
        let now = t0();
        let certs = DtlsCertificates::per_leg();
        let a = certs.current(now).unwrap();
        let b = certs.current(now).unwrap();
        assert_ne!(a.fingerprint_sha256(), b.fingerprint_sha256());
        assert_eq!(certs.generated(), 2);
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der_certificate() {
        let id = DtlsIdentity::generate(t0()).unwrap();
        let digest = str0m::crypto::from_feature_flags()
            .sha256_provider
            .sha256(&id.cert().certificate);
        let bytes: Vec<u8> = id
            .fingerprint_sha256()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        assert_eq!(bytes, digest.to_vec());
        assert!(!format!("{id:?}").contains("private_key"));
    }

    #[test]
    fn period_is_capped_below_the_certificate_validity() {
        let certs = DtlsCertificates::new(Duration::from_secs(400 * 24 * 3600));
        assert_eq!(certs.rotation(), DtlsCertificates::MAX_ROTATION);
        let a = DtlsCertificates::default();
        assert_eq!(a, a.clone());
        assert_ne!(a, DtlsCertificates::default());
    }
}
