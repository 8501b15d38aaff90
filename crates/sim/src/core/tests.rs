//! State machine tests on a virtual clock: no sockets, no sleeps.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use crate::sdp::tests::{BIZ_OFFER, DOC_ANSWER};

const PNID: &str = "106540352242922";
const USER: &str = "4915112345678";
const TOKEN: &str = "test-token";

struct Harness {
    core: MetaCore,
    now: Instant,
    wall: SystemTime,
    events: Vec<CoreEvent>,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    // The virtual clock's origin; every later instant is computed from it.
    #[allow(clippy::disallowed_methods)]
    fn with(f: impl FnOnce(&mut CoreConfig)) -> Self {
        let mut cfg = CoreConfig {
            access_tokens: vec![TOKEN.into()],
            ..CoreConfig::default()
        };
        f(&mut cfg);
        Self {
            core: MetaCore::new(cfg),
            now: Instant::now(),
            // 2026-11-25T00:00:00Z
            wall: UNIX_EPOCH + Duration::from_secs(1_795_564_800),
            events: Vec::new(),
        }
    }

    fn pnid() -> PhoneNumberId {
        PhoneNumberId::parse(PNID).unwrap()
    }

    fn user() -> WaId {
        WaId::parse(USER).unwrap()
    }

    fn epoch(&self) -> u64 {
        self.wall.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    /// Advances the virtual clock in 100 ms steps, firing timers as a driver would.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = Duration::from_millis(100).min(end - self.now);
            self.now += step;
            self.wall += step;
            if self.core.poll_timeout().is_some_and(|t| t <= self.now) {
                self.core.handle_timeout(self.now, self.wall);
            }
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let Some(e) = self.core.poll_event() {
            self.events.push(e);
        }
    }

    fn take_webhooks(&mut self) -> Vec<Webhook> {
        self.drain();
        let mut out = Vec::new();
        self.events.retain(|e| match e {
            CoreEvent::Webhook(w) => {
                out.push(w.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn labels(&mut self) -> Vec<String> {
        self.take_webhooks().into_iter().map(|w| w.label).collect()
    }

    fn graph(&mut self, method: &str, path: &str, body: Value) -> GraphResponse {
        let req = GraphRequest {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            authorization: Some(format!("Bearer {TOKEN}")),
            body: serde_json::to_vec(&body).unwrap(),
        };
        let r = self.core.handle_graph(&req, self.now, self.wall);
        self.drain();
        r
    }

    fn calls(&mut self, body: Value) -> GraphResponse {
        self.graph("POST", &format!("/v23.0/{PNID}/calls"), body)
    }

    fn get(&mut self, path_and_query: &str) -> GraphResponse {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let req = GraphRequest {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            authorization: Some(format!("Bearer {TOKEN}")),
            body: Vec::new(),
        };
        let r = self.core.handle_graph(&req, self.now, self.wall);
        self.drain();
        r
    }

    fn user_call(&mut self) -> WaCallId {
        let id = self
            .core
            .user_calls(
                UserCall::new(Self::user(), Self::pnid()),
                crate::sdp::tests::DOC_ANSWER.replace("a=setup:active", "a=setup:actpass"),
                self.now,
                self.wall,
            )
            .unwrap();
        self.drain();
        id
    }

    fn state(&self, id: &WaCallId) -> CallState {
        self.core.call(id).unwrap().state
    }

    fn answer(&self, id: &WaCallId, action: &str) -> Value {
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": action,
                "session": { "sdp_type": "answer", "sdp": DOC_ANSWER } })
    }

    fn connect(&mut self) -> GraphResponse {
        self.calls(json!({ "messaging_product": "whatsapp", "to": USER, "action": "connect",
            "session": { "sdp_type": "offer", "sdp": BIZ_OFFER }, "biz_opaque_callback_data": "ref-1" }))
    }

    /// Connects a business call and feeds the peer answer, as the driver would.
    fn business_call(&mut self) -> WaCallId {
        let r = self.connect();
        assert_eq!(r.status, 200, "{}", r.body);
        let id = WaCallId::parse(r.body["calls"][0]["id"].as_str().unwrap()).unwrap();
        let answer = crate::sdp::meta_answer(
            &crate::sdp::MetaSdpParams {
                session_id: 1,
                port: 40000,
                ice_ufrag: "u".into(),
                ice_pwd: "p".into(),
                fingerprint: [1; 32],
                ssrc: 1,
                msid: "m".into(),
            },
            BIZ_OFFER,
        )
        .unwrap();
        self.core
            .handle_peer_answer(&id, Ok(answer), self.now, self.wall);
        self.drain();
        id
    }

    fn terminate_webhook(&mut self) -> Value {
        let w = self
            .take_webhooks()
            .into_iter()
            .find(|w| w.label == "terminate")
            .expect("terminate webhook");
        w.value
    }
}

fn permit(h: &mut Harness, grant: PermissionGrant) {
    let wall = h.wall;
    h.core
        .set_permission(&Harness::pnid(), &Harness::user(), grant, wall);
}

// ---- user-initiated ----

#[test]
fn user_call_connect_webhook_carries_offer_contacts_and_string_timestamp() {
    let mut h = Harness::new();
    let id = h.user_call();
    let w = h.take_webhooks();
    assert_eq!(w.len(), 1);
    let v = &w[0].value;
    assert_eq!(w[0].field, "calls");
    assert_eq!(v["metadata"]["phone_number_id"], PNID);
    assert_eq!(v["contacts"][0]["wa_id"], USER);
    let c = &v["calls"][0];
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["from"], USER);
    assert_eq!(c["to"], "4930901820");
    assert_eq!(c["event"], "connect");
    assert_eq!(c["direction"], "USER_INITIATED");
    assert_eq!(c["timestamp"], h.epoch().to_string());
    assert_eq!(c["session"]["sdp_type"], "offer");
    assert!(c["session"]["sdp"].as_str().unwrap().starts_with("v=0\r\n"));
    assert_eq!(h.state(&id), CallState::Offered);
}

#[test]
fn pre_accept_then_identical_accept_activates_and_terminate_reports_duration() {
    let mut h = Harness::new();
    let id = h.user_call();
    h.take_webhooks();
    let body = h.answer(&id, "pre_accept");
    let r = h.calls(body);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({ "messaging_product": "whatsapp", "success": true })
    );
    assert_eq!(h.state(&id), CallState::PreAccepted);
    h.advance(Duration::from_secs(2));
    let body = h.answer(&id, "accept");
    assert_eq!(h.calls(body).status, 200);
    assert_eq!(h.state(&id), CallState::Active);
    let start = h.epoch();
    h.core.handle_business_media(&id, h.now, h.wall);
    h.advance(Duration::from_secs(20));
    h.core.handle_business_media(&id, h.now, h.wall);
    let r = h.calls(
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "terminate" }),
    );
    assert_eq!(r.status, 200);
    let v = h.terminate_webhook();
    let c = &v["calls"][0];
    assert_eq!(c["status"], "COMPLETED");
    assert_eq!(c["start_time"], start.to_string());
    assert_eq!(c["end_time"], (start + 20).to_string());
    assert_eq!(c["duration"], json!(20));
    assert!(c["duration"].is_u64(), "duration is an integer");
    assert_eq!(
        h.core.call(&id).unwrap().end.unwrap().reason,
        EndReason::BusinessTerminated
    );
}

