//! Load driver for whatsip on 127.0.0.1 (issue 7).
//!
//! WhatsApp side: whatsip-sim in this process, each simulated user with a real WebRTC phone
//! (ICE, DTLS-SRTP, Opus 1 kHz tone). Gateway: a separate `whatsip run --config` process, so
//! its CPU and memory accounting (`/proc/<pid>/stat`, `/proc/<pid>/status`) is its own. PBX
//! side: SIPp UAS with `-rtp_echo` (PCMU answer for `transcode`, Opus for `passthrough` and
//! `signalling`).
//!
//! `--direction` (default `inbound`): `inbound` — the users call in, the UAS answers and
//! echoes; `outbound` — SIPp as a UAC (`scripts/bench/uac_pcap.xml`) places business-initiated
//! calls at the same `--rate` / `--concurrent` / `--total`, holds each `--hold` seconds and
//! hangs up; its RTP is played from a pcap this driver generates at start (Opus PT 111 for
//! `passthrough`, PCMU PT 0 for `transcode`, none for `signalling`: a 600 Hz tone the phones
//! tell from their own 1 kHz), and the users pick up at once; `mixed` — both at the same
//! time, each direction with those figures (so `--concurrent 1000` means 1,000 + 1,000).
//!
//! Phones (`--phones`): `light` (default) loops pre-encoded Opus frames and decodes one
//! received frame in `--decode-one-in` (so the load generator costs less than the gateway);
//! `full` encodes and decodes every frame. The `signalling` profile's phones set up ICE and
//! DTLS-SRTP but send no audio. `--gateway-cpus 0` runs whatsip under `taskset -c 0`
//! (`scripts/bench/run.sh` with `BENCH_PIN=1` also pins this driver and SIPp to the other core).
//!
//! Calls are placed at `--rate` per second, never more than `--concurrent` at once, each
//! held `--hold` seconds, `--total` in all; every wait is bounded. The report goes to
//! `--out` (JSON) and stdout (table). Setup latencies come from the gateway's JSON log
//! (`call milestone` lines with their `at_us` stamps) and this driver's dial time; media
//! loss per direction and the gateway's added latency from its `/metrics` at the end.
//!
//! ```text
//! cargo build --release -p whatsip-gateway --bin whatsip --example bench_load
//! target/release/examples/bench_load --whatsip target/release/whatsip \
//!     --profile passthrough --rate 10 --concurrent 100 --hold 20 --total 200 --out report.json
//! ```
//! `scripts/bench/run.sh PROFILE RATE CONCURRENT HOLD_S TOTAL` wraps this with timeouts.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    missing_docs,
    unreachable_pub,
    dead_code
)]

#[path = "bench_load/outbound.rs"]
mod outbound;
#[path = "bench_load/pcap.rs"]
mod pcap;
#[path = "bench_load/procfs.rs"]
mod procfs;
#[path = "bench_load/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use procfs::{DropTracker, Proc, cpu_seconds, free_port, free_rtp_base, loadavg, rss_kib};
use report::{CallResult, Measures};
use whatsip_sim::core::{BusinessCallBehaviour, CallState, CoreConfig, UserCall};
use whatsip_sim::{
    PhoneNumberId, PhoneProbe, SimConfig, Simulator, WaId, WebRtcPeerFactory, WebhookConfig,
};

const APP_SECRET: &str = "bench-app-secret";
const PNID: &str = "106540352242922";
const TONE_HZ: f64 = 1_000.0;
/// The PBX's tone in outbound calls (the pcap), unlike the phones' 1 kHz.
const PBX_TONE_HZ: f64 = 600.0;

/// The one place this driver reads the clocks.
struct Clock;

impl Clock {
    #[allow(clippy::disallowed_methods)]
    fn mono() -> std::time::Instant {
        std::time::Instant::now()
    }
    /// Wall clock, microseconds since the Unix epoch (to compare with the gateway's log).
    #[allow(clippy::disallowed_methods)]
    fn wall_us() -> i64 {
        jiff::Timestamp::now().as_microsecond()
    }
}

