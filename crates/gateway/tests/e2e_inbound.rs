//! End to end, on 127.0.0.1: whatsip-sim (Meta's Graph API and webhooks, with a real
//! WebRTC phone) → the gateway runtime → SIPp as the PBX (UAS scenarios in `tests/sipp/`,
//! `-rtp_echo`).
//!
//! Each test asserts what went over the wire on both legs (the Graph actions the simulator
//! recorded, in order; SIPp's exit status and the SIP messages it logged), that audio made
//! the round trip (the phone's 1 kHz tone comes back through the PBX's RTP echo and is
//! detected at the phone), that DTMF pressed on the phone reaches the PBX as RFC 4733 and
//! comes back, and that nothing is left behind (no live call, no RTP port).
//!
//! SIPp comes from `scripts/setup.sh` (Debian `sip-tester`). Without it a test fails when
//! `CI=true` and is skipped loudly otherwise. Tests run one at a time (WebRTC, Opus and
//! SIPp on a loaded 2-core machine), every wait is bounded, every port is picked free.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::Duration;

use common::cdr::{CdrExpect, PbxLeg};
use common::{
    BUSINESS, CUSTOMER, InboundHarness as Harness, InboundOpts, Kind, PNID, WAIT, assert_sipp_ok,
    inbound_harness, tone_ok,
};
use whatsip_cdr::{HangupSide, Outcome};
use whatsip_gateway::runtime::MilestoneKind;
use whatsip_sim::core::{CallState, UserCall};
use whatsip_sim::{FaultAction, FaultRule, Faults, GraphFault, GraphFaultRule, WaId, WebhookMatch};

/// One test at a time: each runs two WebRTC peers, Opus codecs and SIPp.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn harness(kind: Kind, scenario: &str, ring_timeout_s: u64) -> Option<Harness> {
    inbound_harness(InboundOpts {
        ring_timeout_s,
        ..InboundOpts::new(kind, Some(scenario))
    })
    .await
}

/// What the CDR of call `id` from [`CUSTOMER`], routed by the `e2e-agents` rule to
/// `sip:{target}@…`, must say.
fn cdr(outcome: Outcome, id: &whatsip_sim::WaCallId, target: &str) -> CdrExpect {
    CdrExpect::inbound(BUSINESS, CUSTOMER, outcome)
        .wa_call_id(id.as_str())
        .route("e2e-agents", Some(&format!("sip:{target}@127.0.0.1")))
}

/// `scenario: None` starts no SIPp (the PBX must never be contacted).
async fn harness_with(
    kind: Kind,
    scenario: Option<&str>,
    ring_timeout_s: u64,
    faults: Faults,
) -> Option<Harness> {
    inbound_harness(InboundOpts {
        ring_timeout_s,
        faults,
        ..InboundOpts::new(kind, scenario)
    })
    .await
}