#[test]
fn accept_with_sdp_different_from_pre_accept_is_refused_with_code_100() {
    let mut h = Harness::new();
    let id = h.user_call();
    let body = h.answer(&id, "pre_accept");
    h.calls(body);
    let mut body = h.answer(&id, "accept");
    body["session"]["sdp"] = json!(DOC_ANSWER.replace("X1ho", "Y2ip"));
    let r = h.calls(body);
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], 100);
    assert!(
        r.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("identical")
    );
    assert_eq!(h.state(&id), CallState::PreAccepted);
}

#[test]
fn answer_timeout_terminates_an_unaccepted_call_at_45s_without_duration() {
    let mut h = Harness::new();
    let id = h.user_call();
    h.take_webhooks();
    h.advance(Duration::from_millis(44_900));
    assert_eq!(h.state(&id), CallState::Offered);
    assert!(h.take_webhooks().is_empty());
    h.advance(Duration::from_millis(100));
    assert_eq!(h.state(&id), CallState::Terminated);
    let v = h.terminate_webhook();
    let c = &v["calls"][0];
    assert_eq!(c["status"], "COMPLETED");
    assert!(c.get("duration").is_none() && c.get("start_time").is_none());
    assert_eq!(
        h.core.call(&id).unwrap().end.unwrap().reason,
        EndReason::NotAnswered
    );
}

#[test]
fn answer_timeout_is_configurable() {
    let mut h = Harness::with(|c| c.timing.answer_timeout = Duration::from_secs(30));
    let id = h.user_call();
    h.advance(Duration::from_secs(30));
    assert_eq!(h.state(&id), CallState::Terminated);
}

#[test]
fn reject_ends_an_offered_call_completed_and_later_actions_error() {
    let mut h = Harness::new();
    let id = h.user_call();
    h.take_webhooks();
    let r = h.calls(
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "reject" }),
    );
    assert_eq!(r.status, 200);
    let v = h.terminate_webhook();
    assert_eq!(v["calls"][0]["status"], "COMPLETED");
    for action in ["accept", "terminate", "reject"] {
        let body = h.answer(&id, action);
        let r = h.calls(body);
        assert_eq!(r.status, 400, "{action}");
        assert_eq!(r.body["error"]["code"], 100);
        assert!(
            r.body["error"]["error_data"]["details"]
                .as_str()
                .unwrap()
                .contains("terminated")
        );
    }
    assert!(h.take_webhooks().is_empty(), "no second terminate");
}

#[test]
fn user_hang_up_of_active_call_reports_times_and_stops_peer() {
    let mut h = Harness::new();
    let id = h.user_call();
    let body = h.answer(&id, "accept");
    h.calls(body);
    h.core.handle_business_media(&id, h.now, h.wall);
    h.advance(Duration::from_secs(5));
    let (now, wall) = (h.now, h.wall);
    h.core.user_hangs_up(&id, now, wall).unwrap();
    h.drain();
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, CoreEvent::PeerStop { call_id } if *call_id == id))
    );
    let v = h.terminate_webhook();
    assert_eq!(v["calls"][0]["duration"], json!(5));
    assert!(h.core.user_hangs_up(&id, now, wall).is_err());
}

#[test]
fn scripted_user_hangs_up_after_n_seconds_and_presses_dtmf() {
    let mut h = Harness::with(|c| c.timing.watchdog.enabled = false);
    let mut call = UserCall::new(Harness::user(), Harness::pnid());
    call.hang_up_after = Some(Duration::from_secs(10));
    call.dtmf = vec![DtmfStep {
        after: Duration::from_secs(3),
        digits: "12#".into(),
    }];
    let id = h
        .core
        .user_calls(call, "v=0\r\n".into(), h.now, h.wall)
        .unwrap();
    let body = h.answer(&id, "accept");
    h.calls(body);
    h.advance(Duration::from_secs(3));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, CoreEvent::PeerSendDtmf { digits, .. } if digits == "12#"))
    );
    h.advance(Duration::from_millis(6_900));
    assert_eq!(h.state(&id), CallState::Active);
    h.advance(Duration::from_millis(100));
    assert_eq!(
        h.core.call(&id).unwrap().end.unwrap().reason,
        EndReason::UserHungUp
    );
}

