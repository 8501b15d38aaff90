//! Rough throughput check: N user-initiated calls through the simulator, answered by a
//! minimal webhook receiver that `pre_accept`s and `accept`s over the Graph API; every
//! caller hangs up after `HOLD` seconds.
//!
//! `cargo run --release -p whatsip-sim --example sim_load -- 1000 2`

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use whatsip_sim::core::{CallState, UserCall};
use whatsip_sim::{PhoneNumberId, SimConfig, Simulator, SystemClock, WaId, WebhookConfig};

const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:X1ho\r\na=ice-pwd:7fJSbV2N5qWiA5QiDKwK3vuh\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:active\r\na=mid:audio\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:126 telephone-event/8000\r\n";

#[derive(Clone)]
struct Gw {
    graph: Arc<tokio::sync::OnceCell<String>>,
    client: reqwest::Client,
    webhooks: Arc<AtomicU64>,
}

async fn receive(State(gw): State<Gw>, body: Bytes) -> &'static str {
    gw.webhooks.fetch_add(1, Ordering::Relaxed);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let call = &v["entry"][0]["changes"][0]["value"]["calls"][0];
    if call["event"] == "connect" && call["direction"] == "USER_INITIATED" {
        let id = call["id"].as_str().unwrap_or("").to_owned();
        let gw2 = gw.clone();
        tokio::spawn(async move {
            let base = gw2.graph.get().cloned().unwrap_or_default();
            for action in ["pre_accept", "accept"] {
                let _ = gw2
                    .client
                    .post(format!("{base}/v23.0/106540352242922/calls"))
                    .bearer_auth("t")
                    .json(
                        &json!({ "messaging_product": "whatsapp", "call_id": id, "action": action,
                        "session": { "sdp_type": "answer", "sdp": ANSWER } }),
                    )
                    .send()
                    .await;
            }
        });
    }
    "ok"
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let hold: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let gw = Gw {
        graph: Arc::new(tokio::sync::OnceCell::new()),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        webhooks: Arc::new(AtomicU64::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/", post(receive))
        .with_state(gw.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut cfg = SimConfig::default();
    cfg.core.timing.watchdog.enabled = false;
    cfg.core.max_terminated_calls_kept = 100_000;
    cfg.webhook = WebhookConfig {
        lanes: std::env::var("LANES")
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or(8),
        url: Some(url),
        app_secret: "s".into(),
        ..WebhookConfig::default()
    };
    let sim = Simulator::start(cfg).await.unwrap();
    gw.graph.set(sim.base_url()).unwrap();
    let pnid = PhoneNumberId::parse("106540352242922").unwrap();
    let clock = SystemClock::new();
    let t0 = clock.now().0;
    let mut ids = Vec::new();
    for i in 0..n {
        let user = WaId::parse(&format!("49151{:08}", i)).unwrap();
        let call = UserCall {
            hang_up_after: Some(Duration::from_secs_f64(hold)),
            ..UserCall::new(user, pnid.clone())
        };
        ids.push(sim.user_calls(call).await.unwrap());
    }
    let placed = clock.now().0 - t0;
    let mut answered = 0;
    for id in &ids {
        let c = sim
            .wait_for_call_end(id, Duration::from_secs(600))
            .await
            .unwrap();
        if c.end.and_then(|e| e.duration_s).is_some() || c.state == CallState::Active {
            answered += 1;
        }
    }
    let total = clock.now().0 - t0;
    let ok = sim.webhooks().iter().filter(|w| w.is_ok()).count();
    println!(
        "calls={n} placed_in={:.2}s ({:.0} calls/s) all_ended_in={:.2}s answered={answered} webhooks_ok={ok} webhooks_received={} graph_requests={}",
        placed.as_secs_f64(),
        n as f64 / placed.as_secs_f64(),
        total.as_secs_f64(),
        gw.webhooks.load(Ordering::Relaxed),
        sim.graph_requests().len(),
    );
    sim.shutdown().await;
}
