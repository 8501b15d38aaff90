//! Loopback HTTP tests: Graph endpoints, signed webhook delivery to a receiver that checks
//! signatures independently, retries and fault injection.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use whatsip_sim::core::{BusinessCallBehaviour, CallState, EndReason, PermissionGrant, UserCall};
use whatsip_sim::{
    Batching, FaultAction, FaultRule, GraphFault, GraphFaultRule, PhoneNumberId, SimConfig,
    SimHandle, Simulator, WaCallId, WaId, WebhookConfig, WebhookMatch,
};

const SECRET: &str = "app-secret-for-tests";
const TOKEN: &str = "graph-token";
const PNID: &str = "106540352242922";
const USER: &str = "4915112345678";
const WAIT: Duration = Duration::from_secs(20);

const BIZ_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:126 telephone-event/8000\r\n";
const BIZ_ANSWER: &str = "v=0\r\no=- 2822644248144643933 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:X1ho\r\na=ice-pwd:7fJSbV2N5qWiA5QiDKwK3vuh\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:active\r\na=mid:audio\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:126 telephone-event/8000\r\n";

/// A webhook receiver that verifies `X-Hub-Signature-256` itself and can fail on demand.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    fail_next: Arc<AtomicU32>,
}

#[derive(Clone, Debug)]
struct Received {
    body: Value,
    raw: Vec<u8>,
    signature_ok: bool,
    answered: u16,
}

impl Received {
    /// `(label, call id)` of every change: the call event, status or message type.
    fn labels(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.body["entry"].as_array().unwrap() {
            for c in e["changes"].as_array().unwrap() {
                let v = &c["value"];
                if let Some(call) = v["calls"].get(0) {
                    out.push(call["event"].as_str().unwrap().to_owned());
                } else if let Some(st) = v["statuses"].get(0) {
                    out.push(st["status"].as_str().unwrap().to_owned());
                } else if let Some(m) = v["messages"].get(0) {
                    out.push(
                        m["interactive"]["type"]
                            .as_str()
                            .unwrap_or("message")
                            .to_owned(),
                    );
                } else {
                    out.push(c["field"].as_str().unwrap().to_owned());
                }
            }
        }
        out
    }
}

fn verify(sig: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&raw).is_ok()
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature_ok = verify(sig, &body);
    let failing = r
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answered = if !signature_ok {
        StatusCode::UNAUTHORIZED
    } else if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    r.got.lock().unwrap().push(Received {
        body: serde_json::from_slice(&body).unwrap(),
        raw: body.to_vec(),
        signature_ok,
        answered: answered.as_u16(),
    });
    answered
}

async fn verify_handshake(
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, String) {
    let ok = q.get("hub.mode").map(String::as_str) == Some("subscribe")
        && q.get("hub.verify_token").map(String::as_str) == Some("verify-me");
    match (ok, q.get("hub.challenge")) {
        (true, Some(c)) => (StatusCode::OK, c.clone()),
        _ => (StatusCode::FORBIDDEN, String::new()),
    }
}

impl Receiver {
    async fn start() -> (Self, String) {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/webhook", post(receive).get(verify_handshake))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn accepted_labels(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|r| r.answered == 200)
            .flat_map(|r| r.labels())
            .collect()
    }

    async fn wait_until(&self, what: &str, pred: impl Fn(&[Received]) -> bool) {
        for _ in 0..400 {
            if pred(&self.all()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}; got {:?}",
            self.all().iter().map(Received::labels).collect::<Vec<_>>()
        );
    }
}

