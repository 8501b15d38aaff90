//! Per-call milestones published on the gateway's broadcast channel.

use std::fmt;
use std::time::Duration;

/// What happened to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MilestoneKind {
    /// The `connect` webhook with Meta's offer arrived.
    OfferReceived,
    /// The dial plan chose a rule and target.
    Routed {
        /// Rule name.
        rule: String,
        /// Request-URI of the first attempt.
        target: String,
    },
    /// The dial plan refused the call (`reject` follows).
    Refused {
        /// Why.
        reason: String,
    },
    /// Meta accepted our `pre_accept`.
    PreAccepted,
    /// An INVITE went to the PBX.
    InviteSent {
        /// Attempt number (0 = primary target).
        attempt: usize,
        /// Request-URI.
        uri: String,
    },
    /// A provisional response (180, 183) from the PBX.
    Provisional {
        /// The status.
        status: u16,
    },
    /// The PBX answered (200 OK, ACK sent).
    Answered {
        /// The PBX leg's codec.
        codec: String,
    },
    /// A final failure from the PBX for an attempt.
    PbxFailed {
        /// Attempt number.
        attempt: usize,
        /// The status (408 for a timeout, 503 for a transport error).
        status: u16,
    },
    /// Meta accepted our `accept`; the media gate is open.
    Accepted,
    /// ICE and DTLS with Meta are up.
    MediaConnected,
    /// A DTMF digit crossed the gateway.
    Dtmf {
        /// The digit.
        digit: char,
        /// `true` when it came from WhatsApp (going to the PBX).
        from_whatsapp: bool,
    },
    /// The PBX put the call on hold or resumed it (re-INVITE/UPDATE, absorbed).
    HoldChanged {
        /// `true` on hold.
        on_hold: bool,
    },
    /// A Graph action failed.
    GraphFailed {
        /// The action (`pre_accept`, `accept`, …).
        action: &'static str,
    },
    /// The call is over and both legs are released.
    Ended {
        /// Why, in a few words (`whatsapp hangup`, `pbx hangup`, `pbx rejected 486`, …).
        reason: String,
        /// Time since the media gate opened, if the call was answered.
        talk_time: Option<Duration>,
    },
}

/// One milestone of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMilestone {
    /// Meta's call id.
    pub wa_call_id: String,
    /// The PBX leg's SIP Call-ID of the current attempt, once an INVITE was sent.
    pub sip_call_id: Option<String>,
    /// What happened.
    pub kind: MilestoneKind,
}

impl CallMilestone {
    /// A short human description (`INVITE sent to sip:2000@pbx`).
    pub fn description(&self) -> String {
        self.kind.to_string()
    }
}

impl fmt::Display for MilestoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OfferReceived => write!(f, "offer received"),
            Self::Routed { rule, target } => write!(f, "routed by rule `{rule}` to {target}"),
            Self::Refused { reason } => write!(f, "refused by the dial plan: {reason}"),
            Self::PreAccepted => write!(f, "pre_accept ok"),
            Self::InviteSent { attempt, uri } => {
                write!(f, "INVITE sent to {uri} (attempt {attempt})")
            }
            Self::Provisional { status } => write!(f, "{status} from the PBX"),
            Self::Answered { codec } => write!(f, "200 OK from the PBX, ACK sent ({codec})"),
            Self::PbxFailed { attempt, status } => {
                write!(f, "{status} from the PBX (attempt {attempt})")
            }
            Self::Accepted => write!(f, "accept ok, media gate open"),
            Self::MediaConnected => write!(f, "media connected (ICE + DTLS up)"),
            Self::Dtmf {
                digit,
                from_whatsapp: true,
            } => write!(f, "DTMF {digit} from WhatsApp to the PBX"),
            Self::Dtmf {
                digit,
                from_whatsapp: false,
            } => write!(f, "DTMF {digit} from the PBX to WhatsApp"),
            Self::HoldChanged { on_hold: true } => write!(f, "PBX put the call on hold"),
            Self::HoldChanged { on_hold: false } => write!(f, "PBX resumed the call"),
            Self::GraphFailed { action } => write!(f, "graph {action} failed"),
            Self::Ended {
                reason,
                talk_time: Some(t),
            } => {
                write!(f, "ended: {reason} after {:.1} s", t.as_secs_f64())
            }
            Self::Ended {
                reason,
                talk_time: None,
            } => write!(f, "ended: {reason}"),
        }
    }
}

impl fmt::Display for CallMilestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}", self.wa_call_id)?;
        if let Some(c) = &self.sip_call_id {
            write!(f, " / {c}")?;
        }
        write!(f, "] {}", self.kind)
    }
}