#[test]
fn bad_sdp_on_accept_is_code_100_with_details() {
    let mut h = Harness::new();
    let id = h.user_call();
    let mut body = h.answer(&id, "accept");
    body["session"]["sdp"] = json!(DOC_ANSWER.replace("\r\n", "\n"));
    let r = h.calls(body);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_u64()),
        (400, Some(100))
    );
    assert!(
        r.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("CRLF")
    );
    let mut body = h.answer(&id, "accept");
    body["session"]["sdp_type"] = json!("offer");
    assert_eq!(h.calls(body).body["error"]["code"], 100);
}

#[test]
fn user_calls_refused_without_webhook_when_number_at_concurrency_limit() {
    let mut h = Harness::with(|c| c.numbers[0].max_concurrent_calls = 1);
    h.user_call();
    h.take_webhooks();
    let other = WaId::parse("4915199999999").unwrap();
    let r = h.core.user_calls(
        UserCall::new(other, Harness::pnid()),
        "v=0\r\n".into(),
        h.now,
        h.wall,
    );
    assert!(matches!(r, Err(SimError::CallNotPlaced(_))));
    assert!(h.take_webhooks().is_empty());
}

#[test]
fn one_call_per_pair_refuses_a_second_user_call() {
    let mut h = Harness::new();
    h.user_call();
    let r = h.core.user_calls(
        UserCall::new(Harness::user(), Harness::pnid()),
        "v=0\r\n".into(),
        h.now,
        h.wall,
    );
    assert!(matches!(r, Err(SimError::CallNotPlaced(_))));
}

#[test]
fn callback_permission_on_user_call_grants_temporary_with_wacid_context() {
    let mut h = Harness::with(|c| c.numbers[0].callback_permission = true);
    let id = h.user_call();
    let w = h.take_webhooks();
    assert_eq!(
        w.iter().map(|w| w.label.as_str()).collect::<Vec<_>>(),
        ["connect", "call_permission_reply"]
    );
    let m = &w[1].value["messages"][0];
    assert_eq!(w[1].field, "messages");
    let r = &m["interactive"]["call_permission_reply"];
    assert_eq!(r["response"], "accept");
    assert_eq!(r["is_permanent"], false);
    assert_eq!(r["response_source"], "automatic");
    assert_eq!(
        r["expiration_timestamp"],
        (h.epoch() + 7 * 86_400).to_string()
    );
    assert_eq!(m["context"]["id"], id.as_str());
    assert_eq!(
        h.core
            .permission(&Harness::pnid(), &Harness::user(), h.wall),
        PermissionStatus::Temporary(h.epoch() + 7 * 86_400)
    );
}

// ---- media watchdogs ----

#[test]
fn media_watchdog_fails_call_after_20s_without_business_media_at_start() {
    let mut h = Harness::new();
    let id = h.user_call();
    let body = h.answer(&id, "accept");
    h.calls(body);
    h.take_webhooks();
    h.advance(Duration::from_millis(19_900));
    assert_eq!(h.state(&id), CallState::Active);
    h.advance(Duration::from_millis(100));
    let v = h.terminate_webhook();
    assert_eq!(v["calls"][0]["status"], "FAILED");
    assert_eq!(v["calls"][0]["errors"][0]["code"], 138021);
    assert_eq!(v["errors"][0]["code"], 138021, "errors also at value level");
    assert_eq!(v["calls"][0]["duration"], json!(20));
    let end = h.core.call(&id).unwrap().end.unwrap();
    assert_eq!(
        (end.status, end.error_code),
        (TerminateStatus::Failed, Some(138021))
    );
}

#[test]
fn media_watchdog_fails_call_after_30s_of_silence_mid_call() {
    let mut h = Harness::new();
    permit(&mut h, PermissionGrant::Temporary);
    let id = h.business_call();
    let (now, wall) = (h.now, h.wall);
    h.core.user_answers(&id, now, wall).unwrap();
    for _ in 0..10 {
        h.advance(Duration::from_secs(1));
        h.core.handle_business_media(&id, h.now, h.wall);
    }
    h.advance(Duration::from_millis(29_900));
    assert_eq!(h.state(&id), CallState::Active);
    h.advance(Duration::from_millis(100));
    assert_eq!(
        h.core.call(&id).unwrap().end.unwrap().error_code,
        Some(138021)
    );
}

// ---- business-initiated ----

#[test]
fn business_connect_checks_run_in_reference_order() {
    // Every check fails at once; fix them one by one and watch the code change in §9 order.
    let mut h = Harness::with(|c| {
        c.numbers[0].calling_enabled = false;
        c.numbers[0].display_phone_number = "14085550000".into();
        c.numbers[0].max_concurrent_calls = 0;
        c.limits.connected_calls_per_day = 0;
        c.limits.bic_attempts_per_day = 0;
    });
    let code = |h: &mut Harness| h.connect().body["error"]["code"].as_u64().unwrap();
    assert_eq!(code(&mut h), 138000);
    h.core
        .numbers
        .get_mut(&Harness::pnid())
        .unwrap()
        .cfg
        .calling_enabled = true;
    assert_eq!(code(&mut h), 138013);
    h.core
        .numbers
        .get_mut(&Harness::pnid())
        .unwrap()
        .cfg
        .display_phone_number = "4930901820".into();
    assert_eq!(code(&mut h), 138006);
    permit(&mut h, PermissionGrant::Permanent);
    assert_eq!(code(&mut h), 138012);
    h.core.cfg.limits.connected_calls_per_day = 100;
    h.core.pair(&Harness::pnid(), &Harness::user()).active_call =
        Some(WaCallId::parse("wacid.x").unwrap());
    assert_eq!(code(&mut h), 138003);
    h.core.pair(&Harness::pnid(), &Harness::user()).active_call = None;
    assert_eq!(code(&mut h), 138002);
    h.core
        .numbers
        .get_mut(&Harness::pnid())
        .unwrap()
        .cfg
        .max_concurrent_calls = 1000;
    let r = h.connect();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_u64()),
        (429, Some(138005))
    );
    h.core.cfg.limits.bic_attempts_per_day = 10;
    assert_eq!(h.connect().status, 200);
}

