//! Deterministic tests of both call cores, named after the rule they check. Time is a
//! hand-set `Instant` base plus offsets; nothing sleeps.

use std::time::{Duration, Instant};

use super::*;
use crate::dialplan::{FailureCause, Fallback, InboundRoute, OutboundRoute, PbxTarget};
use crate::types::{E164, SipStatus, WaCallId};

/// An arbitrary base instant; the tests only use offsets from it.
#[allow(clippy::disallowed_methods)]
fn base() -> Instant {
    Instant::now()
}

fn s(code: u16) -> SipStatus {
    SipStatus::new(code).unwrap()
}

fn target(uri: &str, ring_s: u64) -> PbxTarget {
    PbxTarget {
        uri: uri.into(),
        headers: vec![],
        ring_timeout: Duration::from_secs(ring_s),
    }
}

fn route(fallbacks: Vec<(Vec<FailureCause>, &str)>) -> InboundRoute {
    InboundRoute {
        rule: "r".into(),
        closed_hours: false,
        primary: target("sip:agent@pbx", 20),
        fallbacks: fallbacks
            .into_iter()
            .map(|(on, t)| Fallback {
                on,
                target: target(t, 10),
            })
            .collect(),
    }
}

fn drain_in(c: &mut InboundCall) -> Vec<InboundAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn drain_out(c: &mut OutboundCall) -> Vec<OutboundAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

use GraphAction as G;
use InboundAction as A;
use InboundInput as I;

/// An inbound call brought to `Ringing` on attempt 0 at `t0`.
fn ringing(r: InboundRoute, t0: Instant) -> InboundCall {
    let mut c = InboundCall::new(r);
    c.handle(I::WaOffer, t0);
    assert_eq!(drain_in(&mut c), vec![A::StartMedia]);
    c.handle(I::MediaReady, t0);
    assert_eq!(drain_in(&mut c), vec![A::SendGraph(G::PreAccept)]);
    c.handle(
        I::GraphResult {
            action: G::PreAccept,
            ok: true,
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendInvite {
            attempt: 0,
            target: target("sip:agent@pbx", 20)
        }]
    );
    c
}

fn active(t0: Instant) -> InboundCall {
    let mut c = ringing(route(vec![]), t0);
    c.handle(I::PbxAnswered { attempt: 0 }, t0);
    c.handle(
        I::GraphResult {
            action: G::Accept,
            ok: true,
        },
        t0,
    );
    drain_in(&mut c);
    c
}

#[test]
fn inbound_answer_pre_accepts_before_invite_and_opens_media_only_after_accept() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(
        I::PbxProvisional {
            attempt: 0,
            status: s(180),
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![],
        "WhatsApp has no provisional response to send"
    );
    c.handle(I::PbxAnswered { attempt: 0 }, t0 + Duration::from_secs(3));
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Accept)],
        "no media before accept succeeds"
    );
    c.handle(
        I::GraphResult {
            action: G::Accept,
            ok: true,
        },
        t0 + Duration::from_secs(3),
    );
    assert_eq!(drain_in(&mut c), vec![A::OpenMediaGate]);
    assert!(c.is_answered());
    assert_eq!(c.poll_timeout(), None, "no ring timer once answered");
}

#[test]
fn inbound_busy_486_without_fallback_rejects() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(
        I::PbxFailed {
            attempt: 0,
            status: s(486),
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Reject), A::StopMedia]
    );
    c.handle(
        I::GraphResult {
            action: G::Reject,
            ok: true,
        },
        t0,
    );
    assert!(c.is_terminated());
    assert_eq!(c.end(), Some(&InboundEnd::PbxRejected(s(486))));
}