/// What the PBX leg does with the audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Opus (WhatsApp) ⇄ PCMU (PBX).
    Transcode,
    /// Opus on both legs (SRTP ⇄ RTP relay).
    Passthrough,
    /// Call setup only: phones do ICE + DTLS-SRTP but send no audio; short holds.
    Signalling,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "transcode" => Some(Self::Transcode),
            "passthrough" => Some(Self::Passthrough),
            "signalling" => Some(Self::Signalling),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Transcode => "transcode",
            Self::Passthrough => "passthrough",
            Self::Signalling => "signalling",
        }
    }
    pub fn has_media(self) -> bool {
        self != Self::Signalling
    }
}

/// Who places the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// WhatsApp users call the business (the simulator dials, SIPp UAS answers and echoes).
    Inbound,
    /// The PBX calls WhatsApp users (SIPp UAC with RTP from a pcap, the users pick up).
    Outbound,
    /// Both at once, each with the run's rate, concurrency and total.
    Mixed,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            "mixed" => Some(Self::Mixed),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Mixed => "mixed",
        }
    }
    pub fn inbound(self) -> bool {
        self != Self::Outbound
    }
    pub fn outbound(self) -> bool {
        self != Self::Inbound
    }
}

/// How the load generator's phones make and check audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneMode {
    /// Encode every frame, decode every packet (the simulator's test phone).
    Full,
    /// Pre-encoded frames in a loop, sampled decoding, echo matching (load generation).
    Light,
}

impl PhoneMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "light" => Some(Self::Light),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Light => "light",
        }
    }
}

/// A run's parameters.
#[derive(Clone, Debug)]
pub struct Options {
    pub profile: Profile,
    pub direction: Direction,
    pub rate: f64,
    pub concurrent: usize,
    pub hold: Duration,
    pub total: usize,
    pub whatsip: PathBuf,
    pub sipp: PathBuf,
    /// Directory of the SIPp scenarios (repo `tests/sipp` and `scripts/bench`).
    pub repo: PathBuf,
    pub work_dir: PathBuf,
    pub out: PathBuf,
    pub phones: PhoneMode,
    /// Light phones decode a burst of three frames in every this many received.
    pub decode_one_in: u32,
    /// `taskset -c` CPU list for the whatsip process (`None`: not pinned).
    pub gateway_cpus: Option<String>,
    /// Extra `key = value` lines for the gateway's `[media]` section.
    pub media_config: Vec<String>,
}

impl Options {
    /// Defaults for a run of `profile` (the smoke test and the CLI start from these).
    pub fn new(profile: Profile, whatsip: PathBuf, sipp: PathBuf, repo: PathBuf) -> Self {
        let work_dir = std::env::temp_dir().join(format!("whatsip-bench-{}", std::process::id()));
        Self {
            profile,
            direction: Direction::Inbound,
            rate: 5.0,
            concurrent: 10,
            hold: Duration::from_secs(10),
            total: 10,
            whatsip,
            sipp,
            repo,
            out: work_dir.join("report.json"),
            work_dir,
            phones: PhoneMode::Light,
            decode_one_in: 50,
            gateway_cpus: None,
            media_config: Vec::new(),
        }
    }
}

fn gateway_config(
    opts: &Options,
    graph: &str,
    webhook_port: u16,
    sip_port: u16,
    sipp_port: u16,
    admin_port: u16,
    rtp: (u32, u32),
) -> String {
    let codecs = match opts.profile {
        Profile::Transcode => "[\"PCMU\"]",
        Profile::Passthrough | Profile::Signalling => "[\"opus\"]",
    };
    let media_extra = opts.media_config.join("\n");
    let (rtp_min, rtp_max) = rtp;
    format!(
        r#"
[meta]
graph_base_url = "{graph}"
access_token = {{ env = "BENCH_TOKEN" }}
app_secret = {{ env = "BENCH_SECRET" }}
verify_token = {{ env = "BENCH_VERIFY" }}

[[business_numbers]]
phone_number_id = "{PNID}"
number = "+4930901820"

[webhook]
listen = "127.0.0.1:{webhook_port}"

[[sip.listen]]
transport = "udp"
address = "127.0.0.1:{sip_port}"

[pbx]
address = "127.0.0.1:{sipp_port}"
transport = "udp"
codecs = {codecs}
options_ping_interval_s = 0

[media]
bind = "127.0.0.1"
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_max}
{media_extra}

[logging]
format = "json"
level = "info"
redact_phone_numbers = false

[admin]
listen = "127.0.0.1:{admin_port}"

[dialplan]
ring_timeout_s = 30

[outbound]
ring_timeout_s = 30

[[dialplan.rule]]
name = "bench"
direction = "inbound"
target = "sip:agent@127.0.0.1:{sipp_port}"

[[dialplan.rule]]
name = "bench-out"
direction = "outbound"
customer = {{ regex = '^\+(\d+)$' }}
whatsapp_user = "+${{1}}"
from_business = "+4930901820"
"#
    )
}