#[test]
fn blocked_business_countries_are_configurable() {
    for (display, blocked) in [
        ("201001234567", true),
        ("84912345678", true),
        ("2348012345678", true),
        ("4930901820", false),
        ("212600000000", false),
    ] {
        let mut h = Harness::with(|c| c.numbers[0].display_phone_number = display.into());
        permit(&mut h, PermissionGrant::Permanent);
        let code = h.connect().body["error"]["code"].as_u64();
        assert_eq!(code == Some(138013), blocked, "{display}");
    }
    let mut h = Harness::with(|c| {
        c.numbers[0].display_phone_number = "14085550000".into();
        c.blocked_bic_country_codes.clear();
    });
    permit(&mut h, PermissionGrant::Permanent);
    assert_eq!(h.connect().status, 200);
}

#[test]
fn business_call_sends_answer_in_connect_then_ringing_accepted_and_completed() {
    let mut h = Harness::with(|c| c.timing.watchdog.enabled = false);
    permit(&mut h, PermissionGrant::Temporary);
    let id = h.business_call();
    let w = h.take_webhooks();
    assert_eq!(
        w.iter().map(|w| w.label.as_str()).collect::<Vec<_>>(),
        ["connect", "RINGING"]
    );
    let c = &w[0].value["calls"][0];
    assert_eq!(c["direction"], "BUSINESS_INITIATED");
    assert_eq!(c["from"], "4930901820");
    assert_eq!(c["to"], USER);
    assert_eq!(c["session"]["sdp_type"], "answer");
    assert_eq!(c["biz_opaque_callback_data"], "ref-1");
    assert!(
        c.get("connection").is_none(),
        "legacy connection.webrtc is not sent"
    );
    let st = &w[1].value["statuses"][0];
    assert_eq!(
        (
            st["type"].as_str(),
            st["status"].as_str(),
            st["recipient_id"].as_str()
        ),
        (Some("call"), Some("RINGING"), Some(USER))
    );
    // Default user picks up after 2 s.
    h.advance(Duration::from_secs(2));
    assert_eq!(h.state(&id), CallState::Active);
    assert_eq!(h.labels(), ["ACCEPTED"]);
    h.advance(Duration::from_secs(7));
    let r = h.calls(
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "terminate" }),
    );
    assert_eq!(r.status, 200);
    let v = h.terminate_webhook();
    assert_eq!(v["calls"][0]["duration"], json!(7));
    assert_eq!(v["calls"][0]["biz_opaque_callback_data"], "ref-1");
}

#[test]
fn business_call_user_rejects_sends_rejected_then_terminate() {
    let mut h = Harness::with(|c| {
        c.default_user.on_business_call = BusinessCallBehaviour::Reject {
            after: Duration::from_secs(3),
        }
    });
    permit(&mut h, PermissionGrant::Temporary);
    let id = h.business_call();
    h.take_webhooks();
    h.advance(Duration::from_secs(3));
    assert_eq!(h.labels(), ["REJECTED", "terminate"]);
    assert_eq!(
        h.core.call(&id).unwrap().end.unwrap().reason,
        EndReason::UserRejected
    );
    assert_eq!(
        h.core
            .consecutive_missed(&Harness::pnid(), &Harness::user()),
        1
    );
}

#[test]
fn business_call_not_answered_ends_at_ring_timeout_without_duration() {
    let mut h = Harness::with(|c| c.default_user.on_business_call = BusinessCallBehaviour::Ignore);
    permit(&mut h, PermissionGrant::Temporary);
    let id = h.business_call();
    h.take_webhooks();
    h.advance(Duration::from_millis(59_900));
    assert_eq!(h.state(&id), CallState::Ringing);
    h.advance(Duration::from_millis(100));
    let v = h.terminate_webhook();
    assert!(v["calls"][0].get("duration").is_none());
    assert_eq!(
        h.core.call(&id).unwrap().end.unwrap().reason,
        EndReason::NoAnswer
    );
}

#[test]
fn business_actions_pre_accept_and_reject_are_refused_on_business_calls() {
    let mut h = Harness::new();
    permit(&mut h, PermissionGrant::Temporary);
    let id = h.business_call();
    let body = h.answer(&id, "pre_accept");
    assert_eq!(h.calls(body).body["error"]["code"], 100);
    let r = h.calls(
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "reject" }),
    );
    assert_eq!(r.body["error"]["code"], 100);
}

#[test]
fn duplicate_pair_call_is_138003_while_first_is_ringing() {
    let mut h = Harness::new();
    permit(&mut h, PermissionGrant::Temporary);
    h.business_call();
    let r = h.connect();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_u64()),
        (400, Some(138003))
    );
}

