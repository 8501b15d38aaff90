//! Plain-data configuration of the simulated Meta side. `Default` is production behaviour
//! (reference §3.6, §7.2–§7.4). Deserialises from TOML with durations in seconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{PhoneNumberId, WaId, WabaId};
use crate::sdp::KeyExchange;

/// Everything the core needs to behave like Meta for a set of business numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// Seed for ids, tokens and fbtrace ids (tests pin it; the CLI randomises it).
    pub seed: u64,
    /// Bearer tokens accepted on the Graph API. Empty: any non-empty token is accepted.
    pub access_tokens: Vec<String>,
    /// WhatsApp Business Account id (`entry[].id`).
    pub waba_id: WabaId,
    /// Graph id of the app (shown in `sip.servers[].app_id`).
    pub app_id: u64,
    /// Business phone numbers served.
    pub numbers: Vec<BusinessNumber>,
    /// Known users; anyone else behaves like `default_user`.
    pub users: Vec<UserProfile>,
    /// Behaviour of users without a profile.
    pub default_user: UserBehaviour,
    /// Timers of the call machines.
    pub timing: CallTiming,
    /// Per-pair and per-number limits.
    pub limits: Limits,
    /// Country calling codes of business numbers that cannot place business-initiated
    /// calls (138013): USA/Canada `1`, Egypt `20`, Vietnam `84`, Nigeria `234` (§7.2).
    pub blocked_bic_country_codes: Vec<String>,
    /// Most terminated calls kept for "action on a terminated call" errors and queries.
    pub max_terminated_calls_kept: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            seed: 0x5eed,
            access_tokens: Vec::new(),
            waba_id: WabaId::trusted("102290129340398"),
            app_id: 1234567890,
            numbers: vec![BusinessNumber::default()],
            users: Vec::new(),
            default_user: UserBehaviour::default(),
            timing: CallTiming::default(),
            limits: Limits::default(),
            blocked_bic_country_codes: ["1", "20", "84", "234"].map(String::from).to_vec(),
            max_terminated_calls_kept: 10_000,
        }
    }
}

/// One business phone number.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessNumber {
    /// Graph id used in paths.
    pub phone_number_id: PhoneNumberId,
    /// The number, digits only (`metadata.display_phone_number`, `to` of user calls).
    pub display_phone_number: String,
    /// `calling.status` is `ENABLED` (calling is off by default on real numbers, §4).
    pub calling_enabled: bool,
    /// `callback_permission_status` is `ENABLED` (§3.1).
    pub callback_permission: bool,
    /// `calling.sip.status` is `ENABLED`: Graph calling returns 131055 (§5.1).
    pub sip_enabled: bool,
    /// Concurrent calls allowed on this number (138002, §7.3).
    pub max_concurrent_calls: usize,
    /// Messaging limit tier (unique recipients/day); below 2000 enabling calling fails
    /// with 138015 (§4).
    pub messaging_limit: u32,
    /// An app is subscribed to the `calls` field; without it and without SIP, enabling
    /// calling fails with 138018 (§1.1).
    pub calls_subscribed: bool,
    /// SRTP keying expected in business SDP.
    #[serde(with = "key_exchange_serde")]
    pub srtp_key_exchange: KeyExchange,
}

impl Default for BusinessNumber {
    fn default() -> Self {
        Self {
            phone_number_id: PhoneNumberId::trusted("106540352242922"),
            display_phone_number: "4930901820".into(),
            calling_enabled: true,
            callback_permission: false,
            sip_enabled: false,
            max_concurrent_calls: 1000,
            messaging_limit: 2000,
            calls_subscribed: true,
            srtp_key_exchange: KeyExchange::Dtls,
        }
    }
}

/// A WhatsApp user known to the simulator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserProfile {
    /// The user's number.
    pub wa_id: WaId,
    /// Profile name (`contacts[].profile.name`).
    #[serde(default = "default_name")]
    pub name: String,
    /// How the user reacts.
    #[serde(default)]
    pub behaviour: UserBehaviour,
}

fn default_name() -> String {
    "Simulated User".into()
}

/// How a simulated user reacts to business calls and permission requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserBehaviour {
    /// Reaction to a ringing business-initiated call.
    pub on_business_call: BusinessCallBehaviour,
    /// Reaction to a call permission request.
    pub on_permission_request: PermissionRequestBehaviour,
}

/// Reaction to a ringing business-initiated call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum BusinessCallBehaviour {
    /// Pick up after `after_s`, then optionally press digits and hang up.
    Answer {
        /// Ringing time before pick-up.
        #[serde(rename = "after_s", with = "secs", default)]
        after: Duration,
        /// Hang up this long after pick-up (`None`: wait for the business).
        #[serde(rename = "hang_up_after_s", with = "opt_secs", default)]
        hang_up_after: Option<Duration>,
        /// Digits to press after pick-up.
        #[serde(default)]
        dtmf: Vec<DtmfStep>,
    },
    /// Decline after `after_s` (REJECTED then terminate).
    Reject {
        /// Ringing time before declining.
        #[serde(rename = "after_s", with = "secs", default)]
        after: Duration,
    },
    /// Let it ring until the ring timeout.
    Ignore,
    /// Wait for an explicit `user_answers` / `user_rejects` from the test.
    Manual,
}