#[test]
fn inbound_busy_486_takes_busy_fallback() {
    let t0 = base();
    let mut c = ringing(
        route(vec![(vec![FailureCause::Busy], "sip:overflow@pbx")]),
        t0,
    );
    c.handle(
        I::PbxFailed {
            attempt: 0,
            status: s(486),
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![
            A::TryFallback {
                attempt: 1,
                cause: FailureCause::Busy
            },
            A::SendInvite {
                attempt: 1,
                target: target("sip:overflow@pbx", 10)
            }
        ]
    );
    assert_eq!(c.current_attempt(), Some(1));
}

#[test]
fn inbound_603_decline_rejects_even_with_fallback() {
    let t0 = base();
    let mut c = ringing(
        route(vec![(
            vec![FailureCause::Busy, FailureCause::Failure],
            "sip:x@pbx",
        )]),
        t0,
    );
    c.handle(
        I::PbxFailed {
            attempt: 0,
            status: s(603),
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Reject), A::StopMedia]
    );
}

#[test]
fn inbound_ring_timeout_fires_at_deadline_cancels_and_tries_no_answer_fallback() {
    let t0 = base();
    let mut c = ringing(
        route(vec![(vec![FailureCause::NoAnswer], "sip:overflow@pbx")]),
        t0,
    );
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(20)));
    c.handle_timeout(t0 + Duration::from_millis(19_999));
    assert_eq!(drain_in(&mut c), vec![], "not before the deadline");
    c.handle(I::RingTimeout, t0 + Duration::from_secs(5));
    assert_eq!(
        drain_in(&mut c),
        vec![],
        "a stale RingTimeout input is ignored"
    );
    c.handle_timeout(t0 + Duration::from_secs(20));
    assert_eq!(
        drain_in(&mut c),
        vec![
            A::SendCancel { attempt: 0 },
            A::TryFallback {
                attempt: 1,
                cause: FailureCause::NoAnswer
            },
            A::SendInvite {
                attempt: 1,
                target: target("sip:overflow@pbx", 10)
            }
        ]
    );
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + Duration::from_secs(30)),
        "fallback's own ring timeout"
    );
    c.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(
        drain_in(&mut c),
        vec![
            A::SendCancel { attempt: 1 },
            A::SendGraph(G::Reject),
            A::StopMedia
        ]
    );
    c.handle(
        I::GraphResult {
            action: G::Reject,
            ok: true,
        },
        t0 + Duration::from_secs(30),
    );
    assert_eq!(c.end(), Some(&InboundEnd::NoAnswer));
}

#[test]
fn inbound_failure_404_480_5xx_take_the_chain_in_order() {
    let t0 = base();
    let r = route(vec![
        (vec![FailureCause::NoAnswer], "sip:b@pbx"),
        (vec![FailureCause::Failure], "sip:c@pbx"),
    ]);
    let mut c = ringing(r, t0);
    c.handle(
        I::PbxFailed {
            attempt: 0,
            status: s(480),
        },
        t0,
    );
    assert!(drain_in(&mut c).contains(&A::SendInvite {
        attempt: 1,
        target: target("sip:b@pbx", 10)
    }));
    c.handle(
        I::PbxFailed {
            attempt: 1,
            status: s(503),
        },
        t0,
    );
    assert!(drain_in(&mut c).contains(&A::SendInvite {
        attempt: 2,
        target: target("sip:c@pbx", 10)
    }));
    c.handle(
        I::PbxFailed {
            attempt: 2,
            status: s(404),
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Reject), A::StopMedia]
    );
}

#[test]
fn inbound_wa_terminate_before_answer_cancels_pbx() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(I::WaTerminated, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendCancel { attempt: 0 }, A::StopMedia]
    );
    assert_eq!(c.end(), Some(&InboundEnd::WaHangup));
}

#[test]
fn inbound_200_crossing_cancel_gets_bye() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(I::WaTerminated, t0);
    drain_in(&mut c);
    c.handle(I::PbxAnswered { attempt: 0 }, t0);
    assert_eq!(drain_in(&mut c), vec![A::SendBye { attempt: 0 }]);
}

