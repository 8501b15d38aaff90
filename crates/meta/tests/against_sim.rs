//! whatsip-meta driven against whatsip-sim over loopback HTTP: the simulator builds Meta's
//! JSON and signatures independently, so these tests check the two against each other.
//! Covered: both call directions end to end, duplicate and out-of-order webhooks, wrong
//! signatures, oversized bodies, Graph errors mapped to the typed enum, and a simulator that
//! stopped answering. Every wait is bounded.

#![cfg(feature = "rt")]
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::mpsc;
use whatsip_meta::graph::PermissionStatus;
use whatsip_meta::rt::{
    GraphClient, GraphClientConfig, WebhookServer, WebhookServerConfig, WebhookStats,
};
use whatsip_meta::side::{SideEvent, WhatsAppSide};
use whatsip_meta::{
    AccessToken, AppSecret, CallDirection, CallStatusKind, Event, GraphError, MetaErrorCode,
    PermissionResponse, PhoneNumberId, ReplyTo, SdpType, TerminateStatus, VerifyToken, WaCallId,
    WaId, WebhookEvent,
};
use whatsip_sim::core::{BusinessNumber, PermissionGrant, UserCall};
use whatsip_sim::{
    FaultAction, FaultRule, Faults, GraphFault, GraphFaultRule, SimConfig, SimHandle, Simulator,
    WebhookMatch,
};

const SECRET: &str = "sim-app-secret";
const WAIT: Duration = Duration::from_secs(30);
const PNID: &str = "106540352242922";
const USER: &str = "4915112345678";

const ANSWER: &str = "v=0\r\no=- 2822644248144643933 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:X1ho\r\na=ice-pwd:7fJSbV2N5qWiA5QiDKwK3vuh\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:active\r\na=mid:audio\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:330833028 cname:EDc1JutBl8rwHQc2\r\n";
const OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Ab12\r\na=ice-pwd:Cd34Ef56Gh78Ij90Kl12Mn34\r\na=ice-options:trickle\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:1001 cname:whatsip\r\n";

struct Bench {
    sim: SimHandle,
    server: WebhookServer,
    events: mpsc::Receiver<WebhookEvent>,
    graph: GraphClient,
}

async fn bench(server_config: WebhookServerConfig, tweak: impl FnOnce(&mut SimConfig)) -> Bench {
    let server_config = WebhookServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..server_config
    };
    let (server, events) =
        WebhookServer::bind(server_config, AppSecret::new(SECRET), VerifyToken::new("v"))
            .await
            .unwrap();
    let mut cfg = SimConfig::default();
    cfg.webhook.url = Some(format!("http://{}/webhook", server.local_addr()));
    cfg.webhook.app_secret = SECRET.into();
    cfg.webhook.retry_backoff = Duration::from_millis(100);
    // No media flows in these signalling tests.
    cfg.core.timing.watchdog.enabled = false;
    tweak(&mut cfg);
    let sim = Simulator::start(cfg).await.unwrap();
    let graph = GraphClient::new(
        GraphClientConfig {
            base_url: sim.base_url(),
            request_timeout: Duration::from_secs(10),
            ..GraphClientConfig::default()
        },
        AccessToken::new("sim-token"),
    )
    .unwrap();
    Bench {
        sim,
        server,
        events,
        graph,
    }
}

fn pnid() -> PhoneNumberId {
    PhoneNumberId::parse(PNID).unwrap()
}

fn user() -> WaId {
    WaId::parse(USER).unwrap()
}

fn sim_pnid() -> whatsip_sim::PhoneNumberId {
    whatsip_sim::PhoneNumberId::parse(PNID).unwrap()
}

fn sim_user() -> whatsip_sim::WaId {
    whatsip_sim::WaId::parse(USER).unwrap()
}

fn sim_id(id: &WaCallId) -> whatsip_sim::WaCallId {
    whatsip_sim::WaCallId::parse(id.as_str()).unwrap()
}

async fn next(events: &mut mpsc::Receiver<WebhookEvent>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("webhook within the bound")
        .expect("server running")
        .event
}