impl Default for BusinessCallBehaviour {
    fn default() -> Self {
        Self::Answer {
            after: Duration::from_secs(2),
            hang_up_after: None,
            dtmf: Vec::new(),
        }
    }
}

/// Reaction to a call permission request (reference §3.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum PermissionRequestBehaviour {
    /// Grant a 7-day permission.
    AcceptTemporary {
        /// Delay before replying.
        #[serde(rename = "after_s", with = "secs", default)]
        after: Duration,
    },
    /// Grant a permanent permission.
    AcceptPermanent {
        /// Delay before replying.
        #[serde(rename = "after_s", with = "secs", default)]
        after: Duration,
    },
    /// Decline.
    Decline {
        /// Delay before replying.
        #[serde(rename = "after_s", with = "secs", default)]
        after: Duration,
    },
    /// Never reply.
    Ignore,
}

impl Default for PermissionRequestBehaviour {
    fn default() -> Self {
        Self::AcceptTemporary {
            after: Duration::from_secs(1),
        }
    }
}

/// Digits pressed at a time offset after pick-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtmfStep {
    /// Offset from pick-up.
    #[serde(rename = "after_s", with = "secs")]
    pub after: Duration,
    /// Digits, `0-9*#A-D`.
    pub digits: String,
}

/// Timers of Meta's call machines.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallTiming {
    /// User-initiated: time the business has to `accept` after `connect` (30–60 s, §2.1).
    #[serde(rename = "answer_timeout_s", with = "secs")]
    pub answer_timeout: Duration,
    /// Business-initiated: ringing time before the call ends unanswered (undocumented,
    /// §10.2).
    #[serde(rename = "ring_timeout_s", with = "secs")]
    pub ring_timeout: Duration,
    /// Media inactivity watchdogs (§6.4).
    pub watchdog: MediaWatchdog,
}

impl Default for CallTiming {
    fn default() -> Self {
        Self {
            answer_timeout: Duration::from_secs(45),
            ring_timeout: Duration::from_secs(60),
            watchdog: MediaWatchdog::default(),
        }
    }
}

/// The WhatsApp client's media watchdogs: no business media for `initial` after the call
/// is answered, or for `mid_call` after the last media, ends it with 138021 (§6.4).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaWatchdog {
    /// Arm the watchdogs. Turn off when the media peer cannot observe media.
    pub enabled: bool,
    /// Silence allowed at call start.
    #[serde(rename = "initial_s", with = "secs")]
    pub initial: Duration,
    /// Silence allowed mid-call.
    #[serde(rename = "mid_call_s", with = "secs")]
    pub mid_call: Duration,
}

impl Default for MediaWatchdog {
    fn default() -> Self {
        Self {
            enabled: true,
            initial: Duration::from_secs(20),
            mid_call: Duration::from_secs(30),
        }
    }
}

/// Limits per business number and per business–user pair (reference §3.6, §7.3).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Lifetime of a temporary permission (7 days).
    #[serde(rename = "temporary_permission_s", with = "secs")]
    pub temporary_permission: Duration,
    /// Connected business-initiated calls per pair per 24 h (100; 138012).
    pub connected_calls_per_day: usize,
    /// Permission requests per pair per 24 h (1; 138009).
    pub permission_requests_per_day: usize,
    /// Permission requests per pair per 7 days (2; 138009).
    pub permission_requests_per_week: usize,
    /// Consecutive unanswered/rejected business calls before the user is nudged (2).
    pub nudge_after_missed: u32,
    /// Consecutive unanswered/rejected business calls before auto-revoke (4).
    pub revoke_after_missed: u32,
    /// Business-initiated call attempts per number per 24 h (10 000; 138005).
    pub bic_attempts_per_day: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            temporary_permission: Duration::from_secs(7 * 24 * 3600),
            connected_calls_per_day: 100,
            permission_requests_per_day: 1,
            permission_requests_per_week: 2,
            nudge_after_missed: 2,
            revoke_after_missed: 4,
            bic_attempts_per_day: 10_000,
        }
    }
}

impl Limits {
    /// Sandbox / public test number limits (reference §3.6).
    pub fn sandbox() -> Self {
        Self {
            permission_requests_per_day: 25,
            permission_requests_per_week: 100,
            nudge_after_missed: 5,
            revoke_after_missed: 10,
            ..Self::default()
        }
    }
}

pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            Some(v) => Duration::try_from_secs_f64(v)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

mod key_exchange_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::sdp::KeyExchange;

    pub(super) fn serialize<S: Serializer>(k: &KeyExchange, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match k {
            KeyExchange::Dtls => "DTLS",
            KeyExchange::Sdes => "SDES",
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyExchange, D::Error> {
        match String::deserialize(d)?.as_str() {
            "DTLS" => Ok(KeyExchange::Dtls),
            "SDES" => Ok(KeyExchange::Sdes),
            other => Err(serde::de::Error::custom(format!(
                "srtp_key_exchange must be DTLS or SDES, not {other:?}"
            ))),
        }
    }
}
