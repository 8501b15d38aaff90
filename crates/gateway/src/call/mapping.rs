//! The two mapping functions (STYLE.md §5: one maps call failures to SIP status codes, one
//! to Meta actions; call sites never invent codes). `docs/call-flows.md` copies these tables.

use std::time::Duration;

use crate::dialplan::{FailureCause, InboundRoute, RejectReason};
use crate::types::SipStatus;

/// How the PBX ended an attempt, for the inbound decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbxFailureClass {
    /// 486 Busy Here: the dial plan's `busy` fallback, else `reject`.
    Busy,
    /// 600 Busy Everywhere, 603 Decline, 604, 606: a global "no", always `reject`.
    Declined,
    /// 408, 480 and the gateway's ring timeout: the `no_answer` fallback, else `reject`.
    NoAnswer,
    /// 404, other 3xx–4xx, 5xx, transport errors: the `failure` fallback, else `reject`.
    Failure,
}

/// Classifies a PBX final (non-2xx) status.
pub fn classify_pbx_failure(status: SipStatus) -> PbxFailureClass {
    match status.code() {
        486 => PbxFailureClass::Busy,
        600 | 603 | 604 | 606 => PbxFailureClass::Declined,
        408 | 480 => PbxFailureClass::NoAnswer,
        _ => PbxFailureClass::Failure,
    }
}

/// What the inbound call does after a PBX attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbxFailureAction {
    /// Ring the next target of the chain (attempt number).
    Fallback {
        /// The attempt to start.
        attempt: usize,
        /// Why the previous one failed.
        cause: FailureCause,
    },
    /// Send Meta `reject` (the call was never accepted).
    Reject,
}

/// The inbound mapping: PBX final status (or `None` for the ring timeout) of `attempt`
/// → Meta action. Issue 5: 486/600/603 → `reject` (486 takes a `busy` fallback when the
/// rule has one); 404/480/408/5xx/ring timeout → the fallback chain or `reject`.
pub fn pbx_failure_action(
    status: Option<SipStatus>,
    route: &InboundRoute,
    attempt: usize,
) -> PbxFailureAction {
    let class = status.map_or(PbxFailureClass::NoAnswer, classify_pbx_failure);
    let cause = match class {
        PbxFailureClass::Declined => return PbxFailureAction::Reject,
        PbxFailureClass::Busy => FailureCause::Busy,
        PbxFailureClass::NoAnswer => FailureCause::NoAnswer,
        PbxFailureClass::Failure => FailureCause::Failure,
    };
    match route.next_attempt(attempt, cause) {
        Some(next) => PbxFailureAction::Fallback {
            attempt: next,
            cause,
        },
        None => PbxFailureAction::Reject,
    }
}

/// Why a business-initiated call did not connect.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundFailure {
    /// Graph `POST /calls` `connect` failed: Meta's error `code` (if the body had one) and the HTTP status.
    Graph {
        /// `error.code`, e.g. 138006.
        code: Option<u32>,
        /// HTTP status of the reply (0 when no reply: timeout, connection error).
        http_status: u16,
    },
    /// The user declined (`REJECTED` status).
    Rejected,
    /// The user did not answer within the ring timeout, or Meta ended the call unanswered.
    NoAnswer,
    /// A `terminate` webhook with an error code arrived before the user answered.
    Terminated {
        /// `errors[0].code`.
        code: u32,
    },
    /// Local check: the business number may not place business-initiated calls (§7.2).
    CountryBlocked,
    /// Local check: the permission cache says the user has not granted permission.
    NoPermission,
    /// Local check: too many consecutive unanswered or rejected calls to this user.
    ConsentGuard {
        /// The count that tripped the guard.
        consecutive_unanswered: u32,
    },
    /// Local check: the per-user daily cap of connected calls is reached.
    DailyCap {
        /// Connected calls in the last 24 h.
        connected_today: u32,
    },
    /// The WhatsApp-leg media could not be set up (offer not built, ICE/DTLS failed).
    MediaFailed,
    /// The dial plan refused the INVITE (before anything went to Meta).
    DialPlan(RejectReason),
}

/// The SIP response for the PBX, with its `Reason` (RFC 3326) and `Warning` (RFC 3261
/// §20.43, code 399) header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipReply {
    /// Status code.
    pub status: SipStatus,
    /// `Reason` header value, e.g. `Q.850;cause=21;text="Call rejected"`.
    pub reason: String,
    /// `Warning` header value, e.g. `399 whatsip "WhatsApp 138006: no call permission"`.
    pub warning: Option<String>,
    /// `Retry-After`, for limits that lift by themselves.
    pub retry_after: Option<Duration>,
}