#[test]
fn inbound_200_for_cancelled_attempt_gets_bye_while_fallback_rings() {
    let t0 = base();
    let mut c = ringing(route(vec![(vec![FailureCause::NoAnswer], "sip:b@pbx")]), t0);
    c.handle_timeout(t0 + Duration::from_secs(20));
    drain_in(&mut c);
    c.handle(I::PbxAnswered { attempt: 0 }, t0 + Duration::from_secs(20));
    assert_eq!(drain_in(&mut c), vec![A::SendBye { attempt: 0 }]);
    assert_eq!(c.current_attempt(), Some(1), "the fallback keeps ringing");
    c.handle(
        I::PbxProvisional {
            attempt: 0,
            status: s(180),
        },
        t0,
    );
    c.handle(
        I::PbxFailed {
            attempt: 0,
            status: s(487),
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![],
        "late responses of attempt 0 change nothing"
    );
    assert_eq!(c.current_attempt(), Some(1));
}

#[test]
fn inbound_200_retransmission_is_not_a_stray() {
    let t0 = base();
    let mut c = active(t0);
    c.handle(I::PbxAnswered { attempt: 0 }, t0);
    assert_eq!(drain_in(&mut c), vec![]);
}

#[test]
fn inbound_pbx_bye_after_answer_terminates_on_meta() {
    let t0 = base();
    let mut c = active(t0);
    c.handle(I::PbxBye, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Terminate), A::StopMedia]
    );
    assert!(!c.is_terminated(), "waits for Meta's reply");
    c.handle(
        I::GraphResult {
            action: G::Terminate,
            ok: false,
        },
        t0,
    );
    assert_eq!(
        c.end(),
        Some(&InboundEnd::PbxHangup),
        "ends even if terminate failed"
    );
}

#[test]
fn inbound_wa_terminate_after_answer_byes_pbx() {
    let t0 = base();
    let mut c = active(t0);
    c.handle(I::WaTerminated, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendBye { attempt: 0 }, A::StopMedia]
    );
    assert!(c.is_terminated());
}

#[test]
fn inbound_reinvite_is_absorbed_without_graph_action() {
    let t0 = base();
    let mut c = active(t0);
    c.handle(I::PbxReInvite, t0);
    c.handle(I::PbxReInvite, t0);
    assert_eq!(drain_in(&mut c), vec![A::AnswerReInvite, A::AnswerReInvite]);
    assert!(!c.is_terminated());
}

#[test]
fn inbound_terminate_before_connect_leaves_no_ghost_call() {
    let t0 = base();
    let mut c = InboundCall::new(route(vec![]));
    c.handle(I::WaTerminated, t0);
    assert!(c.is_terminated());
    c.handle(I::WaOffer, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![],
        "a late connect after terminate starts nothing"
    );
}

#[test]
fn inbound_duplicate_offer_is_ignored() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(I::WaOffer, t0);
    assert_eq!(drain_in(&mut c), vec![]);
    assert_eq!(c.current_attempt(), Some(0));
}

#[test]
fn inbound_pre_accept_failure_rejects_and_never_rings_pbx() {
    let t0 = base();
    let mut c = InboundCall::new(route(vec![]));
    c.handle(I::WaOffer, t0);
    c.handle(I::MediaReady, t0);
    drain_in(&mut c);
    c.handle(
        I::GraphResult {
            action: G::PreAccept,
            ok: false,
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Reject), A::StopMedia]
    );
}

#[test]
fn inbound_unusable_offer_rejects() {
    let t0 = base();
    let mut c = InboundCall::new(route(vec![]));
    c.handle(I::WaOffer, t0);
    drain_in(&mut c);
    c.handle(I::MediaFailed, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Reject), A::StopMedia]
    );
}

#[test]
fn inbound_accept_failure_byes_pbx_and_terminates() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(I::PbxAnswered { attempt: 0 }, t0);
    drain_in(&mut c);
    c.handle(
        I::GraphResult {
            action: G::Accept,
            ok: false,
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![
            A::SendBye { attempt: 0 },
            A::SendGraph(G::Terminate),
            A::StopMedia
        ]
    );
}

#[test]
fn inbound_pbx_bye_while_accept_in_flight_terminates_not_rejects() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(I::PbxAnswered { attempt: 0 }, t0);
    drain_in(&mut c);
    c.handle(I::PbxBye, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![A::SendGraph(G::Terminate), A::StopMedia]
    );
    c.handle(
        I::GraphResult {
            action: G::Accept,
            ok: true,
        },
        t0,
    );
    assert_eq!(
        drain_in(&mut c),
        vec![],
        "a late accept reply does not open media"
    );
}

