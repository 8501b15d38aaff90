//! The harness the end-to-end tests share (`mod common;` in `e2e_inbound.rs`,
//! `e2e_outbound.rs` and `ops_e2e.rs`): free ports, temp dirs, SIPp as the PBX (UAS in a
//! thread, UAC run to its end), the simulator with a real WebRTC phone, the gateway config,
//! the inbound harness, and the CDR checks.
//!
//! Every wait is bounded; every port is picked free on 127.0.0.1. Items not every test file
//! uses carry `#[allow(dead_code)]`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use whatsip_gateway::config::{Config, Environment};
use whatsip_gateway::runtime::{CallMilestone, Gateway, GatewayHandle, MilestoneKind};
use whatsip_sim::core::{CallState, CoreConfig, UserCall};
use whatsip_sim::{
    Faults, PhoneProbe, PhoneRegistry, SimConfig, SimHandle, Simulator, WaCallId, WaId,
    WebRtcPeerFactory, WebhookConfig,
};

#[allow(dead_code)] // each test file uses the checks its calls need
pub(crate) mod cdr;

/// The app secret the simulator signs webhooks with.
pub(crate) const APP_SECRET: &str = "e2e-app-secret";
/// The business phone number id every config declares.
pub(crate) const PNID: &str = "106540352242922";
/// The business number behind [`PNID`].
#[allow(dead_code)]
pub(crate) const BUSINESS: &str = "4930901820";
/// The WhatsApp user of single-call tests.
#[allow(dead_code)]
pub(crate) const CUSTOMER: &str = "4915112345678";
/// The tone the simulator's phones play.
pub(crate) const TONE_HZ: f64 = 1_000.0;
/// Generous bound for anything that takes well under a second on an idle machine.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The PBX trunk transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum Kind {
    Udp,
    Tcp,
}

#[allow(dead_code)]
impl Kind {
    pub(crate) fn sipp_flag(self) -> &'static str {
        match self {
            Kind::Udp => "u1",
            Kind::Tcp => "t1",
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
        }
    }
}

/// The secrets the test configs name.
pub(crate) struct TestEnv;

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

/// How a SIPp run ended, with what it logged.
#[derive(Debug)]
pub(crate) struct SippRun {
    pub(crate) status: Option<i32>,
    pub(crate) killed: bool,
    pub(crate) messages: String,
    pub(crate) stderr: String,
}

/// A directory removed on drop.
pub(crate) struct TempDir(pub PathBuf);

static NEXT_DIR: AtomicU16 = AtomicU16::new(0);