/// The outbound mapping: every way a business-initiated call fails → the SIP reply.
/// `rejected_status` is `[outbound].rejected_status` (603 or 486).
pub fn outbound_failure_reply(failure: &OutboundFailure, rejected_status: SipStatus) -> SipReply {
    use OutboundFailure as F;
    let (code, q850, text, warning, retry_after): (u16, u16, &str, Option<String>, Option<u64>) =
        match failure {
            F::Graph {
                code: Some(c),
                http_status,
            } => {
                let (status, q850, text, retry) = meta_error(*c, *http_status);
                (
                    status,
                    q850,
                    text,
                    Some(format!("WhatsApp {c}: {text}")),
                    retry,
                )
            }
            F::Graph {
                code: None,
                http_status: 0,
            } => (
                503,
                38,
                "Meta Graph API unreachable",
                Some("Graph API request failed".to_owned()),
                Some(30),
            ),
            F::Graph {
                code: None,
                http_status,
            } => (
                502,
                38,
                "Meta Graph API error",
                Some(format!("Graph API HTTP {http_status}")),
                None,
            ),
            F::Rejected => (
                rejected_status.code(),
                21,
                "Call rejected",
                Some("WhatsApp user declined".to_owned()),
                None,
            ),
            F::NoAnswer => (
                480,
                19,
                "No answer",
                Some("WhatsApp user did not answer".to_owned()),
                None,
            ),
            F::Terminated { code } => {
                let (status, q850, text, _) = meta_error(*code, 400);
                (
                    status,
                    q850,
                    text,
                    Some(format!("WhatsApp {code}: {text}")),
                    None,
                )
            }
            F::CountryBlocked => (
                403,
                57,
                "Business-initiated calls not allowed from this number",
                Some("business-initiated calling is disabled for this business number".to_owned()),
                None,
            ),
            F::NoPermission => (
                403,
                21,
                "No WhatsApp call permission",
                Some("user has not granted call permission".to_owned()),
                None,
            ),
            F::ConsentGuard {
                consecutive_unanswered,
            } => (
                403,
                21,
                "Consent guard",
                Some(format!(
                    "{consecutive_unanswered} consecutive unanswered calls to this user; refusing to risk permission revocation"
                )),
                None,
            ),
            F::DailyCap { connected_today } => (
                403,
                21,
                "Daily call cap",
                Some(format!(
                    "{connected_today} connected calls to this user in 24 h"
                )),
                Some(3600),
            ),
            F::MediaFailed => (
                500,
                41,
                "Media setup failed",
                Some("WhatsApp media could not be set up".to_owned()),
                None,
            ),
            F::DialPlan(reason) => match reason {
                RejectReason::NoMatch => (
                    404,
                    1,
                    "No route",
                    Some("no dial plan rule matches".to_owned()),
                    None,
                ),
                RejectReason::ClosedHours => (
                    480,
                    21,
                    "Closed",
                    Some("outside the rule's schedule".to_owned()),
                    None,
                ),
                RejectReason::InvalidWhatsAppUser(n) => (
                    484,
                    28,
                    "Invalid number format",
                    Some(format!("`{n}` is not an E.164 number")),
                    None,
                ),
                RejectReason::NoBusinessNumber => (
                    403,
                    21,
                    "No business number",
                    Some("no business number to call from".to_owned()),
                    None,
                ),
                RejectReason::Rule => (
                    403,
                    21,
                    "Rejected by dial plan",
                    Some("rejected by a dial plan rule".to_owned()),
                    None,
                ),
            },
        };
    SipReply {
        status: SipStatus::new(code).unwrap_or(SipStatus::from_const(500)),
        reason: format!("Q.850;cause={q850};text=\"{text}\""),
        warning: warning.map(|w| format!("399 whatsip \"{}\"", w.replace(['"', '\\'], "'"))),
        retry_after: retry_after.map(Duration::from_secs),
    }
}

/// Whether a failure means "no permission", where the gateway may send
/// `call_permission_request` (when the route allows it and Meta's limits do).
pub fn is_permission_missing(failure: &OutboundFailure) -> bool {
    matches!(
        failure,
        OutboundFailure::NoPermission
            | OutboundFailure::Graph {
                code: Some(138_006),
                ..
            }
    )
}