#[test]
fn inbound_media_failure_while_ringing_cancels_and_rejects() {
    let t0 = base();
    let mut c = ringing(route(vec![]), t0);
    c.handle(I::MediaFailed, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![
            A::SendCancel { attempt: 0 },
            A::SendGraph(G::Reject),
            A::StopMedia
        ]
    );
}

#[test]
fn inbound_media_timeout_mid_call_byes_and_terminates() {
    let t0 = base();
    let mut c = active(t0);
    c.handle(I::MediaFailed, t0);
    assert_eq!(
        drain_in(&mut c),
        vec![
            A::SendBye { attempt: 0 },
            A::SendGraph(G::Terminate),
            A::StopMedia
        ]
    );
}

// --- outbound -----------------------------------------------------------------------------

use OutboundAction as OA;
use OutboundInput as OI;

fn out_route(auto: bool) -> OutboundRoute {
    OutboundRoute {
        rule: "r".into(),
        whatsapp_user: E164::parse("+441234567890").unwrap(),
        from_business: E164::parse("+4930901820").unwrap(),
        auto_permission_request: auto,
    }
}

fn settings(rejected: u16) -> OutboundSettings {
    OutboundSettings {
        ring_timeout: Duration::from_secs(45),
        rejected_status: s(rejected),
        early_ringback: true,
    }
}

fn wacid() -> WaCallId {
    WaCallId::new("wacid.ABGGFjFVU2AfAgo6V").unwrap()
}

/// An outbound call with `connect` sent at `t0`.
fn connecting(auto: bool, rejected: u16, t0: Instant) -> OutboundCall {
    let mut c = OutboundCall::new(out_route(auto), settings(rejected));
    c.handle(OI::PbxInvite, t0);
    assert_eq!(drain_out(&mut c), vec![OA::StartMedia]);
    c.handle(OI::MediaReady, t0);
    assert_eq!(drain_out(&mut c), vec![OA::SendGraph(G::Connect)]);
    c
}

fn status_of(actions: &[OutboundAction]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            OA::RespondPbx(r) => Some(r.status.code()),
            _ => None,
        })
        .collect()
}

#[test]
fn outbound_answer_rings_then_200_on_accepted() {
    let t0 = base();
    let mut c = connecting(false, 603, t0);
    c.handle(OI::ConnectResult(Ok(wacid())), t0);
    c.handle(OI::WaAnswer(wacid()), t0);
    assert_eq!(drain_out(&mut c), vec![OA::ApplyWaAnswer]);
    c.handle(OI::WaStatus(wacid(), WaCallStatus::Ringing), t0);
    c.handle(OI::WaStatus(wacid(), WaCallStatus::Ringing), t0);
    assert_eq!(
        drain_out(&mut c),
        vec![OA::SendRinging { early_media: true }],
        "one ringing for duplicates"
    );
    c.handle(
        OI::WaStatus(wacid(), WaCallStatus::Accepted),
        t0 + Duration::from_secs(4),
    );
    let acts = drain_out(&mut c);
    assert_eq!(status_of(&acts), vec![200]);
    assert_eq!(acts.last(), Some(&OA::OpenMediaGate));
    assert_eq!(c.wa_call_id(), Some(&wacid()));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn outbound_webhooks_overtaking_the_connect_reply_are_taken() {
    let t0 = base();
    let mut c = connecting(false, 603, t0);
    c.handle(OI::WaAnswer(wacid()), t0);
    c.handle(OI::WaStatus(wacid(), WaCallStatus::Ringing), t0);
    c.handle(OI::ConnectResult(Ok(wacid())), t0);
    assert_eq!(
        drain_out(&mut c),
        vec![OA::ApplyWaAnswer, OA::SendRinging { early_media: true }]
    );
    assert_eq!(c.wa_call_id(), Some(&wacid()));
}

#[test]
fn outbound_rejected_maps_to_configured_status_and_counts_as_unanswered() {
    for rejected in [603, 486] {
        let t0 = base();
        let mut c = connecting(false, rejected, t0);
        c.handle(OI::ConnectResult(Ok(wacid())), t0);
        c.handle(OI::WaStatus(wacid(), WaCallStatus::Rejected), t0);
        let acts = drain_out(&mut c);
        assert_eq!(status_of(&acts), vec![rejected]);
        assert!(
            !acts.contains(&OA::SendGraph(G::Terminate)),
            "Meta sends terminate itself after REJECTED"
        );
        assert!(c.end().unwrap().counts_as_unanswered());
    }
}

#[test]
fn outbound_no_answer_ring_timeout_terminates_and_sends_480() {
    let t0 = base();
    let mut c = connecting(false, 603, t0);
    c.handle(OI::ConnectResult(Ok(wacid())), t0 + Duration::from_secs(1));
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + Duration::from_secs(46)),
        "armed when Meta returns the id"
    );
    c.handle_timeout(t0 + Duration::from_secs(45));
    assert_eq!(drain_out(&mut c), vec![]);
    c.handle_timeout(t0 + Duration::from_secs(46));
    let acts = drain_out(&mut c);
    assert_eq!(status_of(&acts), vec![480]);
    assert!(acts.ends_with(&[OA::SendGraph(G::Terminate), OA::StopMedia]));
    c.handle(
        OI::GraphResult {
            action: G::Terminate,
            ok: true,
        },
        t0 + Duration::from_secs(46),
    );
    assert!(c.end().unwrap().counts_as_unanswered());
}