#[test]
fn peer_failure_ends_business_call_failed_138019() {
    let mut h = Harness::new();
    permit(&mut h, PermissionGrant::Temporary);
    let r = h.connect();
    let id = WaCallId::parse(r.body["calls"][0]["id"].as_str().unwrap()).unwrap();
    h.core
        .handle_peer_answer(&id, Err("no codec".into()), h.now, h.wall);
    let v = h.terminate_webhook();
    assert_eq!(v["calls"][0]["status"], "FAILED");
    assert_eq!(v["calls"][0]["errors"][0]["code"], 138019);
}

#[test]
fn two_missed_business_calls_nudge_and_four_auto_revoke_with_automatic_reject() {
    let mut h = Harness::with(|c| c.default_user.on_business_call = BusinessCallBehaviour::Ignore);
    permit(&mut h, PermissionGrant::Permanent);
    for i in 1..=4 {
        h.business_call();
        h.advance(Duration::from_secs(60));
        let nudged = h
            .events
            .iter()
            .any(|e| matches!(e, CoreEvent::Nudge { .. }));
        assert_eq!(nudged, i >= 2, "nudge after {i}");
        let labels = h.labels();
        assert_eq!(
            labels.contains(&"call_permission_reply".to_owned()),
            i == 4,
            "{labels:?}"
        );
    }
    assert_eq!(
        h.core
            .permission(&Harness::pnid(), &Harness::user(), h.wall),
        PermissionStatus::NoPermission
    );
    assert_eq!(h.connect().body["error"]["code"], 138006);
}

#[test]
fn auto_revoke_reply_is_reject_automatic_without_context() {
    let mut h = Harness::with(|c| {
        c.default_user.on_business_call = BusinessCallBehaviour::Reject {
            after: Duration::ZERO,
        };
        c.limits.revoke_after_missed = 1;
    });
    permit(&mut h, PermissionGrant::Temporary);
    h.business_call();
    h.advance(Duration::from_millis(100));
    let w = h
        .take_webhooks()
        .into_iter()
        .find(|w| w.label == "call_permission_reply")
        .unwrap();
    let m = &w.value["messages"][0];
    assert_eq!(
        m["interactive"]["call_permission_reply"],
        json!({ "response": "reject", "response_source": "automatic" })
    );
    assert!(m.get("context").is_none());
}

#[test]
fn answered_business_call_resets_the_missed_streak() {
    let mut h = Harness::with(|c| c.default_user.on_business_call = BusinessCallBehaviour::Manual);
    permit(&mut h, PermissionGrant::Permanent);
    let id = h.business_call();
    h.advance(Duration::from_secs(60));
    assert_eq!(
        h.core.call(&id).unwrap().end.unwrap().reason,
        EndReason::NoAnswer
    );
    assert_eq!(
        h.core
            .consecutive_missed(&Harness::pnid(), &Harness::user()),
        1
    );
    let id = h.business_call();
    let (now, wall) = (h.now, h.wall);
    h.core.user_answers(&id, now, wall).unwrap();
    assert_eq!(
        h.core
            .consecutive_missed(&Harness::pnid(), &Harness::user()),
        0
    );
}

#[test]
fn daily_connected_call_limit_gives_138012_until_24h_pass() {
    let mut h = Harness::with(|c| {
        c.limits.connected_calls_per_day = 2;
        c.default_user.on_business_call = BusinessCallBehaviour::Answer {
            after: Duration::ZERO,
            hang_up_after: Some(Duration::from_secs(1)),
            dtmf: vec![],
        };
        c.timing.watchdog.enabled = false;
    });
    permit(&mut h, PermissionGrant::Permanent);
    for _ in 0..2 {
        h.business_call();
        h.advance(Duration::from_secs(2));
    }
    let r = h.connect();
    assert_eq!(r.body["error"]["code"], 138012);
    assert!(
        r.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("next call allowed")
    );
    let p = h.get(&format!("/v23.0/{PNID}/call_permissions?user_wa_id={USER}"));
    let start = &p.body["actions"][1];
    assert_eq!(start["action_name"], "start_call");
    assert_eq!(start["can_perform_action"], false);
    assert_eq!(start["limits"][0]["current_usage"], 2);
    assert!(start["limits"][0]["limit_expiration_time"].is_u64());
    h.advance(Duration::from_secs(24 * 3600));
    assert_eq!(h.connect().status, 200);
}

#[test]
fn concurrency_limit_138002_applies_per_number() {
    let mut h = Harness::with(|c| c.numbers[0].max_concurrent_calls = 1);
    permit(&mut h, PermissionGrant::Permanent);
    h.user_call();
    let r = h.connect();
    // The pair is busy first (138003 precedes 138002); use another user.
    assert_eq!(r.body["error"]["code"], 138003);
    let other = WaId::parse("4915100000001").unwrap();
    h.core
        .set_permission(&Harness::pnid(), &other, PermissionGrant::Permanent, h.wall);
    let r = h.calls(
        json!({ "messaging_product": "whatsapp", "to": "+49 151 00000001", "action": "connect",
        "session": { "sdp_type": "offer", "sdp": BIZ_OFFER } }),
    );
    assert_eq!(
        (r.status, r.body["error"]["code"].as_u64()),
        (429, Some(138002))
    );
}

// ---- permissions ----

fn cpr(to: &str) -> Value {
    json!({ "messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "interactive",
        "interactive": { "type": "call_permission_request", "action": { "name": "call_permission_request" },
            "body": { "text": "May we call you?" } } })
}

