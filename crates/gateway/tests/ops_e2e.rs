//! Operations end to end, on 127.0.0.1: whatsip-sim → the gateway runtime → SIPp as the
//! PBX, with the CDR store and the metrics switched on. After an answered call (tone echo,
//! one DTMF digit, the user hangs up) and a busy one, the SQLite CDR database and the
//! JSON-lines export hold the right records, and `/metrics` shows the calls.
//!
//! The harness is `common::inbound_harness` (SIPp from `scripts/setup.sh`; without it a test
//! fails when `CI=true` and is skipped loudly otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    APP_SECRET, InboundHarness as Harness, InboundOpts, Kind, WAIT, assert_released,
    assert_sipp_ok, free_port, inbound_harness, tone_ok,
};
use whatsip_gateway::runtime::MilestoneKind;
use whatsip_sim::core::CallState;
use whatsip_sim::{Faults, GraphFault, GraphFaultRule, WaCallId};

/// One test at a time: each runs two WebRTC peers, Opus codecs and SIPp.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Gateway + simulator + SIPp running `scenario`, with CDRs in `state` (`cdr.db`,
/// `cdr.jsonl`) and the admin server on `admin_port`.
async fn harness(kind: Kind, scenario: &str, state: &Path, admin_port: u16) -> Option<Harness> {
    harness_opts(kind, scenario, state, admin_port, true).await
}

/// As [`harness`]; `in_process: false` starts no gateway (the test runs the binary with
/// [`Harness::toml`]).
async fn harness_opts(
    kind: Kind,
    scenario: &str,
    state: &Path,
    admin_port: u16,
    in_process: bool,
) -> Option<Harness> {
    inbound_harness(InboundOpts {
        admin_port: Some(admin_port),
        state: Some(state),
        in_process,
        // distinct from e2e_inbound's ranges
        rtp_base: 45_000,
        ..InboundOpts::new(kind, Some(scenario))
    })
    .await
}

