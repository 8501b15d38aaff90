//! The call detail record and its parts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A wall-clock instant as milliseconds since the Unix epoch (UTC).
///
/// CDRs are read by people and other programs, so wall time is stored as plain integer
/// milliseconds; it is passed in by the caller (cores never read the clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// Converts a `SystemTime`; times before the epoch become negative.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMillis) -> Duration {
        let ms = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

/// Which side placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// User-initiated: a WhatsApp user called the business; whatsip sent an INVITE to the PBX.
    Inbound,
    /// Business-initiated: the PBX sent an INVITE; whatsip called the WhatsApp user.
    Outbound,
}

impl Direction {
    /// The stored name (`inbound`, `outbound`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// How a call attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Both sides talked; the call ended normally.
    Answered,
    /// The called side declined (PBX 486/600/603, WhatsApp REJECTED).
    Rejected,
    /// Nobody answered before the ring timeout.
    NoAnswer,
    /// The calling side gave up before an answer (CANCEL, terminate before answer).
    Cancelled,
    /// whatsip refused the call before trying (no permission, consent guard, no route, drain).
    Refused,
    /// Something failed (SIP 4xx/5xx, Graph error, media failure).
    Failed,
    /// whatsip stopped (crash or kill) while the call was live; found at the next start.
    Interrupted,
}

impl Outcome {
    /// All outcomes, for filters and help texts.
    pub const ALL: [Outcome; 7] = [
        Outcome::Answered,
        Outcome::Rejected,
        Outcome::NoAnswer,
        Outcome::Cancelled,
        Outcome::Refused,
        Outcome::Failed,
        Outcome::Interrupted,
    ];

    /// The stored name (`answered`, `no_answer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Rejected => "rejected",
            Outcome::NoAnswer => "no_answer",
            Outcome::Cancelled => "cancelled",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupSide {
    /// The WhatsApp user (or Meta on their behalf: `terminate` webhook).
    WhatsApp,
    /// The PBX (BYE, CANCEL or a final error response).
    Pbx,
    /// whatsip itself (timeout, drain, media watchdog, error).
    Gateway,
}

/// Media quality of one direction of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaQuality {
    /// RTP packets received on this direction.
    pub packets: u64,
    /// Packets expected but never received.
    pub lost: u64,
    /// Interarrival jitter (RFC 3550 A.8), milliseconds.
    pub jitter_ms: f64,
    /// The longest stretch without a packet, milliseconds.
    pub longest_gap_ms: u64,
}

/// Why and how the call ended, in both legs' words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    /// Who hung up.
    pub hangup_by: Option<HangupSide>,
    /// Meta's terminate status (`COMPLETED`, `FAILED`) or business-initiated status.
    pub meta_status: Option<String>,
    /// Meta's error code (131xxx/138xxx), when Meta gave one.
    pub meta_error_code: Option<i64>,
    /// The SIP status of the PBX leg's final response, or sent to the PBX.
    pub sip_status: Option<u16>,
    /// A short human-readable reason (SIP `Reason`, Meta error title, gateway cause).
    pub reason: Option<String>,
}

/// The estimated price of a business-initiated call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// ISO 4217 currency of the rate card.
    pub currency: String,
    /// Amount in millionths of the currency unit (exact integer arithmetic).
    pub micros: i64,
}

impl Cost {
    /// The amount as a decimal string with six fractional digits, e.g. `0.012000`.
    pub fn to_decimal_string(&self) -> String {
        let sign = if self.micros < 0 { "-" } else { "" };
        let abs = self.micros.unsigned_abs();
        format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

/// One record per call attempt, in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The WhatsApp call id (`wacid.…`), the record's key.
    pub wa_call_id: String,
    /// Who placed the call.
    pub direction: Direction,
    /// The business number, E.164 digits.
    pub business_number: String,
    /// The WhatsApp user's number (wa_id), E.164 digits.
    pub customer_number: String,
    /// The WhatsApp profile name, when Meta sent one.
    pub customer_name: Option<String>,
    /// The SIP Call-ID of the PBX leg.
    pub pbx_call_id: Option<String>,
    /// The SIP Call-ID of the WhatsApp leg, in Meta's SIP mode only.
    pub wa_sip_call_id: Option<String>,
    /// The dial-plan rule that routed the call.
    pub dialplan_rule: Option<String>,
    /// The SIP target the call was sent to (or came from, outbound).
    pub pbx_target: Option<String>,
    /// When the offer arrived (webhook `connect` or PBX INVITE).
    pub offer_at: UnixMillis,
    /// When the called side started ringing.
    pub ring_at: Option<UnixMillis>,
    /// When the call was answered.
    pub answer_at: Option<UnixMillis>,
    /// When the call ended.
    pub end_at: Option<UnixMillis>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it ended.
    pub ending: Ending,
    /// Codec on the WhatsApp leg (e.g. `opus/48000/2`).
    pub wa_codec: Option<String>,
    /// Codec on the PBX leg (e.g. `PCMU/8000`).
    pub pbx_codec: Option<String>,
    /// Media from WhatsApp toward the PBX.
    pub media_wa_to_pbx: Option<MediaQuality>,
    /// Media from the PBX toward WhatsApp.
    pub media_pbx_to_wa: Option<MediaQuality>,
    /// DTMF digits carried, both directions.
    pub dtmf_digits: u32,
    /// Business-initiated calls: billable 6-second pulses (partial pulses rounded up).
    pub billable_pulses: Option<u32>,
    /// Business-initiated calls: estimated price from the configured rate card.
    pub estimated_cost: Option<Cost>,
}

impl CallRecord {
    /// A fresh record for a call attempt that has just been offered.
    pub fn new(
        wa_call_id: impl Into<String>,
        direction: Direction,
        business_number: impl Into<String>,
        customer_number: impl Into<String>,
        offer_at: UnixMillis,
    ) -> Self {
        Self {
            wa_call_id: wa_call_id.into(),
            direction,
            business_number: business_number.into(),
            customer_number: customer_number.into(),
            customer_name: None,
            pbx_call_id: None,
            wa_sip_call_id: None,
            dialplan_rule: None,
            pbx_target: None,
            offer_at,
            ring_at: None,
            answer_at: None,
            end_at: None,
            outcome: Outcome::Failed,
            ending: Ending::default(),
            wa_codec: None,
            pbx_codec: None,
            media_wa_to_pbx: None,
            media_pbx_to_wa: None,
            dtmf_digits: 0,
            billable_pulses: None,
            estimated_cost: None,
        }
    }

    /// Talk time: from answer to end, zero if the call was never answered or has not ended.
    pub fn talk_time(&self) -> Duration {
        match (self.answer_at, self.end_at) {
            (Some(a), Some(e)) => e.since(a),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("bogus"), None);
    }

    #[test]
    fn unix_millis_from_system_time_and_since() {
        let t = UNIX_EPOCH + Duration::from_millis(1_760_681_506_762);
        let m = UnixMillis::from_system_time(t);
        assert_eq!(m, UnixMillis(1_760_681_506_762));
        assert_eq!(
            UnixMillis(10_500).since(UnixMillis(500)),
            Duration::from_secs(10)
        );
        assert_eq!(UnixMillis(0).since(UnixMillis(500)), Duration::ZERO);
    }

    #[test]
    fn cost_prints_six_decimals() {
        let c = Cost {
            currency: "USD".into(),
            micros: 12_345,
        };
        assert_eq!(c.to_decimal_string(), "0.012345");
        let c = Cost {
            currency: "USD".into(),
            micros: 3_000_001,
        };
        assert_eq!(c.to_decimal_string(), "3.000001");
    }
}