/// Waits (bounded) until a counter reaches `want`.
async fn counter_reaches(counter: &AtomicU64, want: u64) {
    for _ in 0..300 {
        if WebhookStats::get(counter) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("counter stayed at {} < {want}", WebhookStats::get(counter));
}

#[tokio::test]
async fn user_initiated_call_end_to_end() {
    let mut b = bench(WebhookServerConfig::default(), |_| {}).await;
    let mut call = UserCall::new(sim_user(), sim_pnid());
    call.cta_payload = Some("support".into());
    let sim_call = b.sim.user_calls(call).await.unwrap();

    let ev = next(&mut b.events).await;
    let Event::Connect(c) = &ev else {
        panic!("{ev:?}")
    };
    assert_eq!(c.call_id.as_str(), sim_call.as_str());
    assert_eq!(c.direction, CallDirection::UserInitiated);
    assert_eq!(c.session.sdp_type, SdpType::Offer);
    assert!(c.session.sdp.starts_with("v=0\r\n") && c.session.sdp.contains("opus/48000/2"));
    assert_eq!(c.from.as_str(), USER);
    assert_eq!(c.cta_payload.as_deref(), Some("support"));
    let Some(SideEvent::Offered { call_id, .. }) = SideEvent::from_event(&ev) else {
        panic!()
    };

    let side = whatsip_meta::rt::GraphSide::new(b.graph.clone(), pnid());
    side.pre_accept(&call_id, ANSWER).await.unwrap();
    side.accept(&call_id, ANSWER, Some("crm-42")).await.unwrap();
    b.sim
        .wait_for_call_state(
            &sim_id(&call_id),
            whatsip_sim::core::CallState::Active,
            WAIT,
        )
        .await
        .unwrap();
    // Accepting with another answer than pre_accept is refused (reference §2.1).
    let err = side
        .accept(&call_id, &ANSWER.replace("X1ho", "Y2ip"), None)
        .await
        .unwrap_err();
    assert!(err.meta_code().is_some(), "{err:?}");

    tokio::time::sleep(Duration::from_millis(1100)).await; // a measurable duration
    b.sim.user_hangs_up(&sim_id(&call_id)).await.unwrap();
    let Event::Terminate(t) = next(&mut b.events).await else {
        panic!()
    };
    assert_eq!(t.call_id, call_id);
    assert_eq!(t.status, Some(TerminateStatus::Completed));
    assert!(t.duration.is_some() && t.start_time.is_some());
    assert_eq!(t.biz_opaque_callback_data.as_deref(), Some("crm-42"));
    let actions: Vec<_> = b
        .sim
        .graph_requests()
        .into_iter()
        .filter_map(|r| r.action)
        .collect();
    assert_eq!(actions, ["pre_accept", "accept", "accept"]);
    b.sim.shutdown().await;
}

#[tokio::test]
async fn business_initiated_call_end_to_end() {
    let mut b = bench(WebhookServerConfig::default(), |_| {}).await;
    b.sim
        .set_permission(&sim_pnid(), &sim_user(), PermissionGrant::Temporary)
        .await
        .unwrap();
    let perms = b.graph.call_permissions(&pnid(), &user()).await.unwrap();
    assert_eq!(perms.status, PermissionStatus::Temporary);
    assert!(perms.expiration.is_some() && perms.can_start_call());

    let side = whatsip_meta::rt::GraphSide::new(b.graph.clone(), pnid());
    let call_id = side.connect(&user(), OFFER, Some("bic-7")).await.unwrap();
    let mut statuses = Vec::new();
    let mut answered = false;
    while !(answered && statuses.contains(&CallStatusKind::Accepted)) {
        match next(&mut b.events).await {
            Event::Connect(c) => {
                assert_eq!(
                    (c.call_id.as_str(), c.direction),
                    (call_id.as_str(), CallDirection::BusinessInitiated)
                );
                assert_eq!(c.session.sdp_type, SdpType::Answer);
                assert_eq!(c.user(), &user());
                assert_eq!(c.biz_opaque_callback_data.as_deref(), Some("bic-7"));
                answered = true;
            }
            Event::Status(s) => {
                assert_eq!(s.call_id, call_id);
                statuses.push(s.status);
            }
            other => panic!("{other:?}"),
        }
        assert!(statuses.len() < 5);
    }
    assert_eq!(statuses.first(), Some(&CallStatusKind::Ringing));
    side.terminate(&call_id).await.unwrap();
    let Event::Terminate(t) = next(&mut b.events).await else {
        panic!()
    };
    assert_eq!(
        (t.call_id, t.status),
        (call_id, Some(TerminateStatus::Completed))
    );
    b.sim.shutdown().await;
}

#[tokio::test]
async fn duplicated_webhooks_are_delivered_once() {
    let mut b = bench(WebhookServerConfig::default(), |cfg| {
        cfg.faults = Faults {
            rules: vec![FaultRule {
                matches: WebhookMatch::Any,
                action: FaultAction::Duplicate,
                times: None,
            }],
            ..Faults::default()
        };
    })
    .await;
    let mut call = UserCall::new(sim_user(), sim_pnid());
    call.give_up_after = Some(Duration::from_secs(1));
    let id = b.sim.user_calls(call).await.unwrap();
    assert!(matches!(next(&mut b.events).await, Event::Connect(_)));
    assert!(matches!(next(&mut b.events).await, Event::Terminate(_)));
    // The simulator sent each twice, and both copies were answered 200...
    for _ in 0..300 {
        if b.sim.webhooks().iter().filter(|w| w.is_ok()).count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent: Vec<_> = b
        .sim
        .webhooks()
        .into_iter()
        .filter(|w| w.call_ids.iter().any(|c| c.as_str() == id.as_str()))
        .collect();
    assert_eq!(sent.iter().filter(|w| w.is_ok()).count(), 4, "{sent:?}");
    // ...and the copies were dropped, not delivered.
    counter_reaches(&b.server.stats().duplicates, 2).await;
    assert!(b.events.try_recv().is_err());
    b.sim.shutdown().await;
}

#[tokio::test]
async fn terminate_before_connect_never_starts_a_call() {
    let mut b = bench(WebhookServerConfig::default(), |cfg| {
        cfg.faults = Faults {
            rules: vec![FaultRule {
                matches: WebhookMatch::Label("connect".into()),
                action: FaultAction::HoldUntilNext {
                    max: Some(Duration::from_secs(20)),
                },
                times: Some(1),
            }],
            ..Faults::default()
        };
    })
    .await;
    let mut call = UserCall::new(sim_user(), sim_pnid());
    call.give_up_after = Some(Duration::from_millis(500));
    let id = b.sim.user_calls(call).await.unwrap();
    let Event::Terminate(t) = next(&mut b.events).await else {
        panic!("terminate must come first")
    };
    assert_eq!(t.call_id.as_str(), id.as_str());
    // The held connect is delivered after it (200) and counted as already ended.
    counter_reaches(&b.server.stats().already_ended, 1).await;
    let order: Vec<_> = b
        .sim
        .webhooks()
        .into_iter()
        .filter(|w| w.is_ok())
        .flat_map(|w| w.labels)
        .collect();
    assert_eq!(order, ["terminate", "connect"]);
    // It reaches the gateway once, marked: record the attempt, never start the call.
    let late = b.events.try_recv().expect("the late connect is passed on");
    assert!(
        matches!(late.event, Event::Connect(_)) && late.after_terminate,
        "{late:?}"
    );
    assert!(b.events.try_recv().is_err(), "nothing else");
    b.sim.shutdown().await;
}

#[tokio::test]
async fn wrong_signature_is_refused_and_never_delivered() {
    let mut b = bench(WebhookServerConfig::default(), |cfg| {
        cfg.webhook.max_attempts = 2;
        cfg.faults = Faults {
            rules: vec![FaultRule {
                matches: WebhookMatch::Label("connect".into()),
                action: FaultAction::WrongSecret,
                times: Some(1),
            }],
            ..Faults::default()
        };
    })
    .await;
    let mut call = UserCall::new(sim_user(), sim_pnid());
    call.give_up_after = Some(Duration::from_secs(1));
    let id = b.sim.user_calls(call).await.unwrap();
    let Event::Terminate(t) = next(&mut b.events).await else {
        panic!("the forged connect must not pass")
    };
    assert_eq!(t.call_id.as_str(), id.as_str());
    let bad: Vec<_> = b
        .sim
        .webhooks()
        .into_iter()
        .filter(|w| w.wrong_secret)
        .collect();
    assert!(!bad.is_empty());
    assert!(
        bad.iter()
            .all(|w| w.outcome == whatsip_sim::DeliveryOutcome::Status(401)),
        "{bad:?}"
    );
    assert!(WebhookStats::get(&b.server.stats().bad_signature) >= 1);
    b.sim.shutdown().await;
}

#[tokio::test]
async fn oversized_webhook_gets_413() {
    // The simulator's connect (an SDP offer inside) is far above a 512-byte limit.
    let config = WebhookServerConfig {
        max_body_bytes: 512,
        ..WebhookServerConfig::default()
    };
    let mut b = bench(config, |cfg| cfg.webhook.max_attempts = 1).await;
    let id = b
        .sim
        .user_calls(UserCall::new(sim_user(), sim_pnid()))
        .await
        .unwrap();
    let rec = b
        .sim
        .wait_for_webhook(WAIT, |w| {
            w.labels == ["connect"] && w.outcome != whatsip_sim::DeliveryOutcome::NotSent
        })
        .await
        .unwrap();
    assert_eq!(rec.outcome, whatsip_sim::DeliveryOutcome::Status(413));
    assert!(WebhookStats::get(&b.server.stats().too_large) >= 1);
    assert!(b.events.try_recv().is_err());
    let _ = id;
    b.sim.shutdown().await;
}

#[tokio::test]
async fn graph_errors_map_to_the_typed_enum() {
    let mut b = bench(WebhookServerConfig::default(), |cfg| {
        let base = BusinessNumber::default();
        cfg.core.numbers = vec![
            BusinessNumber {
                max_concurrent_calls: 1,
                ..base.clone()
            },
            BusinessNumber {
                phone_number_id: whatsip_sim::PhoneNumberId::parse("200000000000001").unwrap(),
                display_phone_number: "4930900001".into(),
                sip_enabled: true,
                ..base.clone()
            },
            BusinessNumber {
                phone_number_id: whatsip_sim::PhoneNumberId::parse("200000000000002").unwrap(),
                display_phone_number: "4930900002".into(),
                calling_enabled: false,
                ..base.clone()
            },
            BusinessNumber {
                phone_number_id: whatsip_sim::PhoneNumberId::parse("200000000000003").unwrap(),
                display_phone_number: "12025550100".into(),
                ..base
            },
        ];
    })
    .await;
    let g = &b.graph;
    let code = |r: Result<WaCallId, GraphError>| r.unwrap_err().meta_code().unwrap();
    let other = |n: &str| PhoneNumberId::parse(n).unwrap();

    // No permission yet.
    let err = g.connect(&pnid(), &user(), OFFER, None).await.unwrap_err();
    assert_eq!(
        (err.meta_code(), err.http_status()),
        (Some(MetaErrorCode::NoCallPermission), Some(401))
    );
    assert!(!err.is_retry_safe(false));
    // SIP-enabled number, calling disabled, blocked country.
    assert_eq!(
        code(
            g.connect(&other("200000000000001"), &user(), OFFER, None)
                .await
        ),
        MetaErrorCode::SipEnabledNumber
    );
    assert_eq!(
        code(
            g.connect(&other("200000000000002"), &user(), OFFER, None)
                .await
        ),
        MetaErrorCode::CallingNotEnabled
    );
    b.sim
        .set_permission(
            &whatsip_sim::PhoneNumberId::parse("200000000000003").unwrap(),
            &sim_user(),
            PermissionGrant::Permanent,
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            g.connect(&other("200000000000003"), &user(), OFFER, None)
                .await
        ),
        MetaErrorCode::BusinessInitiatedUnavailable
    );
    // Bad SDP: 100 with the details.
    b.sim
        .set_permission(&sim_pnid(), &sim_user(), PermissionGrant::Temporary)
        .await
        .unwrap();
    let err = g
        .connect(&pnid(), &user(), "v=0\n", None)
        .await
        .unwrap_err();
    let GraphError::Meta(meta) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (meta.code, meta.http_status),
        (MetaErrorCode::InvalidParameter, 400)
    );
    assert!(meta.details.as_deref().is_some_and(|d| !d.is_empty()));
    // One active call per pair, then the number's concurrency limit of 1.
    let first = g.connect(&pnid(), &user(), OFFER, None).await.unwrap();
    assert_eq!(
        code(g.connect(&pnid(), &user(), OFFER, None).await),
        MetaErrorCode::DuplicateCall
    );
    let user2 = WaId::parse("4915112345679").unwrap();
    b.sim
        .set_permission(
            &sim_pnid(),
            &whatsip_sim::WaId::parse(user2.as_str()).unwrap(),
            PermissionGrant::Permanent,
        )
        .await
        .unwrap();
    assert_eq!(
        code(g.connect(&pnid(), &user2, OFFER, None).await),
        MetaErrorCode::ConcurrentCallLimit
    );
    g.terminate(&pnid(), &first).await.unwrap();
    // Acting on a call that ended is a Meta error, never a panic or a success.
    let err = g.terminate(&pnid(), &first).await.unwrap_err();
    assert!(matches!(err, GraphError::Meta(_)), "{err:?}");
    // Drain the webhooks of the call so the receiver stays healthy.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), b.events.recv()).await
    {
    }
    b.sim.shutdown().await;
}