impl TempDir {
    /// A fresh `$TMPDIR/{prefix}-{pid}-{n}`.
    pub(crate) fn new(prefix: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tests/sipp/{name}` of the repository, which must exist.
pub(crate) fn sipp_scenario(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("tests/sipp")
        .join(name);
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// `sipp` on PATH; `None` (test skipped) only outside CI.
pub(crate) fn sipp() -> Option<PathBuf> {
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
pub(crate) fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port")
}

/// Runs SIPp (blocking) until it exits, `stop` is set or `limit` runs out (then it is
/// killed); `messages` and `errors` are the files its `-message_file` / `-error_file` name.
pub(crate) fn run_sipp(
    sipp: &Path,
    args: &[String],
    dir: &Path,
    messages: &Path,
    errors: &Path,
    stop: Option<&AtomicBool>,
    limit: Duration,
) -> SippRun {
    let mut child = Command::new(sipp)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp");
    let mut killed = false;
    let mut status = None;
    // bounded: `limit` in 50 ms steps
    for _ in 0..(limit.as_millis() / 50) {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
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
        messages: std::fs::read_to_string(messages).unwrap_or_default(),
        stderr: stderr + &std::fs::read_to_string(errors).unwrap_or_default(),
    }
}

/// Starts SIPp as the PBX (UAS `scenario`, RTP echo, `calls` calls) in a thread; it is
/// killed if it runs over 100 s or when `stop` is set.
#[allow(clippy::too_many_arguments, dead_code)] // every caller names what it passes
pub(crate) fn start_sipp_uas(
    sipp: PathBuf,
    kind: Kind,
    scenario: &str,
    port: u16,
    media_port: u16,
    dir: &Path,
    calls: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<SippRun> {
    let scenario = sipp_scenario(scenario);
    let messages = dir.join("messages.log");
    let errors = dir.join("errors.log");
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
        errors.display().to_string(),
    ];
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        run_sipp(
            &sipp,
            &args,
            &dir,
            &messages,
            &errors,
            Some(&stop),
            Duration::from_secs(100),
        )
    })
}

/// Waits (bounded) until something listens on TCP `port`.
#[allow(dead_code)]
pub(crate) async fn wait_tcp_listening(port: u16) {
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

/// Starts the simulator with WebRTC phones playing [`TONE_HZ`], posting signed webhooks to
/// the gateway's `webhook_port`.
pub(crate) async fn start_sim(
    core: CoreConfig,
    faults: Faults,
    webhook_port: u16,
) -> (SimHandle, PhoneRegistry) {
    let factory = WebRtcPeerFactory::new(Some(TONE_HZ));
    let phones = factory.registry();
    let sim = Simulator::start(SimConfig {
        core,
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
    (sim, phones)
}

/// The `[meta]`, first `[[business_numbers]]` ([`PNID`]) and `[webhook]` sections of a
/// gateway config talking to the simulator at `graph`.
pub(crate) fn meta_toml(graph: &str, webhook_port: u16) -> String {
    format!(
        r#"
[meta]
graph_base_url = "{graph}"
access_token = {{ env = "E2E_TOKEN" }}
app_secret = {{ env = "E2E_SECRET" }}
verify_token = {{ env = "E2E_VERIFY" }}

[[business_numbers]]
phone_number_id = "{PNID}"
number = "+{BUSINESS}"

[webhook]
listen = "127.0.0.1:{webhook_port}"
"#
    )
}

/// The `[media]` (40 RTP ports from `first_port`, on 127.0.0.1) and `[logging]` sections.
pub(crate) fn media_toml(first_port: u16) -> String {
    format!(
        r#"
[media]
bind = "127.0.0.1"
rtp_port_min = {first_port}
rtp_port_max = {last}

[logging]
redact_phone_numbers = false
"#,
        last = first_port + 39
    )
}

/// The Graph `/calls` actions the simulator received, in order.
pub(crate) fn graph_actions(sim: &SimHandle) -> Vec<String> {
    sim.graph_requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/calls") && r.method == "POST")
        .filter_map(|r| r.action)
        .collect()
}

/// Waits (bounded) until the gateway holds no call and no RTP port; panics otherwise.
pub(crate) async fn assert_released(gw: &GatewayHandle) {
    for _ in 0..200 {
        if gw.calls_in_progress() == 0 && gw.media_ports_in_use() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "left behind: {} calls, {} rtp port pairs",
        gw.calls_in_progress(),
        gw.media_ports_in_use()
    );
}

/// The phone hears its own tone back.
#[allow(dead_code)]
pub(crate) fn tone_ok(s: &whatsip_media::phone::PhoneStatus) -> bool {
    s.audio
        .tone
        .as_ref()
        .is_some_and(|t| (t.freq_hz - TONE_HZ).abs() <= 50.0 && t.frames >= 25)
}

pub(crate) fn assert_sipp_ok(run: &SippRun) {
    assert!(
        run.status == Some(0) && !run.killed,
        "sipp failed: {:?} killed={} stderr={}\nmessages:\n{}",
        run.status,
        run.killed,
        run.stderr,
        run.messages
    );
}

/// What an inbound harness runs: the PBX trunk, SIPp's scenario and the config knobs the
/// tests change.
#[allow(dead_code)]
pub(crate) struct InboundOpts<'a> {
    pub(crate) kind: Kind,
    /// `None` starts no SIPp (the PBX must never be contacted).
    pub(crate) scenario: Option<&'a str>,
    pub(crate) ring_timeout_s: u64,
    pub(crate) faults: Faults,
    /// Calls SIPp takes before it exits.
    pub(crate) sipp_calls: u64,
    /// The user part of the rule's target.
    pub(crate) target_user: &'a str,
    /// Extra lines in the rule (`fallback = …`).
    pub(crate) rule_extra: &'a str,
    /// Extra lines in `[pbx]` (`codecs = …` replaces the default PCMU, PCMA).
    pub(crate) pbx_extra: &'a str,
    /// The admin server's port (none when `None`).
    pub(crate) admin_port: Option<u16>,
    /// Where `cdr.db` and `cdr.jsonl` go (the harness's temp dir when `None`).
    pub(crate) state: Option<&'a Path>,
    /// `false`: no gateway is started (the test runs the binary with
    /// [`InboundHarness::toml`]).
    pub(crate) in_process: bool,
    /// First port of this test binary's RTP ranges (40 ports a harness).
    pub(crate) rtp_base: u16,
}

#[allow(dead_code)]
impl<'a> InboundOpts<'a> {
    pub(crate) fn new(kind: Kind, scenario: Option<&'a str>) -> Self {
        InboundOpts {
            kind,
            scenario,
            ring_timeout_s: 20,
            faults: Faults::default(),
            sipp_calls: 1,
            target_user: "agent",
            rule_extra: "",
            pbx_extra: "",
            admin_port: None,
            state: None,
            in_process: true,
            rtp_base: 41_000,
        }
    }
}

/// Simulator → gateway → SIPp as the PBX, for user-initiated calls.
#[allow(dead_code)]
pub(crate) struct InboundHarness {
    pub(crate) sim: SimHandle,
    pub(crate) phones: PhoneRegistry,
    pub(crate) gw: Option<GatewayHandle>,
    milestones: broadcast::Receiver<CallMilestone>,
    seen: Vec<MilestoneKind>,
    sipp: Option<std::thread::JoinHandle<SippRun>>,
    /// Set to stop SIPp early (a test that kills the gateway mid-call).
    pub(crate) sipp_stop: Arc<AtomicBool>,
    /// The gateway's config (for a test that runs the binary instead).
    pub(crate) toml: String,
    /// The CDR store the config names.
    pub(crate) cdr_db: PathBuf,
    /// The CDR JSON-lines export the config names.
    pub(crate) cdr_jsonl: PathBuf,
    _dir: TempDir,
}

static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

/// Starts SIPp (if any), the simulator and the gateway as `opts` says; `None` when SIPp is
/// not installed (outside CI).
#[allow(dead_code)]
pub(crate) async fn inbound_harness(opts: InboundOpts<'_>) -> Option<InboundHarness> {
    let sipp = sipp()?;
    let dir = TempDir::new("whatsip-e2e-in");
    let sipp_port = free_port();
    let sipp_media = free_port();
    let sipp_stop = Arc::new(AtomicBool::new(false));
    let sipp = opts.scenario.map(|scenario| {
        start_sipp_uas(
            sipp,
            opts.kind,
            scenario,
            sipp_port,
            sipp_media,
            &dir.0,
            opts.sipp_calls,
            sipp_stop.clone(),
        )
    });
    match (opts.kind, opts.scenario) {
        (_, None) => {}
        (Kind::Tcp, Some(_)) => wait_tcp_listening(sipp_port).await,
        // no way to probe UDP without confusing SIPp; the INVITE is retransmitted anyway
        (Kind::Udp, Some(_)) => tokio::time::sleep(Duration::from_millis(300)).await,
    }

    let webhook_port = free_port();
    let (sim, phones) = start_sim(CoreConfig::default(), opts.faults, webhook_port).await;

    let sip_port = free_port();
    let range = opts.rtp_base + 40 * (NEXT_RANGE.fetch_add(1, Ordering::Relaxed) % 100);
    let state = opts.state.unwrap_or(&dir.0);
    let (cdr_db, cdr_jsonl) = (state.join("cdr.db"), state.join("cdr.jsonl"));
    let toml = format!(
        r#"{meta}
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

{media}
[admin]
listen = "{admin}"

[cdr]
path = "{db}"
jsonl_path = "{jsonl}"

[dialplan]
ring_timeout_s = {ring_timeout_s}

[[dialplan.rule]]
name = "e2e-agents"
direction = "inbound"
target = "sip:{target_user}@127.0.0.1:{sipp_port}"
headers = {{ "X-E2E-Rule" = "${{rule}}" }}
{rule_extra}
"#,
        meta = meta_toml(&sim.base_url(), webhook_port),
        transport = opts.kind.name(),
        pbx_extra = opts.pbx_extra,
        media = media_toml(range),
        admin = opts
            .admin_port
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_default(),
        db = cdr_db.display(),
        jsonl = cdr_jsonl.display(),
        ring_timeout_s = opts.ring_timeout_s,
        target_user = opts.target_user,
        rule_extra = opts.rule_extra,
        // a test may choose the PBX codecs through `pbx_extra`
        codecs_line = if opts.pbx_extra.contains("codecs") {
            ""
        } else {
            r#"codecs = ["PCMU", "PCMA"]"#
        },
    );
    let (gw, milestones) = if opts.in_process {
        let config = Config::from_toml(&toml, Path::new("e2e.toml"), &TestEnv).unwrap();
        let gw = Gateway::start(config).await.unwrap();
        let milestones = gw.subscribe();
        (Some(gw), milestones)
    } else {
        (None, broadcast::channel(1).1)
    };
    Some(InboundHarness {
        sim,
        phones,
        gw,
        milestones,
        seen: Vec::new(),
        sipp,
        sipp_stop,
        toml,
        cdr_db,
        cdr_jsonl,
        _dir: dir,
    })
}

#[allow(dead_code)]
impl InboundHarness {
    /// [`CUSTOMER`] calls the business (CTA payload `support-button`).
    pub(crate) async fn user_calls(&self) -> WaCallId {
        self.user_calls_from(CUSTOMER).await
    }

    /// `from` calls the business (CTA payload `support-button`).
    pub(crate) async fn user_calls_from(&self, from: &str) -> WaCallId {
        let mut call = UserCall::new(
            WaId::parse(from).unwrap(),
            whatsip_sim::PhoneNumberId::parse(PNID).unwrap(),
        );
        call.cta_payload = Some("support-button".into());
        self.sim.user_calls(call).await.unwrap()
    }

    /// The phone of the latest call.
    pub(crate) fn phone(&self) -> PhoneProbe {
        self.phones.last().expect("the simulator created a phone")
    }

    /// The Graph `/calls` actions the simulator received, in order.
    pub(crate) fn graph_actions(&self) -> Vec<String> {
        graph_actions(&self.sim)
    }

    /// Waits for SIPp to exit (or be killed at its limit).
    pub(crate) async fn sipp_result(&mut self) -> SippRun {
        let h = self.sipp.take().unwrap();
        tokio::task::spawn_blocking(move || h.join().unwrap())
            .await
            .unwrap()
    }

    /// Milestones published so far.
    pub(crate) fn milestones(&mut self) -> &[MilestoneKind] {
        while let Ok(m) = self.milestones.try_recv() {
            self.seen.push(m.kind);
        }
        &self.seen
    }

    /// Waits (bounded) for a milestone matching `pred`.
    pub(crate) async fn wait_milestone(&mut self, pred: impl Fn(&MilestoneKind) -> bool) -> bool {
        for _ in 0..(WAIT.as_millis() / 25) {
            if self.milestones().iter().any(&pred) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Waits until the call reached `Active` on the simulator.
    pub(crate) async fn wait_active(&self, id: &WaCallId) {
        self.sim
            .wait_for_call_state(id, CallState::Active, WAIT)
            .await
            .expect("the gateway accepted the call");
    }

    /// The one final CDR of call `id`, read as soon as the gateway released the call's
    /// resources (no live call, no RTP port): it must be committed by then.
    pub(crate) async fn released_cdr(&self, id: &WaCallId) -> whatsip_cdr::CallRecord {
        if let Some(gw) = &self.gw {
            assert_released(gw).await;
        }
        cdr::record_for(&self.cdr_db, id.as_str())
    }

    /// The SIP Call-ID of the gateway's first INVITE to `user` in SIPp's log.
    pub(crate) fn pbx_call_id(run: &SippRun, user: &str) -> cdr::PbxLeg {
        match cdr::sip_call_id_in(&run.messages, &format!("INVITE sip:{user}@")) {
            Some(id) => cdr::PbxLeg::CallId(id),
            None => panic!("no INVITE to {user} in SIPp's log:\n{}", run.messages),
        }
    }

    /// Waits until the gateway has no call and no RTP port left, then shuts everything.
    pub(crate) async fn finish(mut self) -> Vec<MilestoneKind> {
        let gw = self.gw.take().unwrap();
        assert_released(&gw).await;
        let ms = self.milestones().to_vec();
        gw.shutdown().await;
        self.sim.shutdown().await;
        ms
    }
}