#[test]
fn outbound_no_permission_138006_sends_403_and_permission_request_only_when_allowed() {
    for auto in [true, false] {
        let t0 = base();
        let mut c = connecting(auto, 603, t0);
        c.handle(
            OI::ConnectResult(Err(OutboundFailure::Graph {
                code: Some(138_006),
                http_status: 401,
            })),
            t0,
        );
        let acts = drain_out(&mut c);
        assert_eq!(status_of(&acts), vec![403]);
        assert_eq!(
            acts.contains(&OA::SendPermissionRequest),
            auto,
            "auto = {auto}"
        );
        let OA::RespondPbx(reply) = acts
            .iter()
            .find(|a| matches!(a, OA::RespondPbx(_)))
            .unwrap()
        else {
            panic!()
        };
        assert!(reply.warning.as_deref().unwrap().contains("138006"));
        assert!(c.is_terminated());
        assert!(
            !c.end().unwrap().counts_as_unanswered(),
            "no call was placed"
        );
    }
}

#[test]
fn outbound_local_refusal_never_reaches_meta() {
    let t0 = base();
    let mut c = OutboundCall::new(out_route(true), settings(603));
    c.handle(
        OI::Refused(OutboundFailure::ConsentGuard {
            consecutive_unanswered: 2,
        }),
        t0,
    );
    let acts = drain_out(&mut c);
    assert_eq!(status_of(&acts), vec![403]);
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, OA::SendGraph(_) | OA::StartMedia))
    );
    assert!(c.is_terminated());

    let mut c = OutboundCall::new(out_route(true), settings(603));
    c.handle(OI::Refused(OutboundFailure::NoPermission), t0);
    let acts = drain_out(&mut c);
    assert_eq!(acts[0], OA::SendPermissionRequest);
    assert_eq!(status_of(&acts), vec![403]);
}

#[test]
fn outbound_meta_concurrency_error_is_503_with_retry_after() {
    let t0 = base();
    let mut c = connecting(false, 603, t0);
    c.handle(
        OI::ConnectResult(Err(OutboundFailure::Graph {
            code: Some(138_002),
            http_status: 429,
        })),
        t0,
    );
    let acts = drain_out(&mut c);
    let OA::RespondPbx(reply) = &acts[0] else {
        panic!("{acts:?}")
    };
    assert_eq!(reply.status.code(), 503);
    assert_eq!(reply.retry_after, Some(Duration::from_secs(10)));
    assert_eq!(acts[1], OA::StopMedia);
}