#[tokio::test]
async fn permission_request_reply_and_settings() {
    let mut b = bench(WebhookServerConfig::default(), |_| {}).await;
    let sent = b
        .graph
        .send_call_permission_request(&pnid(), &user(), Some("May we call you?"))
        .await
        .unwrap();
    // The default simulated user accepts a temporary permission after about a second.
    let reply = loop {
        match next(&mut b.events).await {
            Event::PermissionReply(r) => break r,
            Event::MessageFailed(m) => panic!("{m:?}"),
            _ => continue,
        }
    };
    assert_eq!(reply.response, PermissionResponse::Accept);
    assert!(!reply.is_permanent && reply.expiration.is_some());
    assert_eq!(reply.reply_to, Some(ReplyTo::Message(sent.message_id)));
    assert_eq!(
        b.graph
            .call_permissions(&pnid(), &user())
            .await
            .unwrap()
            .status,
        PermissionStatus::Temporary
    );

    let settings = b.graph.settings(&pnid(), false).await.unwrap();
    let mut calling = settings.calling.unwrap();
    assert_eq!(calling.status, Some(whatsip_meta::graph::Toggle::Enabled));
    calling.callback_permission_status = Some(whatsip_meta::graph::Toggle::Enabled);
    let update = whatsip_meta::graph::CallingSettings {
        callback_permission_status: calling.callback_permission_status.clone(),
        ..Default::default()
    };
    b.graph.update_settings(&pnid(), &update).await.unwrap();
    let after = b
        .graph
        .settings(&pnid(), false)
        .await
        .unwrap()
        .calling
        .unwrap();
    assert_eq!(
        after.callback_permission_status,
        Some(whatsip_meta::graph::Toggle::Enabled)
    );
    // The change is announced on account_settings_update.
    let upd = loop {
        if let Event::AccountSettingsUpdate(u) = next(&mut b.events).await {
            break u;
        }
    };
    assert_eq!(
        upd.calling.unwrap().callback_permission_status,
        Some(whatsip_meta::graph::Toggle::Enabled)
    );
    b.sim.shutdown().await;
}