async fn answered_call_with_echo(kind: Kind) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness(kind, "uas_wa_echo.xml", 20).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .expect("the gateway accepted the call");

    // audio: the phone's tone went to the PBX as PCMU, came back from SIPp's echo and was
    // transcoded to Opus toward the phone
    let phone = h.phone();
    let (status, ok) = phone.wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back at the phone: {status:?}");

    // DTMF: RFC 4733 on PT 126 from the phone → telephone-event/8000 PT 101 to the PBX →
    // echoed → back to the phone
    h.sim.user_presses(&id, "5").await.unwrap();
    let (status, ok) = phone.wait_for(WAIT, |s| s.audio.digits.contains('5')).await;
    assert!(ok, "digit not echoed back to the phone: {status:?}");
    let relayed = h
        .wait_milestone(|k| {
            matches!(
                k,
                MilestoneKind::Dtmf {
                    digit: '5',
                    from_whatsapp: true
                }
            )
        })
        .await;
    assert!(relayed, "{:?}", h.milestones());

    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    // the PBX saw the WhatsApp context and a BYE
    let m = &run.messages;
    assert!(m.contains(&format!("X-WA-Call-Id: {}", id.as_str())), "{m}");
    assert!(m.contains("X-WA-Customer-Number: +4915112345678"), "{m}");
    assert!(m.contains("X-WA-CTA-Payload: support-button"), "{m}");
    assert!(m.contains("X-E2E-Rule: e2e-agents"), "{m}");
    assert!(
        m.contains("P-Asserted-Identity: <sip:+4915112345678@127.0.0.1>"),
        "{m}"
    );
    assert!(m.contains("BYE sip:"), "{m}");
    assert!(m.contains("telephone-event/8000"), "{m}");

    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);
    // one digit pressed, echoed back by the PBX: two digits carried
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered("PCMU")
        .dtmf(2)
        .hangup(HangupSide::WhatsApp)
        .reason("whatsapp hangup")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    let pos = |want: &dyn Fn(&MilestoneKind) -> bool| ms.iter().position(want);
    let pre = pos(&|k| matches!(k, MilestoneKind::PreAccepted)).expect("pre_accept");
    let invite = pos(&|k| matches!(k, MilestoneKind::InviteSent { .. })).expect("invite");
    let answered = pos(&|k| matches!(k, MilestoneKind::Answered { .. })).expect("200");
    let accepted = pos(&|k| matches!(k, MilestoneKind::Accepted)).expect("accept");
    assert!(
        pre < invite && invite < answered && answered < accepted,
        "{ms:?}"
    );
    assert!(
        ms.iter().any(|k| matches!(k, MilestoneKind::Ended { reason, talk_time: Some(_) } if reason == "whatsapp hangup")),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_answered_call_echoes_tone_and_dtmf_then_user_hangs_up() {
    answered_call_with_echo(Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_tcp_answered_call_echoes_tone_and_dtmf_then_user_hangs_up() {
    answered_call_with_echo(Kind::Tcp).await;
}

async fn busy(kind: Kind) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness(kind, "uas_wa_busy.xml", 20).await else {
        return;
    };
    let id = h.user_calls().await;
    let info = h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_ne!(info.state, CallState::Active);
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    assert!(run.messages.contains("486 Busy Here"), "{}", run.messages);
    assert_eq!(h.graph_actions(), ["pre_accept", "reject"]);
    cdr(Outcome::Rejected, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .hangup(HangupSide::Pbx)
        .sip_status(486)
        .reason("pbx rejected 486")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    assert!(
        ms.iter().any(
            |k| matches!(k, MilestoneKind::Ended { reason, .. } if reason == "pbx rejected 486")
        ),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_pbx_busy_486_rejects_on_meta() {
    busy(Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_tcp_pbx_busy_486_rejects_on_meta() {
    busy(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_no_answer_within_ring_timeout_cancels_and_rejects() {
    no_answer(Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_tcp_no_answer_within_ring_timeout_cancels_and_rejects() {
    no_answer(Kind::Tcp).await;
}

async fn no_answer(kind: Kind) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness(kind, "uas_wa_noanswer.xml", 3).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    assert!(run.messages.contains("CANCEL sip:"), "{}", run.messages);
    assert!(
        run.messages.contains("487 Request Terminated"),
        "{}",
        run.messages
    );
    assert_eq!(h.graph_actions(), ["pre_accept", "reject"]);
    cdr(Outcome::NoAnswer, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .hangup(HangupSide::Gateway)
        .sip_status(487)
        .reason("no answer")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    assert!(
        ms.iter()
            .any(|k| matches!(k, MilestoneKind::Ended { reason, .. } if reason == "no answer")),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_pbx_bye_after_answer_terminates_on_meta() {
    pbx_bye(Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_tcp_pbx_bye_after_answer_terminates_on_meta() {
    pbx_bye(Kind::Tcp).await;
}

async fn pbx_bye(kind: Kind) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness(kind, "uas_wa_bye.xml", 20).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .unwrap();
    let (status, ok) = h.phone().wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back at the phone: {status:?}");
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    assert!(run.messages.contains("SIP/2.0 200 OK"), "{}", run.messages);
    assert_eq!(h.graph_actions(), ["pre_accept", "accept", "terminate"]);
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::Pbx)
        .reason("pbx hangup")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    assert!(
        ms.iter()
            .any(|k| matches!(k, MilestoneKind::Ended { reason, .. } if reason == "pbx hangup")),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_reinvite_hold_and_resume_is_absorbed() {
    hold_and_resume(Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_tcp_reinvite_hold_and_resume_is_absorbed() {
    hold_and_resume(Kind::Tcp).await;
}

async fn hold_and_resume(kind: Kind) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness(kind, "uas_wa_hold.xml", 20).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .unwrap();
    let phone = h.phone();
    let (status, ok) = phone.wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back before hold: {status:?}");

    // on hold (the PBX sends a=sendonly), the WhatsApp leg keeps receiving packets
    let mut held = false;
    for _ in 0..400 {
        if h.milestones()
            .iter()
            .any(|k| matches!(k, MilestoneKind::HoldChanged { on_hold: true }))
        {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(held, "no hold milestone");
    let before = phone.status().unwrap().audio.packets_received;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = phone.status().unwrap().audio.packets_received;
    assert!(
        during >= before + 25,
        "whatsapp leg starved on hold: {before} -> {during}"
    );

    // resumed: SIPp's scenario ends with our BYE after the user hangs up
    let mut resumed = false;
    for _ in 0..400 {
        if h.milestones()
            .iter()
            .any(|k| matches!(k, MilestoneKind::HoldChanged { on_hold: false }))
        {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(resumed, "no resume milestone");
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    // our answers: recvonly to the hold, sendrecv to the resume (checked by the scenario's
    // eregs); Meta saw nothing of it
    assert!(run.messages.contains("a=recvonly"), "{}", run.messages);
    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::WhatsApp)
        .reason("whatsapp hangup")
        .check(&h.released_cdr(&id).await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_shutdown_ends_a_live_call_on_both_legs() {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness(Kind::Udp, "uas_wa_echo.xml", 20).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .unwrap();
    // media flowing both ways before the shutdown (the CDR's media quality)
    let (status, ok) = h.phone().wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back: {status:?}");
    let gw = h.gw.take().unwrap();
    assert_eq!(gw.calls_in_progress(), 1);
    gw.shutdown().await;
    // BYE to the PBX (SIPp's scenario completes), terminate to Meta
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    assert!(run.messages.contains("BYE sip:"), "{}", run.messages);
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_eq!(h.graph_actions(), ["pre_accept", "accept", "terminate"]);
    let ms = h.milestones().to_vec();
    assert!(
        ms.iter().any(
            |k| matches!(k, MilestoneKind::Ended { reason, .. } if reason == "gateway shutdown")
        ),
        "{ms:?}"
    );
    // written before `shutdown()` returned
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::Gateway)
        .reason("gateway shutdown")
        .check(&h.released_cdr(&id).await);
    h.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_duplicate_connect_webhook_rings_the_pbx_once() {
    let _serial = SERIAL.lock().await;
    let faults = Faults {
        rules: vec![FaultRule {
            matches: WebhookMatch::Label("connect".into()),
            action: FaultAction::Duplicate,
            times: Some(1),
        }],
        ..Faults::default()
    };
    let Some(mut h) = harness_with(Kind::Udp, Some("uas_wa_echo.xml"), 20, faults).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .unwrap();
    h.sim
        .wait_for_webhook(WAIT, |w| {
            w.duplicate && w.labels.iter().any(|l| l == "connect")
        })
        .await
        .expect("the simulator re-delivered the connect webhook");
    let (status, ok) = h.phone().wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back: {status:?}");
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    let invites = run.messages.matches("INVITE sip:agent@").count();
    assert_eq!(invites, 1, "{}", run.messages);
    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);
    // one record although the offer came twice
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::WhatsApp)
        .reason("whatsapp hangup")
        .check(&h.released_cdr(&id).await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_terminate_before_connect_starts_no_ghost_call() {
    let _serial = SERIAL.lock().await;
    let faults = Faults {
        rules: vec![FaultRule {
            matches: WebhookMatch::Label("connect".into()),
            action: FaultAction::HoldUntilNext {
                max: Some(Duration::from_secs(10)),
            },
            times: Some(1),
        }],
        ..Faults::default()
    };
    // no SIPp: the PBX must never be contacted
    let Some(h) = harness_with(Kind::Udp, None, 20, faults).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    // the held connect is delivered after the terminate
    h.sim
        .wait_for_webhook(WAIT, |w| {
            w.labels.iter().any(|l| l == "connect")
                && w.outcome == whatsip_sim::DeliveryOutcome::Status(200)
        })
        .await
        .expect("connect delivered late");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.graph_actions().is_empty(), "{:?}", h.graph_actions());
    // One record for the attempt (issue 8): cancelled by the caller, nothing at the PBX.
    let mut all = Vec::new();
    for _ in 0..100 {
        all = common::cdr::final_records(&h.cdr_db);
        if !all.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all.len(), 1, "{all:#?}");
    let r = &all[0];
    assert_eq!(r.wa_call_id, id.as_str(), "{r:#?}");
    assert_eq!(r.outcome, whatsip_cdr::Outcome::Cancelled, "{r:#?}");
    assert_eq!(r.ending.hangup_by, Some(whatsip_cdr::HangupSide::WhatsApp));
    assert_eq!(
        (r.business_number.as_str(), r.customer_number.as_str()),
        (BUSINESS, CUSTOMER)
    );
    assert!(r.pbx_call_id.is_none() && r.answer_at.is_none(), "{r:#?}");
    let ms = h.finish().await;
    assert!(
        !ms.iter()
            .any(|k| matches!(k, MilestoneKind::InviteSent { .. })),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_session_timer_refreshes_are_answered_locally() {
    session_timer_refreshes(Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_tcp_session_timer_refreshes_are_answered_locally() {
    session_timer_refreshes(Kind::Tcp).await;
}

async fn session_timer_refreshes(kind: Kind) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness(kind, "uas_wa_refresh.xml", 20).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .unwrap();
    // the scenario sends an UPDATE and a re-INVITE (2 s), each with Session-Expires
    let (status, ok) = h.phone().wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back: {status:?}");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    // SIPp checked Session-Expires in the UPDATE's 200 and got a 200 with SDP to the
    // re-INVITE before our BYE
    assert_sipp_ok(&run);
    assert!(run.messages.contains("Require: timer"), "{}", run.messages);
    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::WhatsApp)
        .reason("whatsapp hangup")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    assert!(
        !ms.iter()
            .any(|k| matches!(k, MilestoneKind::HoldChanged { .. })),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_busy_takes_the_dial_plan_fallback() {
    let _serial = SERIAL.lock().await;
    let fallback = r#"fallback = [ { on = ["busy"], target = "sip:overflow@127.0.0.1", ring_timeout_s = 10 } ]"#;
    let Some(mut h) = inbound_harness(InboundOpts {
        sipp_calls: 2,
        target_user: "busy",
        rule_extra: fallback,
        ..InboundOpts::new(Kind::Udp, Some("uas_wa_fallback.xml"))
    })
    .await
    else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .expect("the fallback target answered");
    let (status, ok) = h.phone().wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back: {status:?}");
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    let m = &run.messages;
    let busy = m.find("INVITE sip:busy@").expect("first attempt");
    let overflow = m.find("INVITE sip:overflow@").expect("fallback attempt");
    assert!(busy < overflow, "{m}");
    assert!(m.contains("486 Busy Here"), "{m}");
    // Meta saw one call: pre_accept once, accept once, no reject in between
    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);
    // one record for the attempt, naming the target that answered and its leg
    cdr(Outcome::Answered, &id, "overflow")
        .pbx_leg(Harness::pbx_call_id(&run, "overflow"))
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::WhatsApp)
        .reason("whatsapp hangup")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    let invites: Vec<usize> = ms
        .iter()
        .filter_map(|k| match k {
            MilestoneKind::InviteSent { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(invites, [0, 1], "{ms:?}");
}

fn graph_fault(action: &str) -> Faults {
    Faults {
        graph: vec![GraphFaultRule {
            endpoint: Some("calls".into()),
            action: Some(action.into()),
            fault: GraphFault::Error { code: 138004 },
            times: Some(1),
        }],
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pre_accept_failure_rejects_and_never_rings_the_pbx() {
    let _serial = SERIAL.lock().await;
    // no SIPp: the PBX must never be contacted
    let Some(h) = harness_with(Kind::Udp, None, 20, graph_fault("pre_accept")).await else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_graph_request(WAIT, |r| r.is_call_action("reject"))
        .await
        .expect("the gateway rejected the call");
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_eq!(h.graph_actions(), ["pre_accept", "reject"]);
    cdr(Outcome::Failed, &id, "agent")
        .hangup(HangupSide::Gateway)
        .meta("pre_accept failed", Some(138004))
        .reason("graph pre_accept failed")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    assert!(
        !ms.iter()
            .any(|k| matches!(k, MilestoneKind::InviteSent { .. })),
        "{ms:?}"
    );
    assert!(
        ms.iter().any(|k| matches!(k, MilestoneKind::Ended { reason, .. } if reason == "graph pre_accept failed")),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_accept_failure_byes_the_pbx_and_terminates() {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness_with(
        Kind::Udp,
        Some("uas_wa_echo.xml"),
        20,
        graph_fault("accept"),
    )
    .await
    else {
        return;
    };
    let id = h.user_calls().await;
    // the scenario answers, then must receive our BYE to end successfully
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    assert!(run.messages.contains("BYE sip:"), "{}", run.messages);
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_eq!(h.graph_actions(), ["pre_accept", "accept", "terminate"]);
    // the media gate never opened: the phone (ICE and DTLS up since pre_accept) got no
    // RTP although the PBX leg was answered and echoing
    let status = h.phone().status().expect("phone ran after pre_accept");
    assert!(status.connected || status.terminated, "{status:?}");
    assert_eq!(status.audio.packets_received, 0, "{status:?}");
    // the PBX answered, WhatsApp never did: not an answered call
    cdr(Outcome::Failed, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .hangup(HangupSide::Gateway)
        .meta("accept failed", Some(138004))
        .reason("graph accept failed")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    assert!(
        !ms.iter().any(|k| matches!(k, MilestoneKind::Accepted)),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_five_concurrent_calls_each_hear_their_echo() {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = inbound_harness(InboundOpts {
        sipp_calls: 5,
        ..InboundOpts::new(Kind::Udp, Some("uas_wa_echo.xml"))
    })
    .await
    else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        let call = UserCall::new(
            WaId::parse(&format!("49151000000{i:02}")).unwrap(),
            whatsip_sim::PhoneNumberId::parse(PNID).unwrap(),
        );
        ids.push(h.sim.user_calls(call).await.unwrap());
    }
    for id in &ids {
        h.sim
            .wait_for_call_state(id, CallState::Active, WAIT)
            .await
            .expect("every call answered");
    }
    assert_eq!(h.gw.as_ref().unwrap().calls_in_progress(), 5);
    let phones = h.phones.phones();
    assert_eq!(phones.len(), 5);
    // each phone plays its own tone; hearing exactly it back proves no cross-talk
    // between calls sharing the WebRTC socket and SIPp's single echo port
    let tones = [500.0, 700.0, 1300.0, 1500.0, 1700.0];
    for (phone, hz) in phones.iter().zip(tones) {
        assert!(
            phone
                .command(whatsip_media::phone::PhoneCommand::SetTone(Some(hz)))
                .await
        );
    }
    for (phone, hz) in phones.iter().zip(tones) {
        let (status, ok) = phone
            .wait_for(WAIT, |s| {
                s.audio
                    .tone
                    .as_ref()
                    .is_some_and(|t| (t.freq_hz - hz).abs() <= 50.0 && t.frames >= 25)
            })
            .await;
        assert!(ok, "{:?} did not hear its {hz} Hz: {status:?}", phone.user);
    }
    for id in &ids {
        h.sim.user_hangs_up(id).await.unwrap();
    }
    for id in &ids {
        h.sim.wait_for_call_end(id, WAIT).await.unwrap();
    }
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    let actions = h.graph_actions();
    assert_eq!(actions.iter().filter(|a| *a == "pre_accept").count(), 5);
    assert_eq!(actions.iter().filter(|a| *a == "accept").count(), 5);
    assert_eq!(actions.len(), 10, "{actions:?}");
    // one answered record per call, each with its own customer and PBX leg
    let mut legs = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let r = h.released_cdr(id).await;
        CdrExpect::inbound(BUSINESS, &format!("49151000000{i:02}"), Outcome::Answered)
            .wa_call_id(id.as_str())
            .route("e2e-agents", Some("sip:agent@127.0.0.1"))
            .pbx_leg(PbxLeg::Some)
            .rang()
            .answered("PCMU")
            .hangup(HangupSide::WhatsApp)
            .reason("whatsapp hangup")
            .check(&r);
        assert!(
            legs.insert(r.pbx_call_id.clone()),
            "PBX Call-ID shared: {r:?}"
        );
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_pbx_digest_challenge_is_answered_with_trunk_credentials() {
    let _serial = SERIAL.lock().await;
    let auth = r#"outbound_auth = { username = "trunk", password = { env = "E2E_PBX_PASSWORD" } }"#;
    let Some(mut h) = inbound_harness(InboundOpts {
        pbx_extra: auth,
        ..InboundOpts::new(Kind::Udp, Some("uas_wa_auth.xml"))
    })
    .await
    else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .expect("answered after the challenge");
    let (status, ok) = h.phone().wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back: {status:?}");
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    // SIPp verified the digest (username trunk, password s3cret) before answering
    assert_sipp_ok(&run);
    assert!(
        run.messages.contains("Authorization: Digest"),
        "{}",
        run.messages
    );
    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);
    // the challenge is part of the one attempt: no SIP error left in the record
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::WhatsApp)
        .reason("whatsapp hangup")
        .check(&h.released_cdr(&id).await);
    h.finish().await;
}

/// One answered call with the PBX (SIPp `-rtp_echo`) answering `rtpmap`: the phone's 1 kHz
/// Opus tone crosses the gateway to the PBX leg in that codec, comes back from the echo and is
/// heard at the phone at the right frequency. For Opus the gateway passes the packets through
/// untouched.
async fn answered_call_in_codec(scenario: &str, codecs: &str, want_codec: &str, rtpmap: &str) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = inbound_harness(InboundOpts {
        pbx_extra: &format!("codecs = {codecs}"),
        ..InboundOpts::new(Kind::Udp, Some(scenario))
    })
    .await
    else {
        return;
    };
    let id = h.user_calls().await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .expect("the gateway accepted the call");
    let phone = h.phone();
    let (status, ok) = phone.wait_for(WAIT, tone_ok).await;
    assert!(
        ok,
        "{want_codec}: tone not heard back at the phone: {status:?}"
    );
    h.sim.user_presses(&id, "7").await.unwrap();
    let (status, ok) = phone.wait_for(WAIT, |s| s.audio.digits.contains('7')).await;
    assert!(ok, "{want_codec}: digit not echoed back: {status:?}");
    // the digit is counted once it ended, on both legs
    for from_whatsapp in [true, false] {
        let done = h
            .wait_milestone(|k| {
                *k == MilestoneKind::Dtmf {
                    digit: '7',
                    from_whatsapp,
                }
            })
            .await;
        assert!(
            done,
            "{want_codec}: digit from_whatsapp={from_whatsapp}: {:?}",
            h.milestones()
        );
    }
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    // our offer carried the codec the PBX then chose
    assert!(run.messages.contains(rtpmap), "{}", run.messages);
    // one digit pressed, echoed back by the PBX: two digits carried
    cdr(Outcome::Answered, &id, "agent")
        .pbx_leg(Harness::pbx_call_id(&run, "agent"))
        .rang()
        .answered(want_codec)
        .dtmf(2)
        .hangup(HangupSide::WhatsApp)
        .reason("whatsapp hangup")
        .check(&h.released_cdr(&id).await);
    let ms = h.finish().await;
    assert!(
        ms.iter().any(|k| matches!(k, MilestoneKind::Answered { codec } if codec.eq_ignore_ascii_case(want_codec) || codec.to_ascii_uppercase().starts_with(&want_codec.to_ascii_uppercase()))),
        "{want_codec} not negotiated: {ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_pcma_pbx_hears_and_returns_the_tone() {
    answered_call_in_codec("uas_wa_echo_pcma.xml", r#"["PCMA"]"#, "PCMA", "PCMA/8000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_g722_pbx_hears_and_returns_the_tone() {
    answered_call_in_codec("uas_wa_echo_g722.xml", r#"["G722"]"#, "G722", "G722/8000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_opus_pbx_gets_opus_passed_through() {
    answered_call_in_codec(
        "uas_wa_echo_opus.xml",
        r#"["opus", "PCMU"]"#,
        "opus",
        "opus/48000/2",
    )
    .await;
}