/// One sample of the run: (seconds since start, gateway CPU s, driver CPU s, live calls of
/// both directions, live outbound calls).
type Tick = (f64, f64, f64, usize, usize);

/// Gateway and driver cores busy over the samples with at least 90 % of the peak live
/// calls: (gateway cores, driver cores, mean live calls, seconds, mean live outbound calls).
fn steady_state(ticks: &[Tick], peak: usize) -> Option<(f64, f64, f64, f64, f64)> {
    if peak == 0 {
        return None;
    }
    let floor = (peak as f64 * 0.9).ceil() as usize;
    let first = ticks.iter().position(|t| t.3 >= floor)?;
    let last = ticks.iter().rposition(|t| t.3 >= floor)?;
    let (a, b) = (ticks[first], ticks[last]);
    let secs = b.0 - a.0;
    if secs < 1.0 {
        return None;
    }
    let n = (last - first + 1) as f64;
    let live = ticks[first..=last].iter().map(|t| t.3 as f64).sum::<f64>() / n;
    let live_out = ticks[first..=last].iter().map(|t| t.4 as f64).sum::<f64>() / n;
    Some(((b.1 - a.1) / secs, (b.2 - a.2) / secs, live, secs, live_out))
}

/// The SIPp UAC of the outbound direction: its process, ports and files.
struct Uac {
    proc: Proc,
    port: u16,
    /// `-mp`: SIPp binds it (the first call's media port) and never reads it.
    media_base: u16,
    stat: PathBuf,
    /// Packets in the pcap every call plays (0: none).
    pcap_packets: u64,
}