#[tokio::test]
async fn stopped_simulator_gives_connect_errors_after_bounded_retries() {
    let b = bench(WebhookServerConfig::default(), |_| {}).await;
    b.sim.shutdown().await;
    let err = tokio::time::timeout(WAIT, b.graph.call_permissions(&pnid(), &user()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::Connect { .. } | GraphError::Transport { .. }
        ),
        "{err:?}"
    );
    let err = tokio::time::timeout(
        WAIT,
        b.graph
            .terminate(&pnid(), &WaCallId::parse("wacid.GONE").unwrap()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::Connect { .. } | GraphError::Transport { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn silent_slow_and_failing_simulator_retries_only_where_safe() {
    let mut b = bench(WebhookServerConfig::default(), |_| {}).await;
    let fast = GraphClient::new(
        GraphClientConfig {
            base_url: b.sim.base_url(),
            request_timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(50),
            ..GraphClientConfig::default()
        },
        AccessToken::new("sim-token"),
    )
    .unwrap();
    let rule = |endpoint: &str, action: Option<&str>, fault: GraphFault, times: Option<u32>| {
        GraphFaultRule {
            endpoint: Some(endpoint.into()),
            action: action.map(str::to_owned),
            fault,
            times,
        }
    };
    b.sim.set_faults(Faults {
        graph: vec![
            rule("calls", Some("accept"), GraphFault::NoResponse, None),
            rule("call_permissions", None, GraphFault::NoResponse, None),
            rule(
                "settings",
                None,
                GraphFault::Error { code: 138004 },
                Some(1),
            ),
            rule(
                "calls",
                Some("terminate"),
                GraphFault::Delay {
                    delay: Duration::from_secs(3),
                },
                Some(1),
            ),
        ],
        ..Faults::default()
    });
    let count = |sim: &SimHandle, pred: &dyn Fn(&whatsip_sim::GraphRecord) -> bool| {
        sim.graph_requests().iter().filter(|r| pred(r)).count()
    };

    // A silent Meta on accept: one attempt, a timeout, never resent.
    let sim_call = b
        .sim
        .user_calls(UserCall::new(sim_user(), sim_pnid()))
        .await
        .unwrap();
    let Event::Connect(c) = next(&mut b.events).await else {
        panic!()
    };
    fast.pre_accept(&pnid(), &c.call_id, ANSWER).await.unwrap();
    let err = tokio::time::timeout(WAIT, fast.accept(&pnid(), &c.call_id, ANSWER, None))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, GraphError::Timeout { timeout_ms: 1000 }),
        "{err:?}"
    );
    assert_eq!(count(&b.sim, &|r| r.is_call_action("accept")), 1);

    // A silent Meta on an idempotent GET: retried up to max_attempts, then the timeout.
    let err = tokio::time::timeout(WAIT, fast.call_permissions(&pnid(), &user()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, GraphError::Timeout { .. }), "{err:?}");
    assert_eq!(count(&b.sim, &|r| r.path.ends_with("/call_permissions")), 3);

    // A transient 138004 on GET settings: retried once, then success.
    fast.settings(&pnid(), false).await.unwrap();
    assert_eq!(count(&b.sim, &|r| r.path.ends_with("/settings")), 2);

    // A slow Meta on terminate: the client times out, the action took effect, no resend.
    let err = tokio::time::timeout(WAIT, fast.terminate(&pnid(), &c.call_id))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, GraphError::Timeout { .. }), "{err:?}");
    b.sim
        .wait_for_call_end(&sim_id(&c.call_id), WAIT)
        .await
        .unwrap();
    assert_eq!(count(&b.sim, &|r| r.is_call_action("terminate")), 1);
    assert_eq!(c.call_id.as_str(), sim_call.as_str());
    b.sim.shutdown().await;
}