#[test]
fn permission_request_accepted_temporary_replies_with_wamid_context_and_expiry() {
    let mut h = Harness::new();
    let r = h.graph("POST", &format!("/v23.0/{PNID}/messages"), cpr(USER));
    assert_eq!(r.status, 200);
    let wamid = r.body["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(wamid.starts_with("wamid."));
    assert_eq!(
        r.body["contacts"][0],
        json!({ "input": USER, "wa_id": USER })
    );
    assert_eq!(h.labels(), ["message_status", "message_status"]);
    h.advance(Duration::from_secs(1));
    let w = h.take_webhooks();
    assert_eq!(w.len(), 1);
    let m = &w[0].value["messages"][0];
    assert_eq!(m["context"]["id"], wamid.as_str());
    let reply = &m["interactive"]["call_permission_reply"];
    assert_eq!(reply["response"], "accept");
    assert_eq!(reply["is_permanent"], false);
    assert_eq!(reply["response_source"], "user_action");
    assert_eq!(
        reply["expiration_timestamp"],
        (h.epoch() + 7 * 86_400).to_string()
    );
    let p = h.get(&format!("/v23.0/{PNID}/call_permissions?user_wa_id={USER}"));
    assert_eq!(p.body["permission"]["status"], "temporary");
    assert_eq!(
        p.body["permission"]["expiration_time"],
        json!(h.epoch() + 7 * 86_400)
    );
    // Temporary permission lapses silently after 7 days.
    h.advance(Duration::from_secs(7 * 86_400));
    assert!(h.take_webhooks().is_empty());
    let p = h.get(&format!("/v23.0/{PNID}/call_permissions?user_wa_id={USER}"));
    assert_eq!(p.body["permission"]["status"], "no_permission");
}

#[test]
fn permission_request_decline_and_ignore() {
    let mut h = Harness::with(|c| {
        c.default_user.on_permission_request = PermissionRequestBehaviour::Decline {
            after: Duration::ZERO,
        }
    });
    h.graph("POST", &format!("/v23.0/{PNID}/messages"), cpr(USER));
    h.take_webhooks();
    h.advance(Duration::from_millis(100));
    let w = h.take_webhooks();
    let reply = &w[0].value["messages"][0]["interactive"]["call_permission_reply"];
    assert_eq!(
        reply,
        &json!({ "response": "reject", "response_source": "user_action" })
    );

    let mut h = Harness::with(|c| {
        c.default_user.on_permission_request = PermissionRequestBehaviour::Ignore
    });
    h.graph("POST", &format!("/v23.0/{PNID}/messages"), cpr(USER));
    h.take_webhooks();
    h.advance(Duration::from_secs(3600));
    assert!(h.take_webhooks().is_empty());
}

#[test]
fn permission_requests_limited_1_per_day_2_per_week_and_reset_by_connected_call() {
    let mut h = Harness::with(|c| {
        c.default_user.on_permission_request = PermissionRequestBehaviour::Ignore
    });
    let path = format!("/v23.0/{PNID}/messages");
    assert_eq!(h.graph("POST", &path, cpr(USER)).status, 200);
    let r = h.graph("POST", &path, cpr(USER));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_u64()),
        (400, Some(138009))
    );
    h.advance(Duration::from_secs(24 * 3600));
    assert_eq!(h.graph("POST", &path, cpr(USER)).status, 200);
    h.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        h.graph("POST", &path, cpr(USER)).body["error"]["code"],
        138009,
        "2 per 7 days"
    );
    let p = h.get(&format!("/v23.0/{PNID}/call_permissions?user_wa_id={USER}"));
    assert_eq!(p.body["actions"][0]["can_perform_action"], false);
    assert_eq!(p.body["actions"][0]["limits"][1]["current_usage"], 2);
    // A connected call between the pair resets the counters (§3.6).
    let id = h.user_call();
    let body = h.answer(&id, "accept");
    h.calls(body);
    assert_eq!(h.graph("POST", &path, cpr(USER)).status, 200);
}

#[test]
fn permission_request_with_permanent_permission_is_138017() {
    let mut h = Harness::new();
    permit(&mut h, PermissionGrant::Permanent);
    let r = h.graph("POST", &format!("/v23.0/{PNID}/messages"), cpr(USER));
    assert_eq!(r.body["error"]["code"], 138017);
}