/// Answered call: tone echo, one digit from the phone, the user hangs up.
async fn answered_call(h: &mut Harness) -> WaCallId {
    let id = h.user_calls_from("4915112345678").await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .expect("the gateway accepted the call");
    let phone = h.phone();
    let (status, ok) = phone.wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back at the phone: {status:?}");
    h.sim.user_presses(&id, "5").await.unwrap();
    let (status, ok) = phone.wait_for(WAIT, |s| s.audio.digits.contains('5')).await;
    assert!(ok, "digit not echoed back to the phone: {status:?}");
    // let a little more audio flow so both directions have packets to count
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_sipp_ok(&h.sipp_result().await);
    assert!(
        h.wait_milestone(|k| matches!(k, MilestoneKind::Ended { .. }))
            .await
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_cdrs_of_an_answered_and_a_busy_call_are_stored_and_exported() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();

    let admin = free_port();
    let Some(mut h) = harness(Kind::Udp, "uas_wa_echo.xml", state.path(), admin).await else {
        return;
    };
    let answered = answered_call(&mut h).await;
    h.finish().await;

    // a second gateway run on the same store (the PBX trunk over TCP): the busy call
    let admin = free_port();
    let Some(mut h) = harness(Kind::Tcp, "uas_wa_busy.xml", state.path(), admin).await else {
        return;
    };
    let busy = h.user_calls_from("4915187654321").await;
    h.sim.wait_for_call_end(&busy, WAIT).await.unwrap();
    assert_sipp_ok(&h.sipp_result().await);
    assert_eq!(h.graph_actions(), ["pre_accept", "reject"]);
    assert!(
        h.wait_milestone(|k| matches!(k, MilestoneKind::Ended { .. }))
            .await
    );
    h.finish().await;

    let store = whatsip_cdr::CdrStore::open(
        &state.path().join("cdr.db"),
        whatsip_cdr::StoreOptions::default(),
    )
    .unwrap();
    assert!(store.live_calls().unwrap().is_empty());
    let all = store.list(&whatsip_cdr::CdrFilter::default()).unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");

    let a = store.get(answered.as_str()).unwrap().expect("answered cdr");
    assert_eq!(a.outcome, whatsip_cdr::Outcome::Answered);
    assert_eq!(a.direction, whatsip_cdr::Direction::Inbound);
    assert_eq!(a.business_number, "4930901820");
    assert_eq!(a.customer_number, "4915112345678");
    assert_eq!(a.dialplan_rule.as_deref(), Some("e2e-agents"));
    assert!(
        a.pbx_target
            .as_deref()
            .is_some_and(|t| t.starts_with("sip:agent@127.0.0.1")),
        "{a:?}"
    );
    assert!(a.pbx_call_id.is_some(), "{a:?}");
    assert_eq!(a.ending.hangup_by, Some(whatsip_cdr::HangupSide::WhatsApp));
    assert_eq!(a.ending.sip_status, None);
    assert_eq!(a.wa_codec.as_deref(), Some("opus"));
    assert!(
        a.pbx_codec
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("pcmu")),
        "{a:?}"
    );
    // the digit went to the PBX and came back from its echo: two digits carried
    assert_eq!(a.dtmf_digits, 2, "{a:?}");
    let (ans, end) = (a.answer_at.unwrap(), a.end_at.unwrap());
    assert!(a.offer_at <= ans && ans <= end, "{a:?}");
    assert!(a.talk_time() > Duration::ZERO);
    let up = a.media_wa_to_pbx.expect("media stats wa->pbx");
    let down = a.media_pbx_to_wa.expect("media stats pbx->wa");
    assert!(up.packets > 25 && down.packets > 25, "{up:?} {down:?}");
    assert_eq!(a.billable_pulses, None, "inbound calls are not billed");

    let b = store.get(busy.as_str()).unwrap().expect("busy cdr");
    assert_eq!(b.outcome, whatsip_cdr::Outcome::Rejected);
    assert_eq!(b.customer_number, "4915187654321");
    assert_eq!(b.ending.sip_status, Some(486));
    assert_eq!(b.ending.hangup_by, Some(whatsip_cdr::HangupSide::Pbx));
    assert_eq!(b.answer_at, None);
    assert_eq!(b.ending.reason.as_deref(), Some("pbx rejected 486"));
    assert!(b.media_wa_to_pbx.is_none() || b.media_wa_to_pbx.is_some_and(|m| m.packets == 0));

    // the JSON-lines export got one line per final record, in order
    let jsonl = std::fs::read_to_string(state.path().join("cdr.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{jsonl}");
    assert_eq!(lines[0]["wa_call_id"], answered.as_str());
    assert_eq!(lines[0]["outcome"], "answered");
    assert_eq!(lines[1]["wa_call_id"], busy.as_str());
    assert_eq!(lines[1]["outcome"], "rejected");
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (bounded): status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let text = tokio::time::timeout(WAIT, fetch)
        .await
        .expect("admin server answers");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_metrics_health_and_readiness_after_an_answered_call() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let admin = free_port();
    let Some(mut h) = harness(Kind::Udp, "uas_wa_echo.xml", state.path(), admin).await else {
        return;
    };
    let addr = h.gw.as_ref().unwrap().admin_addr().expect("admin enabled");
    assert_eq!(addr.port(), admin);

    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_get(addr, "/readyz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["checks"]["sip_listening"], true);
    assert_eq!(v["checks"]["webhook_listening"], true);
    assert_eq!(
        v["checks"]["pbx_options"], "unknown",
        "pings are off in this config"
    );
    // no Graph request yet: /readyz probed GET settings, and the simulator answered
    assert_eq!(v["checks"]["graph_api"], "reachable", "{body}");
    assert!(
        v["detail"]["graph_api"]
            .as_str()
            .unwrap()
            .starts_with("settings_probe: answered"),
        "{body}"
    );

    answered_call(&mut h).await;
    for _ in 0..100 {
        if h.gw.as_ref().unwrap().calls_in_progress() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One malformed SIP datagram: a parse error counted on UDP.
    let sip_udp =
        h.gw.as_ref()
            .unwrap()
            .sip_addrs()
            .into_iter()
            .find(|(k, _)| *k == whatsip_sip::transport::TransportKind::Udp)
            .unwrap()
            .1;
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    junk.send_to(b"INVITE sip:x SIP/2.0\r\nVia: broken\r\n\r\n", sip_udp)
        .unwrap();

    let mut text = String::new();
    for _ in 0..100 {
        let (status, t) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        text = t;
        if text.contains("whatsip_transport_errors_total{transport=\"udp\",kind=\"parse\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("whatsip_transport_errors_total{transport=\"udp\",kind=\"parse\"} 1")
            && text.contains("whatsip_transport_errors_total{transport=\"tcp\",kind=\"parse\"} 0"),
        "the malformed datagram counts as a UDP parse error only:\n{text}"
    );
    let get = |p: &str| sample(&text, p).unwrap_or_else(|| panic!("{p} missing in\n{text}"));
    assert_eq!(
        get("whatsip_call_attempts_total{direction=\"inbound\"}"),
        1.0
    );
    assert_eq!(get("whatsip_calls_in_progress{direction=\"inbound\"}"), 0.0);
    assert_eq!(
        get(
            "whatsip_call_outcomes_total{direction=\"inbound\",outcome=\"answered\",cause=\"whatsapp_hangup\"}"
        ),
        1.0
    );
    assert_eq!(
        get("whatsip_answer_seizure_ratio{direction=\"inbound\"}"),
        1.0
    );
    assert_eq!(
        get("whatsip_call_duration_seconds_count{direction=\"inbound\"}"),
        1.0
    );
    assert!(get("whatsip_call_duration_seconds_sum{direction=\"inbound\"}") > 0.0);
    assert_eq!(get("whatsip_setup_webhook_to_invite_seconds_count"), 1.0);
    assert_eq!(get("whatsip_setup_answer_to_accept_seconds_count"), 1.0);
    assert!(get("whatsip_rtp_packets_total{leg=\"whatsapp\"}") > 25.0);
    assert!(get("whatsip_rtp_packets_total{leg=\"pbx\"}") > 25.0);
    assert_eq!(get("whatsip_rtp_jitter_seconds_count{leg=\"pbx\"}"), 1.0);
    // the dialog by method and status (UDP: a retransmission may add to a count)
    assert!(sip_count(&text, "out", "INVITE", "") >= 1.0, "{text}");
    assert_eq!(sip_count(&text, "in", "INVITE", "180"), 1.0, "{text}");
    assert!(sip_count(&text, "in", "INVITE", "200") >= 1.0, "{text}");
    assert!(sip_count(&text, "out", "ACK", "") >= 1.0, "{text}");
    assert!(sip_count(&text, "out", "BYE", "") >= 1.0, "{text}");
    assert!(sip_count(&text, "in", "BYE", "200") >= 1.0, "{text}");
    assert_eq!(sip_count(&text, "in", "INVITE", ""), 0.0, "{text}");
    assert_eq!(
        get("whatsip_transcoder_sessions{codec=\"PCMU\"}"),
        0.0,
        "the call's media session ended with it"
    );
    assert_eq!(get("whatsip_webhook_signature_failures_total"), 0.0);
    assert_eq!(
        get("whatsip_graph_latency_seconds_count{action=\"pre_accept\"}"),
        1.0
    );
    assert_eq!(
        get("whatsip_graph_latency_seconds_count{action=\"accept\"}"),
        1.0
    );
    assert_eq!(
        get("whatsip_graph_latency_seconds_count{action=\"settings_probe\"}"),
        1.0
    );
    assert!(
        !text.contains("whatsip_graph_errors_total{"),
        "no graph error: {text}"
    );

    // a webhook POST with a wrong signature is refused and counted
    let webhook = h.gw.as_ref().unwrap().webhook_addr().unwrap();
    let post = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(webhook).await.unwrap();
        let body = "{\"object\":\"whatsapp_business_account\",\"entry\":[]}";
        let req = format!(
            "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            "00".repeat(32),
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let resp = tokio::time::timeout(WAIT, post).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let (_, text) = http_get(addr, "/metrics").await;
    assert_eq!(
        sample(&text, "whatsip_webhook_signature_failures_total"),
        Some(1.0)
    );

    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_sigterm_drain_refuses_new_calls_then_ends_the_live_one_with_its_cdr() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let admin = free_port();
    let Some(mut h) = harness(Kind::Udp, "uas_wa_echo.xml", state.path(), admin).await else {
        return;
    };
    let addr = h.gw.as_ref().unwrap().admin_addr().unwrap();
    let live = h.user_calls_from("4915112345678").await;
    h.sim
        .wait_for_call_state(&live, CallState::Active, WAIT)
        .await
        .expect("the gateway accepted the call");

    // what SIGTERM does in `whatsip run`: drain with the configured limit
    let gw = h.gw.take().unwrap();
    let drain = tokio::spawn(gw.drain(Duration::from_secs(4)));

    // not ready any more, and a new call is rejected without reaching the PBX
    let mut draining = false;
    for _ in 0..100 {
        let (status, body) = http_get(addr, "/readyz").await;
        if status == 503 && body.contains("\"draining\":true") {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(draining, "readyz never reported draining");
    let refused = h.user_calls_from("4915187654321").await;
    let info = h.sim.wait_for_call_end(&refused, WAIT).await.unwrap();
    assert_ne!(info.state, CallState::Active);
    // the live call is still up while the drain time runs
    let now = h
        .sim
        .wait_for_call_state(&live, CallState::Active, Duration::from_millis(10))
        .await;
    assert!(
        now.is_ok(),
        "the live call was cut before the drain time ran out"
    );

    // then the drain time is over: the live call is ended on both legs
    tokio::time::timeout(Duration::from_secs(60), drain)
        .await
        .expect("drain finishes")
        .unwrap();
    h.sim.wait_for_call_end(&live, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    assert!(run.messages.contains("BYE sip:"), "{}", run.messages);
    let actions = h.graph_actions();
    assert_eq!(
        actions.iter().filter(|a| *a == "reject").count(),
        1,
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| a == "terminate"), "{actions:?}");
    h.sim.shutdown().await;

    let store = whatsip_cdr::CdrStore::open(
        &state.path().join("cdr.db"),
        whatsip_cdr::StoreOptions::default(),
    )
    .unwrap();
    let r = store
        .get(live.as_str())
        .unwrap()
        .expect("cdr of the live call");
    assert_eq!(r.outcome, whatsip_cdr::Outcome::Answered);
    assert_eq!(r.ending.hangup_by, Some(whatsip_cdr::HangupSide::Gateway));
    assert_eq!(r.ending.reason.as_deref(), Some("gateway shutdown"));
    // the call refused while draining has its record too
    let f = store
        .get(refused.as_str())
        .unwrap()
        .expect("cdr of the refused call");
    assert_eq!(f.outcome, whatsip_cdr::Outcome::Refused);
    assert_eq!(f.customer_number, "4915187654321");
    assert_eq!(f.ending.reason.as_deref(), Some("gateway shutting down"));
    assert_eq!(f.answer_at, None);
    assert!(store.live_calls().unwrap().is_empty());
}

/// Runs `whatsip run --config FILE` with the test's secrets in its environment.
fn spawn_whatsip(config: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .args(["run", "--config"])
        .arg(config)
        .env("E2E_TOKEN", "e2e-token")
        .env("E2E_SECRET", APP_SECRET)
        .env("E2E_VERIFY", "e2e-verify")
        .env("E2E_PBX_PASSWORD", "s3cret")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start whatsip")
}

async fn wait_admin(port: u16) -> std::net::SocketAddr {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("whatsip never listened on admin port {port}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_sigkill_mid_call_leaves_an_interrupted_cdr_found_at_restart() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let admin = free_port();
    let Some(mut h) = harness_opts(Kind::Udp, "uas_wa_echo.xml", state.path(), admin, false).await
    else {
        return;
    };
    let config = state.path().join("whatsip.toml");
    std::fs::write(&config, &h.toml).unwrap();
    let mut gw = KillOnDrop(spawn_whatsip(&config));
    wait_admin(admin).await;

    let id = h.user_calls_from("4915112345678").await;
    h.sim
        .wait_for_call_state(&id, CallState::Active, WAIT)
        .await
        .expect("the gateway process accepted the call");
    // the live record is written at answer; give the writer thread a moment to commit
    let db = state.path().join("cdr.db");
    let mut live = false;
    for _ in 0..100 {
        let store = whatsip_cdr::CdrStore::open(&db, whatsip_cdr::StoreOptions::default());
        if store.is_ok_and(|s| {
            s.live_calls()
                .is_ok_and(|l| l.iter().any(|r| r.answer_at.is_some()))
        }) {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live, "no live cdr for the answered call");

    // SIGKILL: nothing runs at exit
    gw.0.kill().unwrap();
    let status = gw.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    h.sipp_stop.store(true, Ordering::Relaxed);
    let _ = h.sipp_result().await;

    // restart: the call that was live becomes an interrupted record
    let _gw = KillOnDrop(spawn_whatsip(&config));
    wait_admin(admin).await;
    let out = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .args(["cdr", "--db"])
        .arg(&db)
        .args(["show", id.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "interrupted", "{r:#}");
    assert_eq!(r["customer_number"], "4915112345678");
    assert!(r["answer_at"].is_number(), "{r:#}");
    h.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_sighup_reloads_the_dial_plan_for_new_calls() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let admin = free_port();
    let Some(mut h) = harness_opts(Kind::Udp, "uas_wa_echo.xml", state.path(), admin, false).await
    else {
        return;
    };
    let config = state.path().join("whatsip.toml");
    std::fs::write(&config, &h.toml).unwrap();
    let mut gw = KillOnDrop(spawn_whatsip(&config));
    let addr = wait_admin(admin).await;

    // a rule in front of the PBX rule refuses every inbound call
    let closed = h.toml.replacen(
        "[[dialplan.rule]]",
        "[[dialplan.rule]]\nname = \"closed-now\"\ndirection = \"inbound\"\nreject = true\n\n[[dialplan.rule]]",
        1,
    );
    assert_ne!(closed, h.toml);
    std::fs::write(&config, &closed).unwrap();
    let pid = gw.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // the reload runs in the signal handler: wait (bounded) until /metrics counts it
    let mut applied = false;
    for _ in 0..300 {
        let (_, text) = http_get(addr, "/metrics").await;
        if text.contains("whatsip_config_reloads_total{result=\"applied\"} 1") {
            applied = true;
            break;
        }
        assert!(
            !text.contains("result=\"refused\""),
            "the reload was refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(applied, "SIGHUP applied the new config within 30 s");
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200, "whatsip survived SIGHUP");

    let id = h.user_calls_from("4915112345678").await;
    let info = h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_ne!(info.state, CallState::Active);
    assert_eq!(
        h.graph_actions(),
        ["reject"],
        "refused without ringing the PBX"
    );

    // SIGTERM: drain (nothing live) and exit 0
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut exited = None;
    for _ in 0..600 {
        if let Some(s) = gw.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(0),
        "clean exit after SIGTERM"
    );
    h.sipp_stop.store(true, Ordering::Relaxed);
    let _ = h.sipp_result().await;
    h.sim.shutdown().await;

    let out = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .args(["cdr", "--db"])
        .arg(state.path().join("cdr.db"))
        .args(["show", id.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "refused", "{r:#}");
    assert!(
        r["ending"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("closed-now")),
        "{r:#}"
    );
}

/// The value of the `sip_messages_total` line of `flow`, `method` and `status` (empty for
/// requests); 0 when the line is absent.
fn sip_count(text: &str, flow: &str, method: &str, status: &str) -> f64 {
    sample(
        text,
        &format!(
            "whatsip_sip_messages_total{{flow=\"{flow}\",method=\"{method}\",status=\"{status}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

/// `/readyz`: HTTP status, `checks.graph_api` and `detail.graph_api`.
async fn graph_readiness(addr: std::net::SocketAddr) -> (u16, String, String) {
    let (status, body) = http_get(addr, "/readyz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        status,
        v["checks"]["graph_api"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        v["detail"]["graph_api"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_metrics_of_a_held_call_count_sip_by_method_transcoder_and_watchdog() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let admin = free_port();
    // TCP: no retransmission, so every message count is exact
    let Some(mut h) = harness(Kind::Tcp, "uas_wa_hold.xml", state.path(), admin).await else {
        return;
    };
    let addr = h.gw.as_ref().unwrap().admin_addr().expect("admin enabled");
    let id = h.user_calls().await;
    h.wait_active(&id).await;
    let (status, ok) = h.phone().wait_for(WAIT, tone_ok).await;
    assert!(ok, "tone not heard back before hold: {status:?}");
    // the call's PCMU media session counts while it runs
    let (_, text) = http_get(addr, "/metrics").await;
    assert_eq!(
        sample(&text, "whatsip_transcoder_sessions{codec=\"PCMU\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "whatsip_transcoder_sessions{codec=\"PCMA\"}"),
        Some(0.0)
    );
    // on hold (a=sendonly) the PBX sends nothing for 3 s: comfort noise keeps WhatsApp fed
    assert!(
        h.wait_milestone(|k| matches!(k, MilestoneKind::HoldChanged { on_hold: false }))
            .await,
        "no resume milestone"
    );
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_sipp_ok(&h.sipp_result().await);
    assert!(
        h.wait_milestone(|k| matches!(k, MilestoneKind::Ended { .. }))
            .await
    );
    assert_released(h.gw.as_ref().unwrap()).await;

    let (_, text) = http_get(addr, "/metrics").await;
    assert_eq!(
        sample(&text, "whatsip_transcoder_sessions{codec=\"PCMU\"}"),
        Some(0.0),
        "session ended with the call: {text}"
    );
    let comfort = sample(
        &text,
        "whatsip_watchdog_interventions_total{kind=\"comfort_noise\"}",
    )
    .unwrap();
    assert!(comfort >= 1.0, "the held PBX was bridged: {text}");
    assert_eq!(
        sample(
            &text,
            "whatsip_watchdog_interventions_total{kind=\"media_timeout\"}"
        ),
        Some(0.0)
    );
    // the whole dialog, message by message: INVITE/180/200/ACK, two re-INVITEs from the
    // PBX (each 100 + 200, then ACK), our BYE and its 200
    let expect = [
        ("out", "INVITE", "", 1.0),
        ("in", "INVITE", "180", 1.0),
        ("in", "INVITE", "200", 1.0),
        ("out", "ACK", "", 1.0),
        ("in", "INVITE", "", 2.0),
        ("out", "INVITE", "100", 2.0),
        ("out", "INVITE", "200", 2.0),
        ("in", "ACK", "", 2.0),
        ("out", "BYE", "", 1.0),
        ("in", "BYE", "200", 1.0),
    ];
    for (flow, method, status, want) in expect {
        assert_eq!(
            sip_count(&text, flow, method, status),
            want,
            "{flow} {method} {status}:\n{text}"
        );
    }
    let lines = text
        .lines()
        .filter(|l| l.starts_with("whatsip_sip_messages_total{"))
        .count();
    assert_eq!(lines, expect.len(), "no other message: {text}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_readyz_follows_graph_reachability_and_errors_carry_meta_codes() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let admin = free_port();
    // the readiness probe finds Meta silent once; the call's pre_accept gets Meta's 138004
    let faults = Faults {
        graph: vec![
            GraphFaultRule {
                endpoint: Some("settings".into()),
                action: None,
                fault: GraphFault::NoResponse,
                times: Some(1),
            },
            GraphFaultRule {
                endpoint: Some("calls".into()),
                action: Some("pre_accept".into()),
                fault: GraphFault::Error { code: 138_004 },
                times: Some(1),
            },
        ],
        ..Faults::default()
    };
    // no SIPp: a call whose pre_accept fails never rings the PBX
    let Some(h) = inbound_harness(InboundOpts {
        admin_port: Some(admin),
        state: Some(state.path()),
        faults,
        rtp_base: 45_000,
        ..InboundOpts::new(Kind::Udp, None)
    })
    .await
    else {
        return;
    };
    let addr = h.gw.as_ref().unwrap().admin_addr().expect("admin enabled");

    // nothing was sent yet: /readyz probes GET settings, which Meta never answers
    let (status, graph, detail) = graph_readiness(addr).await;
    assert_eq!((status, graph.as_str()), (503, "unreachable"), "{detail}");
    assert!(detail.starts_with("settings_probe: "), "{detail}");
    // the verdict is kept: a second /readyz does not probe again
    let (status, graph, _) = graph_readiness(addr).await;
    assert_eq!((status, graph.as_str()), (503, "unreachable"));
    let probes = h
        .sim
        .graph_requests()
        .iter()
        .filter(|r| r.path.ends_with("/settings"))
        .count();
    assert_eq!(probes, 1, "one bounded probe");

    // a call: pre_accept answered with Meta's error body, then the reject
    let id = h.user_calls().await;
    h.sim
        .wait_for_graph_request(WAIT, |r| r.is_call_action("reject"))
        .await
        .expect("the gateway rejected the call");
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    // the call task recorded its Graph requests before it left
    assert_released(h.gw.as_ref().unwrap()).await;
    assert_eq!(h.graph_actions(), ["pre_accept", "reject"]);
    let (status, graph, detail) = graph_readiness(addr).await;
    assert_eq!(
        (status, graph.as_str()),
        (200, "reachable"),
        "any http reply proves meta reachable: {detail}"
    );

    let (_, text) = http_get(addr, "/metrics").await;
    let get = |p: &str| sample(&text, p).unwrap_or_else(|| panic!("{p} missing in\n{text}"));
    assert_eq!(
        get("whatsip_graph_errors_total{action=\"pre_accept\",code=\"138004\"}"),
        1.0
    );
    assert_eq!(
        get("whatsip_graph_errors_total{action=\"settings_probe\",code=\"transport\"}"),
        1.0
    );
    assert_eq!(
        get("whatsip_graph_latency_seconds_count{action=\"reject\"}"),
        1.0
    );
    assert!(
        !text.contains("whatsip_graph_errors_total{action=\"reject\""),
        "{text}"
    );
    h.finish().await;
}
