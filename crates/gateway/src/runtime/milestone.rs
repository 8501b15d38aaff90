//! Per-call milestones published on the gateway's broadcast channel.
//!
//! Each milestone carries the wall-clock time it was emitted at ([`CallMilestone::at_unix_us`]),
//! and the JSON log line `call milestone` has it as `at_us`: the load harness
//! (`examples/bench_load.rs`) computes the gateway's own setup latency from these, e.g.
//! [`MilestoneKind::OfferReceived`] → [`MilestoneKind::InviteSent`] (less the `pre_accept`
//! round trip, [`MilestoneKind::PreAcceptSent`] → [`MilestoneKind::PreAccepted`]) and
//! [`MilestoneKind::Answered`] → [`MilestoneKind::AcceptSent`]; for business-initiated calls
//! [`MilestoneKind::PbxInvite`] → [`MilestoneKind::ConnectSent`] and
//! [`MilestoneKind::UserAccepted`] → [`MilestoneKind::Accepted`] (the 200 OK to the PBX).

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
    /// Business-initiated: the PBX's INVITE for this WhatsApp user reached the gateway
    /// (stamped when the dispatcher took it, before the trunk checks and the dial plan).
    PbxInvite {
        /// The WhatsApp user the dial plan chose.
        customer: String,
    },
    /// Business-initiated: our `connect` request (with the WebRTC offer) is on its way.
    ConnectSent,
    /// Business-initiated: Meta's `ACCEPTED` status (the user picked up) reached the call.
    UserAccepted,
    /// Our `pre_accept` request is on its way to Meta.
    PreAcceptSent,
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
    /// Our `accept` request is on its way to Meta (the PBX answered).
    AcceptSent,
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
    /// When it was emitted: wall clock, microseconds since the Unix epoch.
    pub at_unix_us: i64,
}

impl CallMilestone {
    /// A milestone stamped now.
    pub fn new(wa_call_id: &str, sip_call_id: Option<String>, kind: MilestoneKind) -> Self {
        let at_unix_us = Self::now_unix_us();
        Self {
            wa_call_id: wa_call_id.to_owned(),
            sip_call_id,
            kind,
            at_unix_us,
        }
    }

    /// The wall clock now, in microseconds since the Unix epoch (the stamp of a milestone).
    pub fn now_unix_us() -> i64 {
        super::clock::SystemClock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

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
            Self::PbxInvite { customer } => write!(f, "INVITE from the PBX for {customer}"),
            Self::ConnectSent => write!(f, "connect sent"),
            Self::UserAccepted => write!(f, "ACCEPTED from Meta (the user picked up)"),
            Self::PreAcceptSent => write!(f, "pre_accept sent"),
            Self::PreAccepted => write!(f, "pre_accept ok"),
            Self::InviteSent { attempt, uri } => {
                write!(f, "INVITE sent to {uri} (attempt {attempt})")
            }
            Self::Provisional { status } => write!(f, "{status} from the PBX"),
            Self::Answered { codec } => write!(f, "200 OK from the PBX, ACK sent ({codec})"),
            Self::PbxFailed { attempt, status } => {
                write!(f, "{status} from the PBX (attempt {attempt})")
            }
            Self::AcceptSent => write!(f, "accept sent"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_milestone_is_stamped_with_the_wall_clock() {
        let before = super::super::clock::SystemClock::timestamp().as_microsecond();
        let m = CallMilestone::new("wacid.1", None, MilestoneKind::AcceptSent);
        let after = super::super::clock::SystemClock::timestamp().as_microsecond();
        assert!(before <= m.at_unix_us && m.at_unix_us <= after, "{m:?}");
        assert_eq!(m.to_string(), "[wacid.1] accept sent");
    }

    #[test]
    fn outbound_setup_milestones_read_as_the_load_harness_parses_them() {
        // examples/bench_load/report.rs matches these texts in the JSON log
        let invite = MilestoneKind::PbxInvite {
            customer: "+4917200000001".into(),
        };
        assert_eq!(invite.to_string(), "INVITE from the PBX for +4917200000001");
        assert_eq!(MilestoneKind::ConnectSent.to_string(), "connect sent");
        assert!(
            MilestoneKind::UserAccepted
                .to_string()
                .starts_with("ACCEPTED from Meta")
        );
        assert!(MilestoneKind::Accepted.to_string().starts_with("accept ok"));
    }
}