#[tokio::test]
async fn simulator_verification_handshake() {
    let b = bench(WebhookServerConfig::default(), |_| {}).await;
    let ok = b.sim.verify_webhook("v").await.unwrap();
    assert!(
        ok.verified && ok.status == 200,
        "{:?}",
        (ok.status, &ok.body)
    );
    let bad = b.sim.verify_webhook("wrong-token").await.unwrap();
    assert!(!bad.verified);
    assert_eq!(bad.status, 403);
    assert_eq!(WebhookStats::get(&b.server.stats().handshakes_ok), 1);
    assert_eq!(WebhookStats::get(&b.server.stats().handshakes_refused), 1);
    b.sim.shutdown().await;
}

#[tokio::test]
async fn padded_webhooks_over_3mb_get_413_and_unknown_fields_are_tolerated() {
    let pad = |label: &str, bytes: usize| FaultRule {
        matches: WebhookMatch::Label(label.into()),
        action: FaultAction::Pad { bytes },
        times: Some(1),
    };
    let mut b = bench(WebhookServerConfig::default(), |cfg| {
        cfg.webhook.max_attempts = 1;
        cfg.faults = Faults {
            rules: vec![
                pad("connect", 3 * 1024 * 1024),
                pad("terminate", 100 * 1024),
            ],
            ..Faults::default()
        };
    })
    .await;
    let mut call = UserCall::new(sim_user(), sim_pnid());
    call.give_up_after = Some(Duration::from_secs(1));
    let id = b.sim.user_calls(call).await.unwrap();
    // The 3 MB-padded connect is refused by size; the 100 KB-padded terminate is delivered,
    // its unknown `whatsip_padding` field reported as a note.
    let Event::Terminate(t) = next(&mut b.events).await else {
        panic!()
    };
    assert_eq!(t.call_id.as_str(), id.as_str());
    let connect = b
        .sim
        .webhooks()
        .into_iter()
        .find(|w| w.labels == ["connect"])
        .unwrap();
    assert_eq!(connect.outcome, whatsip_sim::DeliveryOutcome::Status(413));
    assert_eq!(WebhookStats::get(&b.server.stats().too_large), 1);
    counter_reaches(&b.server.stats().notes, 1).await;
    b.sim.shutdown().await;
}