#[test]
fn outbound_pbx_cancel_while_ringing_terminates_and_487() {
    let t0 = base();
    let mut c = connecting(false, 603, t0);
    c.handle(OI::ConnectResult(Ok(wacid())), t0);
    c.handle(OI::WaStatus(wacid(), WaCallStatus::Ringing), t0);
    drain_out(&mut c);
    c.handle(OI::PbxCancel, t0);
    let acts = drain_out(&mut c);
    assert_eq!(status_of(&acts), vec![487]);
    assert!(acts.ends_with(&[OA::SendGraph(G::Terminate), OA::StopMedia]));
    c.handle(
        OI::GraphResult {
            action: G::Terminate,
            ok: true,
        },
        t0,
    );
    assert_eq!(c.end(), Some(&OutboundEnd::PbxCancelled));
    assert!(
        !c.end().unwrap().counts_as_unanswered(),
        "our cancel is not the user's miss"
    );
}

#[test]
fn outbound_pbx_cancel_before_call_id_terminates_when_id_arrives() {
    let t0 = base();
    let mut c = connecting(false, 603, t0);
    c.handle(OI::PbxCancel, t0);
    assert_eq!(status_of(&drain_out(&mut c)), vec![487]);
    assert!(!c.is_terminated());
    c.handle(OI::ConnectResult(Ok(wacid())), t0);
    assert_eq!(drain_out(&mut c), vec![OA::SendGraph(G::Terminate)]);
    c.handle(
        OI::GraphResult {
            action: G::Terminate,
            ok: true,
        },
        t0,
    );
    assert!(c.is_terminated());
}

#[test]
fn outbound_pbx_cancel_before_media_is_487_without_meta() {
    let t0 = base();
    let mut c = OutboundCall::new(out_route(false), settings(603));
    c.handle(OI::PbxInvite, t0);
    drain_out(&mut c);
    c.handle(OI::PbxCancel, t0);
    let acts = drain_out(&mut c);
    assert_eq!(status_of(&acts), vec![487]);
    assert!(!acts.iter().any(|a| matches!(a, OA::SendGraph(_))));
    assert!(c.is_terminated());
}

#[test]
fn outbound_bye_either_side_after_answer() {
    let t0 = base();
    let answered = || {
        let mut c = connecting(false, 603, t0);
        c.handle(OI::ConnectResult(Ok(wacid())), t0);
        c.handle(OI::WaStatus(wacid(), WaCallStatus::Accepted), t0);
        drain_out(&mut c);
        c
    };
    let mut c = answered();
    c.handle(OI::PbxBye, t0);
    assert_eq!(
        drain_out(&mut c),
        vec![OA::SendGraph(G::Terminate), OA::StopMedia]
    );
    let mut c = answered();
    c.handle(OI::WaTerminated { error: None }, t0);
    assert_eq!(drain_out(&mut c), vec![OA::SendBye, OA::StopMedia]);
    assert_eq!(c.end(), Some(&OutboundEnd::WaHangup));
    let mut c = answered();
    c.handle(OI::PbxReInvite, t0);
    c.handle(OI::PbxCancel, t0);
    assert_eq!(
        drain_out(&mut c),
        vec![OA::AnswerReInvite],
        "CANCEL after 200 does nothing"
    );
}

#[test]
fn outbound_terminate_with_error_before_answer_maps_the_code() {
    let t0 = base();
    let mut c = connecting(false, 603, t0);
    c.handle(OI::ConnectResult(Ok(wacid())), t0);
    c.handle(
        OI::WaTerminated {
            error: Some(138_020),
        },
        t0,
    );
    let acts = drain_out(&mut c);
    assert_eq!(status_of(&acts), vec![480]);
    let mut c = connecting(false, 603, t0);
    c.handle(OI::ConnectResult(Ok(wacid())), t0);
    c.handle(OI::WaTerminated { error: None }, t0);
    assert_eq!(status_of(&drain_out(&mut c)), vec![480]);
}
