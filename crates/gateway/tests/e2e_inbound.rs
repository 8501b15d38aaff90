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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use whatsip_gateway::config::{Config, Environment};
use whatsip_gateway::runtime::{CallMilestone, Gateway, GatewayHandle, MilestoneKind};
use whatsip_sim::core::{CallState, CoreConfig, UserCall};
use whatsip_sim::{
    FaultAction, FaultRule, Faults, GraphFault, GraphFaultRule, PhoneProbe, SimConfig, SimHandle,
    Simulator, WaCallId, WaId, WebRtcPeerFactory, WebhookConfig, WebhookMatch,
};

const APP_SECRET: &str = "e2e-app-secret";
const PNID: &str = "106540352242922";
const TONE_HZ: f64 = 1_000.0;
const WAIT: Duration = Duration::from_secs(30);

/// One test at a time: each runs two WebRTC peers, Opus codecs and SIPp.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Each test gets its own RTP range.
static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Udp,
    Tcp,
}

impl Kind {
    fn sipp_flag(self) -> &'static str {
        match self {
            Kind::Udp => "u1",
            Kind::Tcp => "t1",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
        }
    }
}

struct TestEnv;

impl Environment for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "E2E_TOKEN" => Some("e2e-token".into()),
            "E2E_SECRET" => Some(APP_SECRET.into()),
            "E2E_VERIFY" => Some("e2e-verify".into()),
            "E2E_PBX_PASSWORD" => Some("s3cret".into()),
            _ => None,
        }
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.display().to_string(),
        ))
    }
}

#[derive(Debug)]
struct SippRun {
    status: Option<i32>,
    killed: bool,
    messages: String,
    stderr: String,
}

struct Harness {
    sim: SimHandle,
    phones: whatsip_sim::PhoneRegistry,
    gw: Option<GatewayHandle>,
    milestones: broadcast::Receiver<CallMilestone>,
    seen: Vec<MilestoneKind>,
    sipp: Option<std::thread::JoinHandle<SippRun>>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// `sipp` on PATH; `None` (test skipped) only outside CI.
fn sipp() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("sipp"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "sipp not found on PATH (install with scripts/setup.sh)"
        );
        eprintln!("\n!!!!!!!! SIPp NOT FOUND: SKIPPING E2E TEST (run scripts/setup.sh) !!!!!!!!\n");
    }
    found
}

/// A port free on both UDP and TCP at 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port")
}

/// Starts SIPp as the PBX in a thread; it is killed if it runs over `limit`.
fn start_sipp(
    sipp: PathBuf,
    kind: Kind,
    scenario: &str,
    port: u16,
    media_port: u16,
    dir: &Path,
    calls: u64,
) -> std::thread::JoinHandle<SippRun> {
    let scenario = repo_root().join("tests/sipp").join(scenario);
    assert!(scenario.is_file(), "{} missing", scenario.display());
    let messages = dir.join("messages.log");
    let args: Vec<String> = vec![
        "-sf".into(),
        scenario.display().to_string(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-mi".into(),
        "127.0.0.1".into(),
        "-mp".into(),
        media_port.to_string(),
        "-rtp_echo".into(),
        "-t".into(),
        kind.sipp_flag().into(),
        "-m".into(),
        calls.to_string(),
        "-nostdin".into(),
        "-timeout".into(),
        "90s".into(),
        "-timeout_error".into(),
        "-trace_msg".into(),
        "-message_file".into(),
        messages.display().to_string(),
        "-trace_err".into(),
        "-error_file".into(),
        dir.join("errors.log").display().to_string(),
    ];
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let mut child = Command::new(sipp)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipp");
        let mut killed = false;
        let mut status = None;
        // bounded: 100 s in 50 ms steps
        for _ in 0..2000 {
            if let Some(s) = child.try_wait().unwrap() {
                status = s.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() && child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            killed = true;
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        SippRun {
            status,
            killed,
            messages: std::fs::read_to_string(&messages).unwrap_or_default(),
            stderr: stderr + &std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default(),
        }
    })
}

async fn wait_tcp_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("sipp never listened on tcp {port}");
}

async fn harness(kind: Kind, scenario: &str, ring_timeout_s: u64) -> Option<Harness> {
    harness_with(kind, Some(scenario), ring_timeout_s, Faults::default()).await
}