/// Starts SIPp placing the outbound calls (after the pcap and the users file are written).
fn start_uac(opts: &Options, sip_port: u16, limit_s: f64) -> Result<Uac, String> {
    let port = free_port();
    let users = opts.work_dir.join("outbound_users.csv");
    outbound::write_users_csv(&users, opts.total)?;
    let codec = match opts.profile {
        Profile::Transcode => pcap::PcapCodec::Pcmu,
        Profile::Passthrough | Profile::Signalling => pcap::PcapCodec::Opus,
    };
    let (rtpmap, evrate) = codec.rtpmap();
    let (scenario, pcap_packets, pcap_path) = if opts.profile.has_media() {
        // the pcap outlasts the hold by a second: SIPp's BYE ends the play
        let path = opts.work_dir.join("pbx_audio.pcap");
        let n = pcap::write_tone_pcap(&path, codec, opts.hold.as_secs_f64() + 1.0, PBX_TONE_HZ)?;
        (opts.repo.join("scripts/bench/uac_pcap.xml"), n, Some(path))
    } else {
        (opts.repo.join("scripts/bench/uac_sigonly.xml"), 0, None)
    };
    if !scenario.is_file() {
        return Err(format!("{} missing", scenario.display()));
    }
    let stat = opts.work_dir.join("sipp_uac_stat.csv");
    let media_base = procfs::free_uac_media_base()?;
    let mut args: Vec<String> = vec![
        format!("127.0.0.1:{sip_port}"),
        "-sf".into(),
        scenario.display().to_string(),
        "-inf".into(),
        users.display().to_string(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-mi".into(),
        "127.0.0.1".into(),
        // per-call media ports [auto_media_port] = base + 4·((n-1) mod 2500), below the
        // gateway's RTP ranges and the ephemeral ports; SIPp binds the base only, sends from
        // the others and never listens there
        "-mp".into(),
        media_base.to_string(),
        "-t".into(),
        "u1".into(),
        "-r".into(),
        format!("{}", opts.rate),
        "-rp".into(),
        "1000".into(),
        "-l".into(),
        opts.concurrent.max(1).to_string(),
        "-m".into(),
        opts.total.to_string(),
        "-d".into(),
        opts.hold.as_millis().to_string(),
        "-key".into(),
        "pt".into(),
        codec.payload_type().to_string(),
        "-key".into(),
        "rtpmap".into(),
        rtpmap.into(),
        "-key".into(),
        "evrate".into(),
        evrate.to_string(),
        "-nostdin".into(),
        "-buff_size".into(),
        "4194304".into(),
        "-timeout".into(),
        format!("{}s", limit_s.ceil() as u64),
        "-trace_err".into(),
        "-error_file".into(),
        opts.work_dir
            .join("sipp_uac_errors.log")
            .display()
            .to_string(),
        "-trace_stat".into(),
        "-fd".into(),
        "1".into(),
        "-stf".into(),
        stat.display().to_string(),
    ];
    if let Some(p) = pcap_path {
        args.extend(["-key".into(), "pcap".into(), p.display().to_string()]);
    }
    let stderr = std::fs::File::create(opts.work_dir.join("sipp_uac.stderr"))
        .map_err(|e| format!("sipp_uac.stderr: {e}"))?;
    let child = Command::new(&opts.sipp)
        .args(&args)
        .current_dir(&opts.work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("start sipp (uac) {}: {e}", opts.sipp.display()))?;
    Ok(Uac {
        proc: Proc(child),
        port,
        media_base,
        stat,
        pcap_packets,
    })
}

/// Runs one load test and writes the report. Returns the report's JSON text.
pub async fn run(opts: Options) -> Result<String, String> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| e.to_string())?;
    let load_start = loadavg();
    let dir = opts.direction;
    let scenario = match opts.profile {
        Profile::Transcode => opts.repo.join("tests/sipp/uas_wa_echo.xml"),
        Profile::Passthrough | Profile::Signalling => {
            opts.repo.join("scripts/bench/uas_echo_opus.xml")
        }
    };
    if dir.inbound() && !scenario.is_file() {
        return Err(format!("{} missing", scenario.display()));
    }
    let sipp_port = free_port();
    let sipp_media = free_port();
    let sim_webhook_port = free_port();
    let sip_port = free_port();
    let admin_port = free_port();

    // SIPp UAS: answers and echoes every RTP packet; -timeout bounds it
    let limit_s = opts.total as f64 / opts.rate.max(0.01) + opts.hold.as_secs_f64() + 120.0;
    let sipp_args: Vec<String> = vec![
        "-sf".into(),
        scenario.display().to_string(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        sipp_port.to_string(),
        "-mi".into(),
        "127.0.0.1".into(),
        "-mp".into(),
        sipp_media.to_string(),
        "-rtp_echo".into(),
        "-t".into(),
        "u1".into(),
        "-m".into(),
        opts.total.to_string(),
        "-nostdin".into(),
        // 4 MiB socket buffers (default 64 KiB): at 200 INVITEs/s SIPp's SIP socket dropped
        // datagrams, and this scenario aborts a call on the retransmitted INVITE
        "-buff_size".into(),
        "4194304".into(),
        "-timeout".into(),
        format!("{}s", limit_s.ceil() as u64),
        "-trace_err".into(),
        "-error_file".into(),
        opts.work_dir.join("sipp_errors.log").display().to_string(),
        "-trace_stat".into(),
        "-stf".into(),
        opts.work_dir.join("sipp_stat.csv").display().to_string(),
    ];
    let sipp = if dir.inbound() {
        let child = Command::new(&opts.sipp)
            .args(&sipp_args)
            .current_dir(&opts.work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start sipp {}: {e}", opts.sipp.display()))?;
        Some(Proc(child))
    } else {
        None
    };

    let tone = opts.profile.has_media().then_some(TONE_HZ);
    let mut factory = match opts.phones {
        PhoneMode::Full => WebRtcPeerFactory::new(tone),
        PhoneMode::Light => WebRtcPeerFactory::light(tone, opts.decode_one_in)
            .map_err(|e| format!("light phones: {e}"))?,
    };
    if !opts.profile.has_media() {
        factory = factory.without_media();
    }
    let phones = factory.registry();
    let mut core = CoreConfig::default();
    core.timing.watchdog.enabled = false;
    core.max_terminated_calls_kept = 100_000;
    // the number's own cap (1,000 by default) must not limit a mixed 1,000 + 1,000 run
    for n in &mut core.numbers {
        n.max_concurrent_calls = 100_000;
    }
    // business-initiated calls: the user picks up at once and waits for the PBX's BYE
    core.default_user.on_business_call = BusinessCallBehaviour::Answer {
        after: Duration::ZERO,
        hang_up_after: None,
        dtmf: Vec::new(),
    };
    let sim = Simulator::start(SimConfig {
        core,
        webhook: WebhookConfig {
            url: Some(format!("http://127.0.0.1:{sim_webhook_port}/webhook")),
            app_secret: APP_SECRET.into(),
            lanes: 64,
            ..WebhookConfig::default()
        },
        peers: Arc::new(factory),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("simulator: {e}"))?;

    // both directions: up to 2 × concurrent calls, each with a PBX-leg RTP pair
    let legs = if dir == Direction::Mixed { 2 } else { 1 };
    let ports = (opts.concurrent as u32 * 4 * legs + 64).max(128);
    // the gateway's WhatsApp sockets sit at the start of the range (several with H3's
    // `[media]` keys); keep the first 16 ports free and count them as WhatsApp sockets
    let wa_ports = 16;
    let rtp_min = free_rtp_base(ports, wa_ports)?;
    let rtp_max = rtp_min + ports;
    let cfg_text = gateway_config(
        &opts,
        &sim.base_url(),
        sim_webhook_port,
        sip_port,
        sipp_port,
        admin_port,
        (rtp_min, rtp_max),
    );
    let cfg_path = opts.work_dir.join("whatsip.toml");
    std::fs::write(&cfg_path, cfg_text).map_err(|e| e.to_string())?;
    let gw_log = opts.work_dir.join("whatsip.log");
    let log_file = std::fs::File::create(&gw_log).map_err(|e| e.to_string())?;
    let mut cmd = match &opts.gateway_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(&opts.whatsip);
            c
        }
        None => Command::new(&opts.whatsip),
    };
    let gw = cmd
        .arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .env("BENCH_TOKEN", "bench-token")
        .env("BENCH_SECRET", APP_SECRET)
        .env("BENCH_VERIFY", "bench-verify")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("start whatsip {}: {e}", opts.whatsip.display()))?;
    let gw = Proc(gw);
    let gw_pid = gw.0.id().to_string();
    let sipp_pid = sipp
        .as_ref()
        .map(|p| p.0.id().to_string())
        .unwrap_or_default();
    let write_pids = |extra: &str| {
        // run.sh kills these if it has to kill this driver (its Drop guards do not run then)
        let _ = std::fs::write(
            opts.work_dir.join("pids"),
            format!("{gw_pid}\n{sipp_pid}\n{extra}"),
        );
    };
    write_pids("");

    // wait (bounded) for the gateway's webhook listener
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", sim_webhook_port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        let log = std::fs::read_to_string(&gw_log).unwrap_or_default();
        sim.shutdown().await;
        return Err(format!("whatsip never listened; its log:\n{log}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gateway_cpus = procfs::status_field(&gw_pid, "Cpus_allowed_list").unwrap_or_default();
    let driver_cpus = procfs::status_field("self", "Cpus_allowed_list").unwrap_or_default();
    let pnid = PhoneNumberId::parse(PNID).unwrap();
    if dir.outbound() {
        outbound::grant_permissions(&sim, &pnid, opts.total).await?;
    }

    let gw_cpu0 = cpu_seconds(&gw_pid).unwrap_or(0.0);
    let self_cpu0 = cpu_seconds("self").unwrap_or(0.0);
    let sipp_cpu0 = cpu_seconds(&sipp_pid).unwrap_or(0.0);
    let rss0 = rss_kib(&gw_pid).unwrap_or(0);
    let t0 = Clock::mono();
    let drops = Arc::new(std::sync::Mutex::new(DropTracker::new()));

    let sim = Arc::new(sim);
    let out_counts = Arc::new(outbound::Counts::default());
    let watch_stop = Arc::new(AtomicUsize::new(0));
    let mut uac = None;
    let mut watcher = None;
    // CPU of reaped children: the UAC's, once it exited and was waited for
    let children_cpu0 = procfs::children_cpu_seconds().unwrap_or(0.0);
    if dir.outbound() {
        let u = start_uac(&opts, sip_port, limit_s)?;
        write_pids(&format!("{}\n", u.proc.0.id()));
        uac = Some(u);
        watcher = Some(outbound::spawn_watcher(
            sim.clone(),
            phones.clone(),
            out_counts.clone(),
            watch_stop.clone(),
        ));
    }
    let uac_port = uac.as_ref().map_or(0, |u| u.port);
    let uac_media = uac.as_ref().map_or(0, |u| u.media_base);

    // sampler: gateway RSS, CPU and live calls every 250 ms
    let live = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let live = live.clone();
        let out_counts = out_counts.clone();
        let stop = stop.clone();
        let pid = gw_pid.clone();
        let drops = drops.clone();
        tokio::spawn(async move {
            let mut peak_live = 0usize;
            let mut rss_at_peak = 0u64;
            let mut peak_rss = 0u64;
            let mut ticks: Vec<Tick> = Vec::new();
            // bounded: at most one hour of samples
            for n in 0..14_400u32 {
                let l_out = out_counts.live.load(Ordering::Relaxed);
                let l = live.load(Ordering::Relaxed) + l_out;
                let gw_cpu = cpu_seconds(&pid).unwrap_or(0.0);
                let me = cpu_seconds("self").unwrap_or(0.0);
                ticks.push((t0.elapsed().as_secs_f64(), gw_cpu, me, l, l_out));
                if n % 20 == 19 {
                    let d = drops.lock().unwrap_or_else(|e| e.into_inner()).split(
                        [sipp_port, sip_port, uac_port, uac_media],
                        sipp_media,
                        rtp_min,
                        rtp_max,
                        wa_ports,
                    );
                    let k = ticks.len();
                    let prev = ticks[k.saturating_sub(21)];
                    let dt = (ticks[k - 1].0 - prev.0).max(0.001);
                    eprintln!(
                        "bench: {} s, {l} calls live ({l_out} outbound), whatsip {:.2} cores / driver {:.2} cores (last 5 s), RSS {} KiB, UDP drops so far {d:?}",
                        (n + 1) / 4,
                        (gw_cpu - prev.1) / dt,
                        (me - prev.2) / dt,
                        rss_kib(&pid).unwrap_or(0)
                    );
                }
                if stop.load(Ordering::Relaxed) != 0 {
                    break;
                }
                let r = rss_kib(&pid).unwrap_or(0);
                drops.lock().unwrap_or_else(|e| e.into_inner()).sample();
                peak_rss = peak_rss.max(r);
                if l >= peak_live {
                    peak_live = l;
                    rss_at_peak = rss_at_peak.max(r);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (peak_live, rss_at_peak, peak_rss, ticks)
        })
    };

    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrent.max(1)));
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate.max(0.01)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let setup_timeout = Duration::from_secs(40);
    let mut tasks = Vec::new();
    let inbound_total = if dir.inbound() { opts.total } else { 0 };
    for i in 0..inbound_total {
        pace.tick().await;
        let permit = sem.clone().acquire_owned().await.unwrap();
        let sim = sim.clone();
        let phones = phones.clone();
        let live = live.clone();
        let pnid = pnid.clone();
        let hold = opts.hold;
        let user_str = format!("49151{:08}", i + 1);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let user = WaId::parse(&user_str).unwrap();
            let mut r = CallResult {
                dial_wall_us: Clock::wall_us(),
                ..CallResult::default()
            };
            let t_dial = Clock::mono();
            let id = match sim.user_calls(UserCall::new(user.clone(), pnid)).await {
                Ok(id) => id,
                Err(e) => {
                    r.failure = Some(format!("sim refused: {e}"));
                    return r;
                }
            };
            r.wa_call_id = id.as_str().to_owned();
            if sim
                .wait_for_call_state(&id, CallState::Active, setup_timeout)
                .await
                .is_err()
            {
                let cause = match sim.call(&id) {
                    Some(c) => match c.end {
                        Some(end) => format!("ended before answer: {:?}", end.reason),
                        None => format!("not answered within 40 s ({:?})", c.state),
                    },
                    None => "unknown call".into(),
                };
                r.failure = Some(cause);
                let _ = sim.user_hangs_up(&id).await;
                return r;
            }
            r.answered = true;
            r.dial_to_active_ms = Some(t_dial.elapsed().as_secs_f64() * 1000.0);
            live.fetch_add(1, Ordering::Relaxed);
            let t_active = Clock::mono();
            let probe = phones.find(&user);
            tokio::time::sleep(hold).await;
            r.talk_s = t_active.elapsed().as_secs_f64();
            let connected = probe
                .as_ref()
                .and_then(PhoneProbe::status)
                .is_some_and(|s| s.connected);
            let _ = sim.user_hangs_up(&id).await;
            r.hangup_ok = sim
                .wait_for_call_end(&id, Duration::from_secs(20))
                .await
                .is_ok();
            // the phone's final counters (it stopped with the call)
            match probe.and_then(|p| p.status()) {
                Some(s) => report::phone_result(&mut r, &s, connected, TONE_HZ),
                None => r.failure = Some("no phone status".into()),
            }
            live.fetch_sub(1, Ordering::Relaxed);
            r
        }));
    }
    let placing_in_s = t0.elapsed().as_secs_f64();
    let mut results = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            results.push(r);
        }
    }

    // outbound: SIPp ends by itself (all calls done, or its -timeout); then every call the
    // simulator saw must end (bounded)
    let mut watched = std::collections::HashMap::new();
    let mut uac_cpu = None;
    if let Some(u) = uac.as_mut() {
        let pid = u.proc.0.id().to_string();
        let mut alive_cpu = 0.0f64;
        let mut exited = false;
        for _ in 0..((limit_s + 30.0) * 5.0) as u64 {
            alive_cpu = cpu_seconds(&pid).unwrap_or(alive_cpu);
            if u.proc.0.try_wait().ok().flatten().is_some() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let reaped = if exited {
            procfs::children_cpu_seconds().unwrap_or(0.0) - children_cpu0
        } else {
            0.0
        };
        uac_cpu = Some(alive_cpu.max(reaped));
        for _ in 0..150 {
            if out_counts.open.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let wall_s = t0.elapsed().as_secs_f64();
    watch_stop.store(1, Ordering::Relaxed);
    if let Some(w) = watcher {
        watched = w.await.unwrap_or_default();
    }
    stop.store(1, Ordering::Relaxed);
    let (peak_live, rss_at_peak, peak_rss, ticks) = sampler.await.unwrap_or((0, 0, 0, Vec::new()));
    // give the gateway a moment to release everything (RTP counters are added at call
    // end), then measure
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let gw_cpu = cpu_seconds(&gw_pid).unwrap_or(0.0) - gw_cpu0;
    let self_cpu = cpu_seconds("self").unwrap_or(0.0) - self_cpu0;
    let sipp_cpu = cpu_seconds(&sipp_pid).unwrap_or(0.0) - sipp_cpu0;
    let load_end = loadavg();
    let udp_drops = {
        let mut d = drops.lock().unwrap_or_else(|e| e.into_inner());
        d.sample();
        d.split(
            [sipp_port, sip_port, uac_port, uac_media],
            sipp_media,
            rtp_min,
            rtp_max,
            wa_ports,
        )
    };
    let metrics_text = procfs::http_get(admin_port, "/metrics", Duration::from_secs(10))
        .await
        .unwrap_or_default();
    let _ = std::fs::write(opts.work_dir.join("metrics.txt"), &metrics_text);

    // stop the gateway (kill; its log is flushed line by line)
    drop(gw);
    drop(sipp);
    let uac_stat = uac
        .as_ref()
        .map(|u| std::fs::read_to_string(&u.stat).unwrap_or_default());
    let pcap_packets = uac.as_ref().map_or(0, |u| u.pcap_packets);
    drop(uac);
    sim.shutdown().await;
    if let Some(stat) = &uac_stat
        && opts.total > 0
        && outbound::sipp_stat(stat, "TotalCallCreated").unwrap_or(0) == 0
    {
        let err =
            std::fs::read_to_string(opts.work_dir.join("sipp_uac.stderr")).unwrap_or_default();
        return Err(format!(
            "the SIPp UAC placed no call; its stderr:\n{}",
            err.chars().take(4000).collect::<String>()
        ));
    }
    let log_text = std::fs::read_to_string(&gw_log).unwrap_or_default();
    let gw_times = report::parse_gateway_log(&log_text);
    let out = if dir.outbound() {
        let out_times = report::parse_outbound_log(&log_text);
        let expected_tone = opts.profile.has_media().then_some(PBX_TONE_HZ);
        Some(report::outbound_results(
            &opts,
            &out_times,
            &watched,
            uac_stat.as_deref().unwrap_or(""),
            expected_tone,
            pcap_packets,
        ))
    } else {
        None
    };

    let measures = Measures {
        wall_s,
        placing_s: placing_in_s,
        gw_cpu,
        self_cpu,
        sipp_cpu,
        uac_cpu,
        rss0,
        peak_live,
        rss_at_peak,
        peak_rss,
        steady: steady_state(&ticks, peak_live),
        load_start,
        load_end,
        udp_drops,
        gateway_cpus,
        driver_cpus,
        metrics: report::parse_metrics(&metrics_text),
    };
    let (json, table) = report::build_report(&opts, &results, &gw_times, out.as_ref(), &measures);
    std::fs::write(&opts.out, &json).map_err(|e| e.to_string())?;
    println!("{table}");
    Ok(json)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(profile) = Profile::parse(&arg(&args, "--profile", "transcode".to_string())) else {
        eprintln!("--profile transcode|passthrough|signalling");
        return std::process::ExitCode::FAILURE;
    };
    let Some(direction) = Direction::parse(&arg(&args, "--direction", "inbound".to_string()))
    else {
        eprintln!("--direction inbound|outbound|mixed");
        return std::process::ExitCode::FAILURE;
    };
    let Some(phones) = PhoneMode::parse(&arg(&args, "--phones", "light".to_string())) else {
        eprintln!("--phones light|full");
        return std::process::ExitCode::FAILURE;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut opts = Options::new(
        profile,
        PathBuf::from(arg(&args, "--whatsip", "whatsip".to_string())),
        PathBuf::from(arg(&args, "--sipp", "sipp".to_string())),
        PathBuf::from(arg(&args, "--repo", repo.display().to_string())),
    );
    opts.direction = direction;
    opts.rate = arg(&args, "--rate", 5.0);
    opts.concurrent = arg(&args, "--concurrent", 10);
    opts.hold = Duration::from_secs_f64(arg(&args, "--hold", 10.0));
    opts.total = arg(&args, "--total", 10);
    opts.phones = phones;
    opts.decode_one_in = arg(&args, "--decode-one-in", 50);
    opts.gateway_cpus = Some(arg(&args, "--gateway-cpus", String::new())).filter(|s| !s.is_empty());
    opts.media_config = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--media")
        .filter_map(|(i, _)| args.get(i + 1).cloned())
        .collect();
    if let Some(w) = Some(arg(&args, "--work-dir", String::new())).filter(|s| !s.is_empty()) {
        opts.work_dir = PathBuf::from(w);
    }
    opts.out = PathBuf::from(arg(&args, "--out", "bench_report.json".to_string()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(opts)) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