async fn start(f: impl FnOnce(&mut SimConfig)) -> (SimHandle, Receiver) {
    let (rx, url) = Receiver::start().await;
    let mut cfg = SimConfig {
        webhook: WebhookConfig {
            url: Some(url),
            app_secret: SECRET.into(),
            retry_backoff: Duration::from_millis(20),
            max_attempts: 4,
            ..WebhookConfig::default()
        },
        ..SimConfig::default()
    };
    cfg.core.access_tokens = vec![TOKEN.into()];
    cfg.core.timing.watchdog.enabled = false;
    f(&mut cfg);
    (Simulator::start(cfg).await.unwrap(), rx)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post_calls(sim: &SimHandle, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v23.0/{PNID}/calls", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn pnid() -> PhoneNumberId {
    PhoneNumberId::parse(PNID).unwrap()
}

fn user() -> WaId {
    WaId::parse(USER).unwrap()
}

#[tokio::test]
async fn graph_errors_have_meta_shape_status_and_are_recorded() {
    let (sim, _rx) = start(|_| {}).await;
    let r = client()
        .post(format!("{}/v21.0/{PNID}/calls", sim.base_url()))
        .bearer_auth("nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 190);
    assert_eq!(body["error"]["type"], "OAuthException");
    assert!(body["error"]["fbtrace_id"].is_string());

    let (status, body) = post_calls(
        &sim,
        json!({ "messaging_product": "whatsapp", "action": "hold", "call_id": "wacid.x" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 100);
    assert!(
        body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("Invalid action")
    );

    let (status, body) = post_calls(
        &sim,
        json!({ "messaging_product": "whatsapp", "action": "connect", "to": USER,
        "session": { "sdp_type": "offer", "sdp": BIZ_OFFER } }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_u64()),
        (401, Some(138006))
    );

    let reqs = sim.graph_requests();
    assert_eq!(reqs.len(), 3);
    assert!(!reqs[0].had_authorization || reqs[0].error_code == Some(190));
    assert_eq!(reqs[1].action.as_deref(), Some("hold"));
    assert!(reqs[2].is_call_action("connect"));
    assert_eq!(reqs[2].error_code, Some(138006));
    assert_eq!(reqs[2].body["to"], USER);
    sim.shutdown().await;
}

#[tokio::test]
async fn user_call_webhook_is_signed_and_accept_flow_reaches_active() {
    let (sim, rx) = start(|_| {}).await;
    let id = sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    rx.wait_until("connect", |g| !g.is_empty()).await;
    let got = rx.all();
    assert!(
        got[0].signature_ok,
        "signature verifies with the app secret"
    );
    let call = &got[0].body["entry"][0]["changes"][0]["value"]["calls"][0];
    assert_eq!(call["id"], id.as_str());
    let offer = call["session"]["sdp"].as_str().unwrap();
    assert!(offer.contains("a=ice-lite\r\n") && offer.contains("cname:WhatsAppAudioStream1"));
    // The offer announces the phone's real bound port.
    let port: u16 = offer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
        "port is bound by the peer"
    );

    for action in ["pre_accept", "accept"] {
        let (status, body) = post_calls(
            &sim,
            json!({ "messaging_product": "whatsapp", "call_id": id.as_str(),
            "action": action, "session": { "sdp_type": "answer", "sdp": BIZ_ANSWER } }),
        )
        .await;
        assert_eq!(
            (status, body),
            (
                200,
                json!({ "messaging_product": "whatsapp", "success": true })
            )
        );
    }
    sim.wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .unwrap();
    sim.user_hangs_up(&id).await.unwrap();
    let end = sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_eq!(end.end.unwrap().reason, EndReason::UserHungUp);
    rx.wait_until("terminate", |g| {
        g.iter().any(|r| r.labels() == ["terminate"])
    })
    .await;
    let t = rx
        .all()
        .into_iter()
        .find(|r| r.labels() == ["terminate"])
        .unwrap();
    let c = &t.body["entry"][0]["changes"][0]["value"]["calls"][0];
    assert_eq!(c["status"], "COMPLETED");
    assert!(c["duration"].is_u64());
    assert!(c["start_time"].is_string() && c["end_time"].is_string());
    // Nothing else was sent by the gateway stand-in.
    assert!(
        !sim.graph_requests()
            .iter()
            .any(|r| r.is_call_action("terminate"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn business_call_over_http_rings_is_accepted_and_terminates_with_duration() {
    let (sim, rx) = start(|c| {
        c.core.default_user.on_business_call = BusinessCallBehaviour::Answer {
            after: Duration::from_millis(200),
            hang_up_after: None,
            dtmf: vec![],
        };
    })
    .await;
    sim.set_permission(&pnid(), &user(), PermissionGrant::Temporary)
        .await
        .unwrap();
    let (status, body) = post_calls(&sim, json!({ "messaging_product": "whatsapp", "to": USER, "action": "connect",
        "session": { "sdp_type": "offer", "sdp": BIZ_OFFER }, "biz_opaque_callback_data": "order-7" })).await;
    assert_eq!(status, 200, "{body}");
    let id = WaCallId::parse(body["calls"][0]["id"].as_str().unwrap()).unwrap();
    sim.wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .unwrap();
    rx.wait_until("ACCEPTED", |g| g.iter().any(|r| r.labels() == ["ACCEPTED"]))
        .await;
    assert_eq!(rx.accepted_labels(), ["connect", "RINGING", "ACCEPTED"]);
    let connect = &rx.all()[0].body["entry"][0]["changes"][0]["value"]["calls"][0];
    assert_eq!(connect["session"]["sdp_type"], "answer");
    assert!(
        connect["session"]["sdp"]
            .as_str()
            .unwrap()
            .contains("a=setup:active\r\n")
    );
    assert_eq!(connect["biz_opaque_callback_data"], "order-7");
    let (status, _) = post_calls(
        &sim,
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "terminate" }),
    )
    .await;
    assert_eq!(status, 200);
    rx.wait_until("terminate", |g| {
        g.iter().any(|r| r.labels() == ["terminate"])
    })
    .await;
    let (status, body) = post_calls(
        &sim,
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "terminate" }),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(100)));
    sim.shutdown().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_body_until_200() {
    let (sim, rx) = start(|_| {}).await;
    rx.fail_next.store(2, Ordering::SeqCst);
    sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    rx.wait_until("3 attempts", |g| g.len() >= 3).await;
    let got = rx.all();
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(
        got.iter().all(|r| r.raw == got[0].raw),
        "retries resend the exact body"
    );
    let recs = sim
        .wait_for_webhook(WAIT, |w| w.attempt == 3 && w.is_ok())
        .await
        .unwrap();
    assert_eq!(recs.labels, ["connect"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn retries_are_bounded_by_max_attempts() {
    let (sim, rx) = start(|_| {}).await;
    rx.fail_next.store(100, Ordering::SeqCst);
    sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    sim.wait_for_webhook(WAIT, |w| w.attempt == 4)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.all().len(), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn duplicate_fault_delivers_the_same_webhook_twice() {
    let (sim, rx) = start(|c| {
        c.faults.rules.push(FaultRule {
            matches: WebhookMatch::Label("connect".into()),
            action: FaultAction::Duplicate,
            times: Some(1),
        });
    })
    .await;
    sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    rx.wait_until("two connects", |g| g.len() >= 2).await;
    let got = rx.all();
    assert_eq!(got[0].raw, got[1].raw);
    assert!(got.iter().all(|r| r.signature_ok));
    assert_eq!(sim.faults().rules[0].times, Some(0));
    sim.shutdown().await;
}

#[tokio::test]
async fn hold_fault_delivers_terminate_before_connect() {
    let (sim, rx) = start(|c| {
        c.faults.rules.push(FaultRule {
            matches: WebhookMatch::Label("connect".into()),
            action: FaultAction::HoldUntilNext {
                max: Some(Duration::from_secs(30)),
            },
            times: None,
        });
    })
    .await;
    let id = sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.all().is_empty(), "connect is held");
    sim.user_hangs_up(&id).await.unwrap();
    rx.wait_until("both", |g| g.len() >= 2).await;
    assert_eq!(rx.accepted_labels(), ["terminate", "connect"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn delay_fault_lets_later_webhooks_overtake() {
    let (sim, rx) = start(|c| {
        c.faults.rules.push(FaultRule {
            matches: WebhookMatch::Label("connect".into()),
            action: FaultAction::Delay {
                delay: Duration::from_millis(700),
            },
            times: None,
        });
    })
    .await;
    let id = sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    sim.user_hangs_up(&id).await.unwrap();
    rx.wait_until("both", |g| g.len() >= 2).await;
    assert_eq!(rx.accepted_labels(), ["terminate", "connect"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_fault_fails_verification_at_the_receiver() {
    let (sim, rx) = start(|c| {
        c.webhook.max_attempts = 1;
        c.faults.rules.push(FaultRule {
            matches: WebhookMatch::Any,
            action: FaultAction::WrongSecret,
            times: Some(1),
        });
    })
    .await;
    let id = sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    sim.user_hangs_up(&id).await.unwrap();
    rx.wait_until("two", |g| g.len() >= 2).await;
    let got = rx.all();
    assert!(!got[0].signature_ok && got[0].answered == 401);
    assert!(got[1].signature_ok);
    let recs = sim.webhooks();
    assert!(recs[0].wrong_secret && !recs[1].wrong_secret);
    sim.shutdown().await;
}

#[tokio::test]
async fn batching_puts_several_changes_in_one_post() {
    let (sim, rx) = start(|c| {
        c.faults.batch = Some(Batching {
            max_changes: 2,
            window: Duration::from_secs(30),
        });
    })
    .await;
    let id = sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    sim.user_hangs_up(&id).await.unwrap();
    rx.wait_until("one post", |g| !g.is_empty()).await;
    let got = rx.all();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels(), ["connect", "terminate"]);
    assert!(got[0].signature_ok);
    sim.shutdown().await;
}

#[tokio::test]
async fn permission_request_over_http_gets_reply_webhook_on_messages() {
    let (sim, rx) = start(|c| {
        c.core.default_user.on_permission_request =
            whatsip_sim::core::PermissionRequestBehaviour::AcceptPermanent {
                after: Duration::ZERO,
            };
    })
    .await;
    let r = client()
        .post(format!("{}/v23.0/{PNID}/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&json!({ "messaging_product": "whatsapp", "recipient_type": "individual", "to": USER, "type": "interactive",
            "interactive": { "type": "call_permission_request", "action": { "name": "call_permission_request" } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    let wamid = body["messages"][0]["id"].as_str().unwrap().to_owned();
    rx.wait_until("reply", |g| {
        g.iter().any(|r| r.labels() == ["call_permission_reply"])
    })
    .await;
    let reply = rx
        .all()
        .into_iter()
        .find(|r| r.labels() == ["call_permission_reply"])
        .unwrap();
    let change = &reply.body["entry"][0]["changes"][0];
    assert_eq!(change["field"], "messages");
    assert_eq!(
        change["value"]["messages"][0]["context"]["id"],
        wamid.as_str()
    );
    assert_eq!(
        change["value"]["messages"][0]["interactive"]["call_permission_reply"]["is_permanent"],
        true
    );
    let r = client()
        .get(format!(
            "{}/v23.0/{PNID}/call_permissions?user_wa_id={USER}",
            sim.base_url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["permission"]["status"], "permanent");
    sim.shutdown().await;
}

#[tokio::test]
async fn control_api_places_a_user_call_and_hangs_up() {
    let (sim, rx) = start(|_| {}).await;
    let c = client();
    let r: Value = c
        .post(format!("{}/_sim/calls", sim.base_url()))
        .json(&json!({ "from": "+49 151 12345678", "to": "4930901820", "give_up_after_s": 30 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["call_id"].as_str().unwrap().to_owned();
    let r = c
        .post(format!("{}/_sim/calls/{id}/hangup", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    rx.wait_until("terminate", |g| g.len() >= 2).await;
    let info: Value = c
        .get(format!("{}/_sim/calls/{id}", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["state"], "TERMINATED");
    let r = c
        .post(format!("{}/_sim/calls/{id}/hangup", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    sim.shutdown().await;
}

#[tokio::test]
async fn graph_body_that_is_not_json_is_code_100_not_a_crash() {
    let (sim, _rx) = start(|_| {}).await;
    let r = client()
        .post(format!("{}/v23.0/{PNID}/calls", sim.base_url()))
        .bearer_auth(TOKEN)
        .body(vec![0xff, 0xfe, b'{'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 100);
    sim.shutdown().await;
}

#[tokio::test]
async fn webhook_bytes_follow_meta_key_order() {
    let (sim, rx) = start(|_| {}).await;
    sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    rx.wait_until("connect", |g| !g.is_empty()).await;
    let raw = String::from_utf8(rx.all()[0].raw.clone()).unwrap();
    assert!(
        raw.starts_with("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"),
        "{raw}"
    );
    let pos = |k: &str| raw.find(k).unwrap_or_else(|| panic!("{k} missing"));
    assert!(pos("\"messaging_product\"") < pos("\"metadata\""));
    assert!(pos("\"metadata\"") < pos("\"contacts\""));
    assert!(pos("\"contacts\"") < pos("\"calls\":["));
    assert!(pos("\"from\"") < pos("\"event\""));
    assert!(pos("\"event\"") < pos("\"timestamp\""));
    assert!(pos("\"direction\"") < pos("\"session\""));
    sim.shutdown().await;
}

#[tokio::test]
async fn graph_faults_inject_errors_delays_and_silence() {
    let (sim, _rx) = start(|c| {
        c.faults.graph = vec![
            GraphFaultRule {
                endpoint: Some("calls".into()),
                action: Some("accept".into()),
                fault: GraphFault::Error { code: 138004 },
                times: Some(1),
            },
            GraphFaultRule {
                endpoint: Some("calls".into()),
                action: Some("pre_accept".into()),
                fault: GraphFault::NoResponse,
                times: Some(1),
            },
            GraphFaultRule {
                endpoint: Some("calls".into()),
                action: Some("reject".into()),
                fault: GraphFault::Delay {
                    delay: Duration::from_millis(300),
                },
                times: None,
            },
        ];
    })
    .await;
    let id = sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    let answer = |action: &str| {
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": action,
        "session": { "sdp_type": "answer", "sdp": BIZ_ANSWER } })
    };
    // Error: not applied, Meta's 500 body.
    let (status, body) = post_calls(&sim, answer("accept")).await;
    assert_eq!(
        (status, body["error"]["code"].as_u64()),
        (500, Some(138004))
    );
    assert_eq!(sim.call(&id).unwrap().state, CallState::Offered);
    // Silence: the client times out, nothing applied.
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(format!("{}/v23.0/{PNID}/calls", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&answer("pre_accept"))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(sim.call(&id).unwrap().state, CallState::Offered);
    // Delay: applied at once, answered late.
    let (status, _) = post_calls(
        &sim,
        json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "reject" }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.call(&id).unwrap().state, CallState::Terminated);
    let recs = sim.graph_requests();
    assert_eq!(
        recs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 0, 200]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn pad_fault_makes_an_oversized_body_with_an_unknown_field() {
    let (sim, rx) = start(|c| {
        c.webhook.max_attempts = 1;
        c.faults.rules.push(FaultRule {
            matches: WebhookMatch::Label("connect".into()),
            action: FaultAction::Pad { bytes: 1_500_000 },
            times: Some(1),
        });
    })
    .await;
    sim.user_calls(UserCall::new(user(), pnid())).await.unwrap();
    rx.wait_until("padded", |g| !g.is_empty()).await;
    let got = &rx.all()[0];
    assert!(got.raw.len() > 1_500_000);
    assert!(got.signature_ok);
    assert!(got.body["entry"][0]["changes"][0]["value"]["whatsip_padding"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn verification_handshake_sends_challenge_and_token() {
    let (sim, _rx) = start(|_| {}).await;
    let ok = sim.verify_webhook("verify-me").await.unwrap();
    assert!(ok.verified, "{ok:?}");
    assert_eq!(ok.body, ok.challenge);
    let bad = sim.verify_webhook("wrong").await.unwrap();
    assert!(!bad.verified);
    assert_eq!(bad.status, 403);
    sim.shutdown().await;
}