/// `scenario: None` starts no SIPp (the PBX must never be contacted).
async fn harness_with(
    kind: Kind,
    scenario: Option<&str>,
    ring_timeout_s: u64,
    faults: Faults,
) -> Option<Harness> {
    harness_full(kind, scenario, ring_timeout_s, faults, 1, "agent", "", "").await
}

/// As [`harness_with`], with SIPp taking `sipp_calls` calls, the rule's target user and
/// extra rule lines (`fallback = …`).
#[allow(clippy::too_many_arguments)] // a test helper; every caller names what it changes
async fn harness_full(
    kind: Kind,
    scenario: Option<&str>,
    ring_timeout_s: u64,
    faults: Faults,
    sipp_calls: u64,
    target_user: &str,
    rule_extra: &str,
    pbx_extra: &str,
) -> Option<Harness> {
    let sipp = sipp()?;
    let dir = std::env::temp_dir().join(format!(
        "whatsip-e2e-{}-{}",
        std::process::id(),
        NEXT_RANGE.load(Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    let sipp_port = free_port();
    let sipp_media = free_port();
    let sipp = scenario.map(|scenario| {
        start_sipp(
            sipp, kind, scenario, sipp_port, sipp_media, &dir.0, sipp_calls,
        )
    });
    match (kind, scenario) {
        (_, None) => {}
        (Kind::Tcp, Some(_)) => wait_tcp_listening(sipp_port).await,
        // no way to probe UDP without confusing SIPp; the INVITE is retransmitted anyway
        (Kind::Udp, Some(_)) => tokio::time::sleep(Duration::from_millis(300)).await,
    }

    let webhook_port = free_port();
    let factory = WebRtcPeerFactory::new(Some(TONE_HZ));
    let phones = factory.registry();
    let sim = Simulator::start(SimConfig {
        core: CoreConfig::default(),
        webhook: WebhookConfig {
            url: Some(format!("http://127.0.0.1:{webhook_port}/webhook")),
            app_secret: APP_SECRET.into(),
            ..WebhookConfig::default()
        },
        peers: Arc::new(factory),
        faults,
        ..SimConfig::default()
    })
    .await
    .unwrap();

    let sip_port = free_port();
    let range = 41_000 + 40 * (NEXT_RANGE.fetch_add(1, Ordering::Relaxed) % 100);
    let toml = format!(
        r#"
[meta]
graph_base_url = "{graph}"
access_token = {{ env = "E2E_TOKEN" }}
app_secret = {{ env = "E2E_SECRET" }}
verify_token = {{ env = "E2E_VERIFY" }}

[[business_numbers]]
phone_number_id = "{PNID}"
number = "+4930901820"

[webhook]
listen = "127.0.0.1:{webhook_port}"

[[sip.listen]]
transport = "udp"
address = "127.0.0.1:{sip_port}"

[[sip.listen]]
transport = "tcp"
address = "127.0.0.1:{sip_port}"

[pbx]
address = "127.0.0.1:{sipp_port}"
transport = "{transport}"
{codecs_line}
options_ping_interval_s = 0
{pbx_extra}

[media]
bind = "127.0.0.1"
rtp_port_min = {range}
rtp_port_max = {range_end}

[logging]
redact_phone_numbers = false

[admin]
listen = ""

[dialplan]
ring_timeout_s = {ring_timeout_s}

[[dialplan.rule]]
name = "e2e-agents"
direction = "inbound"
target = "sip:{target_user}@127.0.0.1:{sipp_port}"
headers = {{ "X-E2E-Rule" = "${{rule}}" }}
{rule_extra}
"#,
        graph = sim.base_url(),
        transport = kind.name(),
        range_end = range + 39,
        // a test may choose the PBX codecs through `pbx_extra`
        codecs_line = if pbx_extra.contains("codecs") {
            ""
        } else {
            r#"codecs = ["PCMU", "PCMA"]"#
        },
    );
    let config = Config::from_toml(&toml, Path::new("e2e.toml"), &TestEnv).unwrap();
    let gw = Gateway::start(config).await.unwrap();
    let milestones = gw.subscribe();
    Some(Harness {
        sim,
        phones,
        gw: Some(gw),
        milestones,
        seen: Vec::new(),
        sipp,
        _dir: dir,
    })
}

impl Harness {
    async fn user_calls(&self) -> WaCallId {
        let mut call = UserCall::new(
            WaId::parse("4915112345678").unwrap(),
            whatsip_sim::PhoneNumberId::parse(PNID).unwrap(),
        );
        call.cta_payload = Some("support-button".into());
        self.sim.user_calls(call).await.unwrap()
    }

    fn phone(&self) -> PhoneProbe {
        self.phones.last().expect("the simulator created a phone")
    }

    /// The Graph `/calls` actions the simulator received, in order.
    fn graph_actions(&self) -> Vec<String> {
        self.sim
            .graph_requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/calls") && r.method == "POST")
            .filter_map(|r| r.action)
            .collect()
    }

    async fn sipp_result(&mut self) -> SippRun {
        let h = self.sipp.take().unwrap();
        tokio::task::spawn_blocking(move || h.join().unwrap())
            .await
            .unwrap()
    }

    /// Milestones published so far.
    fn milestones(&mut self) -> &[MilestoneKind] {
        while let Ok(m) = self.milestones.try_recv() {
            self.seen.push(m.kind);
        }
        &self.seen
    }

    /// Waits (bounded) for a milestone matching `pred`.
    async fn wait_milestone(&mut self, pred: impl Fn(&MilestoneKind) -> bool) -> bool {
        for _ in 0..(WAIT.as_millis() / 25) {
            if self.milestones().iter().any(&pred) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Waits until the gateway has no call and no RTP port left, then shuts everything.
    async fn finish(mut self) -> Vec<MilestoneKind> {
        let gw = self.gw.take().unwrap();
        let mut clean = false;
        for _ in 0..200 {
            if gw.calls_in_progress() == 0 && gw.media_ports_in_use() == 0 {
                clean = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            clean,
            "left behind: {} calls, {} rtp port pairs",
            gw.calls_in_progress(),
            gw.media_ports_in_use()
        );
        let ms = self.milestones().to_vec();
        gw.shutdown().await;
        self.sim.shutdown().await;
        ms
    }
}

fn tone_ok(s: &whatsip_media::phone::PhoneStatus) -> bool {
    s.audio
        .tone
        .as_ref()
        .is_some_and(|t| (t.freq_hz - TONE_HZ).abs() <= 50.0 && t.frames >= 25)
}

fn assert_sipp_ok(run: &SippRun) {
    assert!(
        run.status == Some(0) && !run.killed,
        "sipp failed: {:?} killed={} stderr={}\nmessages:\n{}",
        run.status,
        run.killed,
        run.stderr,
        run.messages
    );
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
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    let invites = run.messages.matches("INVITE sip:agent@").count();
    assert_eq!(invites, 1, "{}", run.messages);
    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);
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
    let Some(mut h) = harness_full(
        Kind::Udp,
        Some("uas_wa_fallback.xml"),
        20,
        Faults::default(),
        2,
        "busy",
        fallback,
        "",
    )
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
    let ms = h.finish().await;
    assert!(
        !ms.iter().any(|k| matches!(k, MilestoneKind::Accepted)),
        "{ms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_five_concurrent_calls_each_hear_their_echo() {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness_full(
        Kind::Udp,
        Some("uas_wa_echo.xml"),
        20,
        Faults::default(),
        5,
        "agent",
        "",
        "",
    )
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
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_udp_pbx_digest_challenge_is_answered_with_trunk_credentials() {
    let _serial = SERIAL.lock().await;
    let auth = r#"outbound_auth = { username = "trunk", password = { env = "E2E_PBX_PASSWORD" } }"#;
    let Some(mut h) = harness_full(
        Kind::Udp,
        Some("uas_wa_auth.xml"),
        20,
        Faults::default(),
        1,
        "agent",
        "",
        auth,
    )
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
    h.finish().await;
}

/// One answered call with the PBX (SIPp `-rtp_echo`) answering `rtpmap`: the phone's 1 kHz
/// Opus tone crosses the gateway to the PBX leg in that codec, comes back from the echo and is
/// heard at the phone at the right frequency. For Opus the gateway passes the packets through
/// untouched.
async fn answered_call_in_codec(scenario: &str, codecs: &str, want_codec: &str, rtpmap: &str) {
    let _serial = SERIAL.lock().await;
    let Some(mut h) = harness_full(
        Kind::Udp,
        Some(scenario),
        20,
        Faults::default(),
        1,
        "agent",
        "",
        &format!("codecs = {codecs}"),
    )
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
    h.sim.user_hangs_up(&id).await.unwrap();
    h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    let run = h.sipp_result().await;
    assert_sipp_ok(&run);
    // our offer carried the codec the PBX then chose
    assert!(run.messages.contains(rtpmap), "{}", run.messages);
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