/// Meta error code → (SIP status, Q.850 cause, text, Retry-After seconds). Calling API notes §8.
fn meta_error(code: u32, http_status: u16) -> (u16, u16, &'static str, Option<u64>) {
    match code {
        138_006 => (403, 21, "no call permission", None),
        138_002 => (503, 34, "concurrent call limit reached", Some(10)),
        138_005 => (503, 34, "call rate limit reached", Some(60)),
        138_003 => (486, 17, "a call with this user is already ongoing", None),
        138_013 => (
            403,
            57,
            "business-initiated calling not available for this number",
            None,
        ),
        138_012 => (
            403,
            21,
            "daily connected-call limit with this user reached",
            Some(3600),
        ),
        138_001 => (404, 1, "user cannot be called on WhatsApp", None),
        138_000 => (403, 57, "calling not enabled on the business number", None),
        138_014 => (503, 63, "calling temporarily disabled (quality)", None),
        131_030 => (403, 21, "user not in the test number's allowed list", None),
        138_004 => (502, 38, "Meta error while connecting", None),
        138_007 => (504, 102, "connect timeout (SDP not applied in time)", None),
        138_019 => (480, 41, "user's client failed to set up the call", None),
        138_020 => (480, 41, "user's client could not reach the relay", None),
        138_021..=138_023 => (480, 41, "no media", None),
        100 => (
            488,
            79,
            "request refused by Meta (invalid parameter or SDP)",
            None,
        ),
        613 => (503, 34, "Meta API rate limit", Some(1)),
        _ if http_status == 401 || http_status == 403 => {
            (503, 38, "Meta refused the request (credentials?)", None)
        }
        _ if http_status == 429 => (503, 34, "Meta rate limit", Some(10)),
        _ => (502, 38, "Meta error", None),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dialplan::{Fallback, PbxTarget};

    fn s(code: u16) -> SipStatus {
        SipStatus::new(code).unwrap()
    }

    fn target(uri: &str) -> PbxTarget {
        PbxTarget {
            uri: uri.into(),
            headers: vec![],
            ring_timeout: Duration::from_secs(20),
        }
    }

    fn route(fallbacks: Vec<(Vec<FailureCause>, &str)>) -> InboundRoute {
        InboundRoute {
            rule: "r".into(),
            closed_hours: false,
            primary: target("sip:a@pbx"),
            fallbacks: fallbacks
                .into_iter()
                .map(|(on, t)| Fallback {
                    on,
                    target: target(t),
                })
                .collect(),
        }
    }

    #[test]
    fn pbx_busy_decline_without_fallback_rejects() {
        let r = route(vec![]);
        for code in [486, 600, 603, 404, 480, 408, 500, 503] {
            assert_eq!(
                pbx_failure_action(Some(s(code)), &r, 0),
                PbxFailureAction::Reject,
                "{code}"
            );
        }
        assert_eq!(pbx_failure_action(None, &r, 0), PbxFailureAction::Reject);
    }

    #[test]
    fn pbx_decline_never_takes_a_fallback() {
        let r = route(vec![(
            vec![
                FailureCause::Busy,
                FailureCause::NoAnswer,
                FailureCause::Failure,
            ],
            "sip:b@pbx",
        )]);
        for code in [600, 603, 604, 606] {
            assert_eq!(
                pbx_failure_action(Some(s(code)), &r, 0),
                PbxFailureAction::Reject,
                "{code}"
            );
        }
    }

    #[test]
    fn pbx_failures_take_the_fallback_listing_their_cause() {
        let r = route(vec![
            (vec![FailureCause::Busy], "sip:busy@pbx"),
            (vec![FailureCause::NoAnswer], "sip:noanswer@pbx"),
            (vec![FailureCause::Failure], "sip:failure@pbx"),
        ]);
        let fb = |attempt, cause| PbxFailureAction::Fallback { attempt, cause };
        assert_eq!(
            pbx_failure_action(Some(s(486)), &r, 0),
            fb(1, FailureCause::Busy)
        );
        assert_eq!(
            pbx_failure_action(Some(s(480)), &r, 0),
            fb(2, FailureCause::NoAnswer)
        );
        assert_eq!(
            pbx_failure_action(Some(s(408)), &r, 0),
            fb(2, FailureCause::NoAnswer)
        );
        assert_eq!(
            pbx_failure_action(None, &r, 0),
            fb(2, FailureCause::NoAnswer)
        );
        assert_eq!(
            pbx_failure_action(Some(s(404)), &r, 0),
            fb(3, FailureCause::Failure)
        );
        assert_eq!(
            pbx_failure_action(Some(s(503)), &r, 0),
            fb(3, FailureCause::Failure)
        );
        // the chain only moves forward: after attempt 2, a busy has nowhere to go
        assert_eq!(
            pbx_failure_action(Some(s(486)), &r, 2),
            PbxFailureAction::Reject
        );
        assert_eq!(
            pbx_failure_action(Some(s(500)), &r, 2),
            fb(3, FailureCause::Failure)
        );
        assert_eq!(
            pbx_failure_action(Some(s(500)), &r, 3),
            PbxFailureAction::Reject
        );
    }

    #[test]
    fn outbound_meta_errors_map_to_documented_sip_replies() {
        let table: [(u32, u16, u16); 8] = [
            (138_006, 401, 403),
            (138_002, 429, 503),
            (138_005, 429, 503),
            (138_003, 400, 486),
            (138_013, 400, 403),
            (138_012, 400, 403),
            (138_001, 400, 404),
            (138_007, 500, 504),
        ];
        for (code, http, sip) in table {
            let r = outbound_failure_reply(
                &OutboundFailure::Graph {
                    code: Some(code),
                    http_status: http,
                },
                s(603),
            );
            assert_eq!(r.status.code(), sip, "{code}");
            let w = r.warning.unwrap();
            assert!(w.starts_with("399 whatsip \"WhatsApp "), "{w}");
            assert!(w.contains(&code.to_string()), "{w}");
        }
        let r = outbound_failure_reply(
            &OutboundFailure::Graph {
                code: Some(138_002),
                http_status: 429,
            },
            s(603),
        );
        assert_eq!(r.retry_after, Some(Duration::from_secs(10)));
        assert_eq!(
            r.reason,
            "Q.850;cause=34;text=\"concurrent call limit reached\""
        );
    }

    #[test]
    fn outbound_rejected_uses_configured_status_and_no_answer_is_480() {
        assert_eq!(
            outbound_failure_reply(&OutboundFailure::Rejected, s(603))
                .status
                .code(),
            603
        );
        assert_eq!(
            outbound_failure_reply(&OutboundFailure::Rejected, s(486))
                .status
                .code(),
            486
        );
        let r = outbound_failure_reply(&OutboundFailure::NoAnswer, s(603));
        assert_eq!(r.status.code(), 480);
        assert_eq!(r.reason, "Q.850;cause=19;text=\"No answer\"");
    }

    #[test]
    fn outbound_local_refusals_are_403_with_a_warning() {
        for f in [
            OutboundFailure::NoPermission,
            OutboundFailure::CountryBlocked,
            OutboundFailure::ConsentGuard {
                consecutive_unanswered: 2,
            },
            OutboundFailure::DailyCap {
                connected_today: 100,
            },
        ] {
            let r = outbound_failure_reply(&f, s(603));
            assert_eq!(r.status.code(), 403, "{f:?}");
            assert!(r.warning.is_some(), "{f:?}");
        }
    }

    #[test]
    fn outbound_graph_transport_and_unknown_errors_are_5xx() {
        assert_eq!(
            outbound_failure_reply(
                &OutboundFailure::Graph {
                    code: None,
                    http_status: 0
                },
                s(603)
            )
            .status
            .code(),
            503
        );
        assert_eq!(
            outbound_failure_reply(
                &OutboundFailure::Graph {
                    code: None,
                    http_status: 500
                },
                s(603)
            )
            .status
            .code(),
            502
        );
        assert_eq!(
            outbound_failure_reply(
                &OutboundFailure::Graph {
                    code: Some(190),
                    http_status: 401
                },
                s(603)
            )
            .status
            .code(),
            503
        );
        assert_eq!(
            outbound_failure_reply(
                &OutboundFailure::Graph {
                    code: Some(999_999),
                    http_status: 400
                },
                s(603)
            )
            .status
            .code(),
            502
        );
    }

    #[test]
    fn outbound_dial_plan_refusals_map_to_routing_statuses() {
        let code = |r| {
            outbound_failure_reply(&OutboundFailure::DialPlan(r), s(603))
                .status
                .code()
        };
        assert_eq!(code(RejectReason::NoMatch), 404);
        assert_eq!(code(RejectReason::ClosedHours), 480);
        assert_eq!(code(RejectReason::InvalidWhatsAppUser("123".into())), 484);
        assert_eq!(code(RejectReason::NoBusinessNumber), 403);
        assert_eq!(code(RejectReason::Rule), 403);
    }

    #[test]
    fn permission_missing_is_138006_or_local_cache() {
        assert!(is_permission_missing(&OutboundFailure::Graph {
            code: Some(138_006),
            http_status: 401
        }));
        assert!(is_permission_missing(&OutboundFailure::NoPermission));
        assert!(!is_permission_missing(&OutboundFailure::Graph {
            code: Some(138_003),
            http_status: 400
        }));
    }
}