#[test]
fn plain_text_message_gets_a_message_response() {
    let mut h = Harness::new();
    let r = h.graph("POST", &format!("/v23.0/{PNID}/messages"),
        json!({ "messaging_product": "whatsapp", "to": USER, "type": "text", "text": { "body": "hi" } }));
    assert_eq!(r.status, 200);
    assert!(
        r.body["messages"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("wamid.")
    );
}

// ---- Graph plumbing ----

#[test]
fn sip_enabled_number_gets_131055_on_every_calls_action() {
    let mut h = Harness::with(|c| c.numbers[0].sip_enabled = true);
    for action in ["connect", "accept", "terminate"] {
        let r = h.calls(json!({ "messaging_product": "whatsapp", "action": action }));
        assert_eq!(
            (r.status, r.body["error"]["code"].as_u64()),
            (400, Some(131055))
        );
    }
}

#[test]
fn token_version_path_and_body_validation() {
    let mut h = Harness::new();
    let mut req = GraphRequest {
        method: "POST".into(),
        path: format!("/v23.0/{PNID}/calls"),
        query: String::new(),
        authorization: Some("Bearer wrong".into()),
        body: b"{}".to_vec(),
    };
    let r = h.core.handle_graph(&req, h.now, h.wall);
    assert_eq!((r.status, r.error_code), (401, Some(190)));
    req.authorization = None;
    assert_eq!(
        h.core.handle_graph(&req, h.now, h.wall).error_code,
        Some(104)
    );
    for (path, ok) in [
        ("/v17.0/{P}/calls", true),
        ("/v24.1/{P}/calls", true),
        ("/23.0/{P}/calls", false),
        ("/v23/{P}/calls", false),
        ("/v23.0/999/calls", false),
    ] {
        let r = h.graph(
            "POST",
            &path.replace("{P}", PNID),
            json!({ "messaging_product": "whatsapp", "action": "bogus" }),
        );
        let details = r.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(details.contains("Invalid action"), ok, "{path}: {details}");
    }
    let r = h.calls(json!({ "action": "connect" }));
    assert!(
        r.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("messaging_product")
    );
    let req = GraphRequest {
        authorization: Some(format!("Bearer {TOKEN}")),
        body: b"not json".to_vec(),
        ..req
    };
    assert_eq!(
        h.core.handle_graph(&req, h.now, h.wall).error_code,
        Some(100)
    );
    let r = h.calls(
        json!({ "messaging_product": "whatsapp", "call_id": "wacid.nope", "action": "accept" }),
    );
    assert!(
        r.body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("call_id")
    );
    let r = h.calls(
        json!({ "messaging_product": "whatsapp", "to": USER, "action": "connect",
        "connection": { "webrtc": { "sdp": "{}" } } }),
    );
    assert_eq!(r.body["error"]["code"], 100);
    assert_eq!(r.action.as_deref(), Some("connect"));
}

#[test]
fn settings_post_validates_merges_and_notifies_on_calling_status() {
    let mut h = Harness::new();
    let path = format!("/v23.0/{PNID}/settings");
    let r = h.graph(
        "POST",
        &path,
        json!({ "calling": { "status": "DISABLED", "callback_permission_status": "ENABLED" } }),
    );
    assert_eq!((r.status, &r.body), (200, &json!({ "success": true })));
    let w = h.take_webhooks();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].field, "account_settings_update");
    assert_eq!(
        w[0].value["phone_number_settings"]["calling"]["status"],
        "DISABLED"
    );
    permit(&mut h, PermissionGrant::Permanent);
    assert_eq!(h.connect().body["error"]["code"], 138000);
    let r = h.get(&path);
    assert_eq!(r.body["calling"]["callback_permission_status"], "ENABLED");
    // Call hours alone do not notify.
    let r = h.graph(
        "POST",
        &path,
        json!({ "calling": { "call_hours": { "status": "DISABLED" } } }),
    );
    assert_eq!(r.status, 200);
    assert!(h.take_webhooks().is_empty());
    let r = h.graph(
        "POST",
        &path,
        json!({ "calling": { "call_icon_visibility": "SOMETIMES" } }),
    );
    assert_eq!(r.body["error"]["code"], 100);
    // SIP mode switch: servers get the app id and default port; Graph calling then 131055.
    let r = h.graph("POST", &path, json!({ "calling": { "status": "ENABLED", "sip": { "status": "ENABLED", "servers": [ { "hostname": "pbx.example.com" } ] } } }));
    assert_eq!(r.status, 200);
    let r = h.get(&format!("{path}?include_sip_credentials=true"));
    let server = &r.body["calling"]["sip"]["servers"][0];
    assert_eq!(server["port"], 5061);
    assert!(server["app_id"].is_u64());
    assert!(server["sip_user_password"].is_string());
    assert_eq!(h.connect().body["error"]["code"], 131055);
}

#[test]
fn enabling_calling_needs_messaging_limit_and_calls_subscription() {
    let mut h = Harness::with(|c| c.numbers[0].messaging_limit = 1000);
    let path = format!("/v23.0/{PNID}/settings");
    assert_eq!(
        h.graph("POST", &path, json!({ "calling": { "status": "ENABLED" } }))
            .body["error"]["code"],
        138015
    );
    let mut h = Harness::with(|c| c.numbers[0].calls_subscribed = false);
    assert_eq!(
        h.graph("POST", &path, json!({ "calling": { "status": "ENABLED" } }))
            .body["error"]["code"],
        138018
    );
}

#[test]
fn terminated_calls_are_evicted_beyond_the_bound() {
    let mut h = Harness::with(|c| c.max_terminated_calls_kept = 3);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = h.user_call();
        let (now, wall) = (h.now, h.wall);
        h.core.user_hangs_up(&id, now, wall).unwrap();
        ids.push(id);
    }
    assert!(h.core.call(&ids[0]).is_none());
    assert!(h.core.call(&ids[4]).is_some());
    assert_eq!(h.core.calls().len(), 3);
    assert_eq!(h.core.timer_count(), 0);
}

// ---- golden shapes from the reference ----

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn webhook_payloads_have_the_reference_key_sets_and_types() {
    // §1.3 (live capture), §1.5, §1.6, §3.4.
    let ref_connect = json!({ "id": "wacid.x", "from": "1", "to": "2", "event": "connect", "timestamp": "1",
        "direction": "USER_INITIATED", "session": { "sdp_type": "offer", "sdp": "v=0" } });
    let ref_status = json!({ "id": "wacid.x", "timestamp": "1", "type": "call", "status": "RINGING",
        "recipient_id": "1", "biz_opaque_callback_data": "random_string" });
    let ref_terminate = json!({ "id": "wacid.x", "from": "1", "to": "2", "event": "terminate", "timestamp": "1",
        "direction": "USER_INITIATED", "start_time": "1", "end_time": "2", "duration": 20, "status": "FAILED",
        "errors": [{ "code": 138021, "title": "t", "message": "t", "error_data": { "details": "d" } }] });
    let ref_value_keys = ["calls", "contacts", "messaging_product", "metadata"];

    let mut h = Harness::new();
    let id = h.user_call();
    let body = h.answer(&id, "accept");
    h.calls(body);
    h.advance(Duration::from_secs(20));
    let w = h.take_webhooks();
    let connect = &w[0].value;
    assert_eq!(keys(connect), ref_value_keys);
    assert_eq!(keys(&connect["calls"][0]), keys(&ref_connect));
    assert_eq!(
        keys(&connect["metadata"]),
        ["display_phone_number", "phone_number_id"]
    );
    assert_eq!(keys(&connect["contacts"][0]), ["profile", "wa_id"]);
    let term = &w[1].value;
    assert_eq!(keys(&term["calls"][0]), keys(&ref_terminate));
    assert_eq!(
        keys(&term["calls"][0]["errors"][0]),
        keys(&ref_terminate["errors"][0])
    );
    for k in ["timestamp", "start_time", "end_time"] {
        assert!(term["calls"][0][k].is_string(), "{k} is a string");
    }
    assert!(term["calls"][0]["duration"].is_u64());

    let mut h = Harness::new();
    permit(&mut h, PermissionGrant::Temporary);
    h.business_call();
    let ringing = h
        .take_webhooks()
        .into_iter()
        .find(|w| w.label == "RINGING")
        .unwrap();
    assert_eq!(keys(&ringing.value["statuses"][0]), keys(&ref_status));

    let ref_reply = json!({ "from": "1", "id": "wamid.x", "timestamp": "1", "context": { "from": "1", "id": "wamid.y" },
        "type": "interactive", "interactive": { "type": "call_permission_reply", "call_permission_reply": {
            "response": "accept", "is_permanent": false, "expiration_timestamp": "1", "response_source": "user_action" } } });
    let mut h = Harness::new();
    h.graph("POST", &format!("/v23.0/{PNID}/messages"), cpr(USER));
    h.take_webhooks();
    h.advance(Duration::from_secs(1));
    let m = &h.take_webhooks()[0].value["messages"][0];
    assert_eq!(keys(m), keys(&ref_reply));
    assert_eq!(
        keys(&m["interactive"]["call_permission_reply"]),
        keys(&ref_reply["interactive"]["call_permission_reply"])
    );
    assert!(m["interactive"]["call_permission_reply"]["expiration_timestamp"].is_string());
}

#[test]
fn envelope_wraps_changes_per_waba_in_order() {
    let mut h = Harness::new();
    let id = h.user_call();
    let (now, wall) = (h.now, h.wall);
    h.core.user_hangs_up(&id, now, wall).unwrap();
    let w = h.take_webhooks();
    let env = envelope(&w);
    assert_eq!(env["object"], "whatsapp_business_account");
    assert_eq!(env["entry"].as_array().unwrap().len(), 1);
    assert_eq!(env["entry"][0]["id"], "102290129340398");
    let changes = env["entry"][0]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["field"], "calls");
    assert_eq!(changes[1]["value"]["calls"][0]["event"], "terminate");
}

// ---- robustness ----

#[test]
fn graph_handler_never_panics_on_garbage() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut h = Harness::new();
    let id = h.user_call();
    let pieces: [&[u8]; 12] = [
        b"{",
        b"}",
        b"\"messaging_product\":\"whatsapp\"",
        b",",
        b"\"action\":\"accept\"",
        b"\"session\":",
        b"{\"sdp_type\":\"answer\",\"sdp\":\"v=0\\r\\nm=audio\\r\\n\"}",
        b"\"call_id\":",
        id.as_str().as_bytes(),
        b"\xff\xfe",
        b"\"to\":\"+1\"",
        b"[null,1e999]",
    ];
    let paths = [
        "/v23.0/106540352242922/calls",
        "/v1.0/106540352242922/settings",
        "/",
        "//",
        "/v9999.9999/1/calls/x",
        "/v23.0/106540352242922/messages",
        "/v23.0/106540352242922/call_permissions",
        "/v\u{e9}.0/\u{1f600}/calls",
    ];
    for _ in 0..5_000 {
        let mut body = Vec::new();
        for _ in 0..rng.random_range(0..12) {
            body.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
        }
        let req = GraphRequest {
            method: ["GET", "POST", "DELETE"][rng.random_range(0..3)].into(),
            path: paths[rng.random_range(0..paths.len())].into(),
            query: [
                "",
                "user_wa_id=",
                "user_wa_id=%zz%4",
                "include_sip_credentials=true&%",
            ][rng.random_range(0..4)]
            .into(),
            authorization: Some(format!("Bearer {TOKEN}")),
            body,
        };
        let r = h.core.handle_graph(&req, h.now, h.wall);
        assert!(r.status == 200 || r.body["error"]["code"].is_u64());
    }
    for _ in 0..2_000 {
        let sdp: String = (0..rng.random_range(0..200))
            .map(|_| char::from(rng.random_range(0u8..128)))
            .collect();
        let _ = crate::sdp::validate_business_sdp(&sdp, SdpRole::Answer, KeyExchange::Dtls);
        let _ = settings::validate_calling(
            &json!({ "call_hours": { "status": "ENABLED", "weekly_operating_hours": [
            { "day_of_week": "MONDAY", "open_time": sdp.chars().take(5).collect::<String>(), "close_time": "2359" }],
            "holiday_schedule": [{ "date": sdp.chars().take(10).collect::<String>(), "start_time": "0000", "end_time": "0100" }] } }),
            (2026, 1, 1),
        );
    }
}

#[test]
fn pairs_without_state_are_swept_so_lookups_stay_bounded() {
    let mut h = Harness::new();
    permit(&mut h, PermissionGrant::Permanent);
    for i in 0..5_000u32 {
        h.get(&format!(
            "/v23.0/{PNID}/call_permissions?user_wa_id=49170{i:08}"
        ));
    }
    assert!(h.core.pair_count() < 1_100, "{}", h.core.pair_count());
    assert_eq!(
        h.core
            .permission(&Harness::pnid(), &Harness::user(), h.wall),
        PermissionStatus::Permanent,
        "pairs with state are kept"
    );
}
