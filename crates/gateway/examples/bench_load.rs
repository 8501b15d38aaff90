//! Load driver for whatsip on 127.0.0.1 (issue 7).
//!
//! WhatsApp side: whatsip-sim in this process, each simulated user with a real WebRTC phone
//! (ICE, DTLS-SRTP, Opus 1 kHz tone). Gateway: a separate `whatsip run --config` process, so
//! its CPU and memory accounting (`/proc/<pid>/stat`, `/proc/<pid>/status`) is its own. PBX
//! side: SIPp UAS with `-rtp_echo` (PCMU answer for `transcode`, Opus for `passthrough`).
//!
//! Calls are placed at `--rate` per second, never more than `--concurrent` at once, each
//! held `--hold` seconds, `--total` in all; every wait is bounded. The report goes to
//! `--out` (JSON) and stdout (table). Setup latencies come from the gateway's JSON log
//! (`call milestone` lines, per call span `wa_call_id`) and this driver's dial time.
//!
//! ```text
//! cargo build --release -p whatsip-gateway --bin whatsip --example bench_load
//! target/release/examples/bench_load --whatsip target/release/whatsip \
//!     --profile transcode --rate 5 --concurrent 20 --hold 20 --total 40 --out report.json
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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use whatsip_sim::core::{CallState, CoreConfig, UserCall};
use whatsip_sim::{PhoneNumberId, SimConfig, Simulator, WaId, WebRtcPeerFactory, WebhookConfig};

const APP_SECRET: &str = "bench-app-secret";
const PNID: &str = "106540352242922";
const TONE_HZ: f64 = 1_000.0;

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
}

impl Profile {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "transcode" => Some(Self::Transcode),
            "passthrough" => Some(Self::Passthrough),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Transcode => "transcode",
            Self::Passthrough => "passthrough",
        }
    }
}

/// A run's parameters.
#[derive(Clone, Debug)]
pub struct Options {
    pub profile: Profile,
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
}

#[derive(Clone, Debug, Default)]
struct CallResult {
    wa_call_id: String,
    dial_wall_us: i64,
    answered: bool,
    failure: Option<String>,
    dial_to_active_ms: Option<f64>,
    talk_s: f64,
    phone_sent: u64,
    phone_received: u64,
    phone_lost: u64,
    frames: u64,
    frames_with_signal: u64,
    longest_gap_ms: f64,
    tone_ok: bool,
    hangup_ok: bool,
}

/// CPU time (user + system) of a process in seconds, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the `(comm)`: state is field 3; utime/stime are fields 14/15
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / clk_tck())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `VmRSS` in KiB.
fn rss_kib(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Kernel receive drops of every IPv4 UDP socket: inode → (local port, drops), from
/// `/proc/net/udp` (last column).
fn udp_drops() -> HashMap<u64, (u16, u64)> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/net/udp") else {
        return out;
    };
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(inode), Some(drops)) = (f.get(1), f.get(9), f.last()) else {
            continue;
        };
        let port = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if let (Some(port), Ok(inode), Ok(drops)) = (port, inode.parse(), drops.parse()) {
            out.insert(inode, (port, drops));
        }
    }
    out
}

/// Drops seen per socket over a run (sockets come and go with calls, so sampled).
#[derive(Default)]
struct DropTracker {
    start: HashMap<u64, u64>,
    max: HashMap<u64, (u16, u64)>,
}

impl DropTracker {
    fn new() -> Self {
        Self {
            start: udp_drops().into_iter().map(|(i, (_, d))| (i, d)).collect(),
            max: HashMap::new(),
        }
    }
    fn sample(&mut self) {
        for (inode, (port, drops)) in udp_drops() {
            let e = self.max.entry(inode).or_insert((port, drops));
            e.1 = e.1.max(drops);
        }
    }
    /// (SIPp echo socket, whatsip WhatsApp socket, whatsip PBX-leg sockets, all others)
    fn split(&self, sipp_media: u16, rtp_min: u32, rtp_max: u32) -> [u64; 4] {
        let mut out = [0u64; 4];
        for (inode, (port, drops)) in &self.max {
            let d = drops.saturating_sub(self.start.get(inode).copied().unwrap_or(0));
            let p = u32::from(*port);
            let i = if *port == sipp_media {
                0
            } else if p == rtp_min || p == rtp_min + 1 {
                1
            } else if p > rtp_min + 1 && p <= rtp_max {
                2
            } else {
                3
            };
            out[i] += d;
        }
        out
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The start of an even RTP range of `len` ports whose first pair (the gateway's shared
/// WhatsApp media socket) is free right now; other tests on this machine use other ranges.
fn free_rtp_base(len: u32) -> Result<u32, String> {
    let seed = std::process::id();
    for i in 0..50u32 {
        let base = 20_000 + ((seed.wrapping_add(i * 7919)) % 200) * 200;
        if base + len > 65_000 {
            continue;
        }
        let free =
            (base..base + 2).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p as u16)).is_ok());
        if free {
            return Ok(base);
        }
    }
    Err("no free RTP range".into())
}

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

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentiles(mut v: Vec<f64>) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    if v.is_empty() {
        return m;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    m.insert("p50", at(0.5));
    m.insert("p90", at(0.9));
    m.insert("p99", at(0.99));
    m.insert("max", v[v.len() - 1]);
    m.insert("n", v.len() as f64);
    m
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_pct(m: &BTreeMap<&'static str, f64>) -> String {
    let fields: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{}", json_str(k), json_num(*v)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Value of `"key":"…"` in a JSON log line (first occurrence).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

/// Per call: wall time (µs) of the gateway milestones, from its JSON log.
#[derive(Default, Debug)]
struct GwTimes {
    invite_us: Option<i64>,
    answered_us: Option<i64>,
    accepted_us: Option<i64>,
}

fn parse_gateway_log(text: &str) -> HashMap<String, GwTimes> {
    let mut out: HashMap<String, GwTimes> = HashMap::new();
    for line in text.lines().filter(|l| l.contains("call milestone")) {
        let (Some(ts), Some(id), Some(ms)) = (
            field(line, "timestamp"),
            field(line, "wa_call_id"),
            field(line, "milestone"),
        ) else {
            continue;
        };
        let Ok(t) = ts.parse::<jiff::Timestamp>() else {
            continue;
        };
        let us = t.as_microsecond();
        let e = out.entry(id.to_owned()).or_default();
        if ms.starts_with("INVITE sent") {
            e.invite_us.get_or_insert(us);
        } else if ms.starts_with("200 OK from the PBX") {
            e.answered_us.get_or_insert(us);
        } else if ms.starts_with("accept ok") {
            e.accepted_us.get_or_insert(us);
        }
    }
    out
}

struct Env {
    gw: Proc,
    sipp: Proc,
    gw_log: PathBuf,
}

fn gateway_config(
    profile: Profile,
    graph: &str,
    webhook_port: u16,
    sip_port: u16,
    sipp_port: u16,
    rtp_min: u32,
    rtp_max: u32,
) -> String {
    let codecs = match profile {
        Profile::Transcode => "[\"PCMU\"]",
        Profile::Passthrough => "[\"opus\"]",
    };
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

[logging]
format = "json"
level = "info"
redact_phone_numbers = false

[admin]
listen = ""

[dialplan]
ring_timeout_s = 30

[[dialplan.rule]]
name = "bench"
direction = "inbound"
target = "sip:agent@127.0.0.1:{sipp_port}"
"#
    )
}

/// Runs one load test and writes the report. Returns the report's JSON text.
pub async fn run(opts: Options) -> Result<String, String> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| e.to_string())?;
    let load_start = loadavg();
    let scenario = match opts.profile {
        Profile::Transcode => opts.repo.join("tests/sipp/uas_wa_echo.xml"),
        Profile::Passthrough => opts.repo.join("scripts/bench/uas_echo_opus.xml"),
    };
    if !scenario.is_file() {
        return Err(format!("{} missing", scenario.display()));
    }
    let sipp_port = free_port();
    let sipp_media = free_port();
    let sim_webhook_port = free_port();
    let sip_port = free_port();

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
        "-timeout".into(),
        format!("{}s", limit_s.ceil() as u64),
        "-trace_err".into(),
        "-error_file".into(),
        opts.work_dir.join("sipp_errors.log").display().to_string(),
        "-trace_stat".into(),
        "-stf".into(),
        opts.work_dir.join("sipp_stat.csv").display().to_string(),
    ];
    let sipp = Command::new(&opts.sipp)
        .args(&sipp_args)
        .current_dir(&opts.work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start sipp {}: {e}", opts.sipp.display()))?;
    let sipp = Proc(sipp);

    let factory = WebRtcPeerFactory::new(Some(TONE_HZ));
    let phones = factory.registry();
    let mut core = CoreConfig::default();
    core.timing.watchdog.enabled = false;
    core.max_terminated_calls_kept = 100_000;
    let sim = Simulator::start(SimConfig {
        core,
        webhook: WebhookConfig {
            url: Some(format!("http://127.0.0.1:{sim_webhook_port}/webhook")),
            app_secret: APP_SECRET.into(),
            lanes: 16,
            ..WebhookConfig::default()
        },
        peers: Arc::new(factory),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("simulator: {e}"))?;

    let ports = (opts.concurrent as u32 * 4 + 64).max(128);
    let rtp_min = free_rtp_base(ports)?;
    let cfg_text = gateway_config(
        opts.profile,
        &sim.base_url(),
        sim_webhook_port,
        sip_port,
        sipp_port,
        rtp_min,
        rtp_min + ports,
    );
    let cfg_path = opts.work_dir.join("whatsip.toml");
    std::fs::write(&cfg_path, cfg_text).map_err(|e| e.to_string())?;
    let gw_log = opts.work_dir.join("whatsip.log");
    let log_file = std::fs::File::create(&gw_log).map_err(|e| e.to_string())?;
    let gw = Command::new(&opts.whatsip)
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
    let env = Env {
        gw: Proc(gw),
        sipp,
        gw_log,
    };
    let gw_pid = env.gw.0.id().to_string();
    let sipp_pid = env.sipp.0.id().to_string();
    // run.sh kills these if it has to kill this driver (its Drop guards do not run then)
    let _ = std::fs::write(
        opts.work_dir.join("pids"),
        format!("{gw_pid}\n{sipp_pid}\n"),
    );

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
        let log = std::fs::read_to_string(&env.gw_log).unwrap_or_default();
        sim.shutdown().await;
        return Err(format!("whatsip never listened; its log:\n{log}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let gw_cpu0 = cpu_seconds(&gw_pid).unwrap_or(0.0);
    let self_cpu0 = cpu_seconds("self").unwrap_or(0.0);
    let sipp_cpu0 = cpu_seconds(&sipp_pid).unwrap_or(0.0);
    let rss0 = rss_kib(&gw_pid).unwrap_or(0);
    let t0 = Clock::mono();
    let drops = Arc::new(std::sync::Mutex::new(DropTracker::new()));

    // sampler: gateway RSS and live calls every 250 ms
    let live = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let live = live.clone();
        let stop = stop.clone();
        let pid = gw_pid.clone();
        let drops = drops.clone();
        tokio::spawn(async move {
            let mut peak_live = 0usize;
            let mut rss_at_peak = 0u64;
            let mut peak_rss = 0u64;
            // bounded: at most one hour of samples
            for n in 0..14_400u32 {
                if n % 20 == 19 {
                    let d = drops.lock().unwrap_or_else(|e| e.into_inner()).split(
                        sipp_media,
                        rtp_min,
                        rtp_min + ports,
                    );
                    eprintln!(
                        "bench: {} s, {} calls live, whatsip RSS {} KiB, UDP drops so far {d:?}",
                        (n + 1) / 4,
                        live.load(Ordering::Relaxed),
                        rss_kib(&pid).unwrap_or(0)
                    );
                }
                if stop.load(Ordering::Relaxed) != 0 {
                    break;
                }
                let l = live.load(Ordering::Relaxed);
                let r = rss_kib(&pid).unwrap_or(0);
                drops.lock().unwrap_or_else(|e| e.into_inner()).sample();
                peak_rss = peak_rss.max(r);
                if l >= peak_live {
                    peak_live = l;
                    rss_at_peak = rss_at_peak.max(r);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (peak_live, rss_at_peak, peak_rss)
        })
    };

    let sim = Arc::new(sim);
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrent.max(1)));
    let pnid = PhoneNumberId::parse(PNID).unwrap();
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(0.01));
    let setup_timeout = Duration::from_secs(40);
    let mut tasks = Vec::new();
    for i in 0..opts.total {
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
            tokio::time::sleep(hold).await;
            let probe = phones.phones().into_iter().rev().find(|p| p.user == user);
            if let Some(s) = probe.and_then(|p| p.status()) {
                r.phone_sent = s.stats.rtp_packets_sent;
                r.phone_received = s.audio.packets_received;
                r.phone_lost = s.audio.lost_packets;
                r.frames = s.audio.audio_frames;
                r.frames_with_signal = s.audio.frames_with_signal;
                r.longest_gap_ms = s.audio.longest_gap.as_secs_f64() * 1000.0;
                r.tone_ok = s
                    .audio
                    .tone
                    .as_ref()
                    .is_some_and(|t| (t.freq_hz - TONE_HZ).abs() <= 50.0);
                if let Some(f) = s.failure {
                    r.failure = Some(format!("phone: {f}"));
                }
            } else {
                r.failure = Some("no phone status".into());
            }
            r.talk_s = t_active.elapsed().as_secs_f64();
            let _ = sim.user_hangs_up(&id).await;
            r.hangup_ok = sim
                .wait_for_call_end(&id, Duration::from_secs(20))
                .await
                .is_ok();
            live.fetch_sub(1, Ordering::Relaxed);
            r
        }));
        if i + 1 < opts.total {
            tokio::time::sleep(interval).await;
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            results.push(r);
        }
    }
    let wall_s = t0.elapsed().as_secs_f64();
    stop.store(1, Ordering::Relaxed);
    let (peak_live, rss_at_peak, peak_rss) = sampler.await.unwrap_or((0, 0, 0));
    // give the gateway a moment to release everything, then measure
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw_cpu = cpu_seconds(&gw_pid).unwrap_or(0.0) - gw_cpu0;
    let self_cpu = cpu_seconds("self").unwrap_or(0.0) - self_cpu0;
    let sipp_cpu = cpu_seconds(&sipp_pid).unwrap_or(0.0) - sipp_cpu0;
    let load_end = loadavg();
    let udp_drops = {
        let mut d = drops.lock().unwrap_or_else(|e| e.into_inner());
        d.sample();
        d.split(sipp_media, rtp_min, rtp_min + ports)
    };

    // stop the gateway (SIGTERM-free: kill; its log is flushed line by line)
    drop(env.gw);
    drop(env.sipp);
    sim.shutdown().await;
    let gw_times = parse_gateway_log(&std::fs::read_to_string(&env.gw_log).unwrap_or_default());

    let report = build_report(
        &opts,
        &results,
        &gw_times,
        Measures {
            wall_s,
            gw_cpu,
            self_cpu,
            sipp_cpu,
            rss0,
            peak_live,
            rss_at_peak,
            peak_rss,
            load_start,
            load_end,
            udp_drops,
        },
    );
    std::fs::write(&opts.out, &report.0).map_err(|e| e.to_string())?;
    println!("{}", report.1);
    Ok(report.0)
}

struct Measures {
    wall_s: f64,
    gw_cpu: f64,
    self_cpu: f64,
    sipp_cpu: f64,
    rss0: u64,
    peak_live: usize,
    rss_at_peak: u64,
    peak_rss: u64,
    load_start: String,
    load_end: String,
    /// Kernel UDP receive drops: SIPp echo, whatsip WhatsApp socket, whatsip PBX legs, others.
    udp_drops: [u64; 4],
}

/// (JSON, table)
fn build_report(
    opts: &Options,
    results: &[CallResult],
    gw: &HashMap<String, GwTimes>,
    m: Measures,
) -> (String, String) {
    let attempted = results.len();
    let answered = results.iter().filter(|r| r.answered).count();
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        if let Some(f) = &r.failure {
            *causes.entry(f.clone()).or_default() += 1;
        }
    }
    let failed: usize = results.iter().filter(|r| r.failure.is_some()).count();
    let mut dial_to_invite = Vec::new();
    let mut ans_to_accept = Vec::new();
    for r in results.iter().filter(|r| r.answered) {
        if let Some(t) = gw.get(&r.wa_call_id) {
            if let Some(inv) = t.invite_us {
                dial_to_invite.push((inv - r.dial_wall_us) as f64 / 1000.0);
            }
            if let (Some(a), Some(acc)) = (t.answered_us, t.accepted_us) {
                ans_to_accept.push((acc - a) as f64 / 1000.0);
            }
        }
    }
    let dial_to_active: Vec<f64> = results.iter().filter_map(|r| r.dial_to_active_ms).collect();
    let talk: f64 = results.iter().map(|r| r.talk_s).sum();
    let sent: u64 = results.iter().map(|r| r.phone_sent).sum();
    let recv: u64 = results.iter().map(|r| r.phone_received).sum();
    let lost: u64 = results.iter().map(|r| r.phone_lost).sum();
    let frames: u64 = results.iter().map(|r| r.frames).sum();
    let frames_sig: u64 = results.iter().map(|r| r.frames_with_signal).sum();
    let gaps_over_1s = results
        .iter()
        .filter(|r| r.answered && r.longest_gap_ms > 1000.0)
        .count();
    let tone_ok = results.iter().filter(|r| r.answered && r.tone_ok).count();
    let gaps: Vec<f64> = results
        .iter()
        .filter(|r| r.answered)
        .map(|r| r.longest_gap_ms)
        .collect();
    let down_loss_pct = if recv + lost > 0 {
        lost as f64 * 100.0 / (recv + lost) as f64
    } else {
        f64::NAN
    };
    let roundtrip_ratio = if sent > 0 {
        recv as f64 / sent as f64
    } else {
        f64::NAN
    };
    let signal_pct = if frames > 0 {
        frames_sig as f64 * 100.0 / frames as f64
    } else {
        f64::NAN
    };
    let cpu_per_call_s = if talk > 0.0 {
        m.gw_cpu / talk
    } else {
        f64::NAN
    };
    let rss_per_call = if m.peak_live > 0 {
        (m.rss_at_peak.saturating_sub(m.rss0)) as f64 / m.peak_live as f64
    } else {
        f64::NAN
    };
    let p_inv = percentiles(dial_to_invite);
    let p_acc = percentiles(ans_to_accept);
    let p_act = percentiles(dial_to_active);
    let p_gap = percentiles(gaps);
    let causes_json: Vec<String> = causes
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    let json = format!(
        concat!(
            "{{\"profile\":{},\"rate\":{},\"concurrent\":{},\"hold_s\":{},\"total\":{},",
            "\"wall_s\":{},\"loadavg_start\":{},\"loadavg_end\":{},",
            "\"calls\":{{\"attempted\":{},\"answered\":{},\"failed\":{},\"failed_by_cause\":{{{}}}}},",
            "\"setup_ms\":{{\"dial_to_pbx_invite\":{},\"pbx_200_to_meta_accept\":{},\"dial_to_active\":{}}},",
            "\"gateway\":{{\"cpu_s\":{},\"call_s\":{},\"cpu_s_per_call_s\":{},\"cores_busy_avg\":{},",
            "\"rss_idle_kib\":{},\"rss_at_peak_kib\":{},\"rss_max_kib\":{},\"peak_concurrent\":{},\"rss_per_call_kib\":{}}},",
            "\"media\":{{\"phone_packets_sent\":{},\"phone_packets_received\":{},\"roundtrip_received_over_sent\":{},",
            "\"gateway_to_phone_loss_pct\":{},\"frames_with_tone_pct\":{},\"calls_with_tone\":{},",
            "\"calls_with_gap_over_1s\":{},\"longest_gap_ms\":{}}},",
            "\"udp_receive_drops\":{{\"sipp_echo\":{},\"whatsip_whatsapp_socket\":{},\"whatsip_pbx_legs\":{},\"phones_and_others\":{}}},",
            "\"load_generators\":{{\"driver_sim_phones_cpu_s\":{},\"sipp_cpu_s\":{}}}}}\n"
        ),
        json_str(opts.profile.name()),
        json_num(opts.rate),
        opts.concurrent,
        json_num(opts.hold.as_secs_f64()),
        opts.total,
        json_num(m.wall_s),
        json_str(&m.load_start),
        json_str(&m.load_end),
        attempted,
        answered,
        failed,
        causes_json.join(","),
        json_pct(&p_inv),
        json_pct(&p_acc),
        json_pct(&p_act),
        json_num(m.gw_cpu),
        json_num(talk),
        json_num(cpu_per_call_s),
        json_num(m.gw_cpu / m.wall_s),
        m.rss0,
        m.rss_at_peak,
        m.peak_rss,
        m.peak_live,
        json_num(rss_per_call),
        sent,
        recv,
        json_num(roundtrip_ratio),
        json_num(down_loss_pct),
        json_num(signal_pct),
        tone_ok,
        gaps_over_1s,
        json_pct(&p_gap),
        m.udp_drops[0],
        m.udp_drops[1],
        m.udp_drops[2],
        m.udp_drops[3],
        json_num(m.self_cpu),
        json_num(m.sipp_cpu),
    );
    let pct = |p: &BTreeMap<&str, f64>| {
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms",
            p.get("p50").copied().unwrap_or(f64::NAN),
            p.get("p90").copied().unwrap_or(f64::NAN),
            p.get("p99").copied().unwrap_or(f64::NAN),
            p.get("max").copied().unwrap_or(f64::NAN)
        )
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| {} | rate {}/s | concurrent {} | hold {} s | total {} | wall {:.1} s | load {} → {} |",
        opts.profile.name(),
        opts.rate,
        opts.concurrent,
        opts.hold.as_secs_f64(),
        opts.total,
        m.wall_s,
        m.load_start,
        m.load_end
    );
    let _ = writeln!(t, "|---|---|");
    let _ = writeln!(
        t,
        "| calls attempted / answered / failed | {attempted} / {answered} / {failed} {causes:?} |"
    );
    let _ = writeln!(t, "| dial → PBX INVITE | {} |", pct(&p_inv));
    let _ = writeln!(t, "| PBX 200 → Meta accept ok | {} |", pct(&p_acc));
    let _ = writeln!(t, "| dial → call active (sim) | {} |", pct(&p_act));
    let _ = writeln!(
        t,
        "| whatsip CPU | {:.2} s for {:.0} call-s = {:.4} CPU-s per call-s ({:.2} cores avg) |",
        m.gw_cpu,
        talk,
        cpu_per_call_s,
        m.gw_cpu / m.wall_s
    );
    let _ = writeln!(
        t,
        "| whatsip RSS | idle {} KiB, {} KiB at {} concurrent ({:.0} KiB/call), max {} KiB |",
        m.rss0, m.rss_at_peak, m.peak_live, rss_per_call, m.peak_rss
    );
    let _ = writeln!(
        t,
        "| media | phone sent {sent}, received {recv} (ratio {roundtrip_ratio:.3}); gw→phone loss {down_loss_pct:.2} %; frames with tone {signal_pct:.1} %; tone ok {tone_ok}/{answered}; gaps > 1 s: {gaps_over_1s}; longest gap {} |",
        pct(&p_gap)
    );
    let _ = writeln!(
        t,
        "| kernel UDP receive drops | SIPp echo {}, whatsip WhatsApp socket {}, whatsip PBX legs {}, phones and others {} |",
        m.udp_drops[0], m.udp_drops[1], m.udp_drops[2], m.udp_drops[3]
    );
    let _ = writeln!(
        t,
        "| load generators CPU | driver (sim + WebRTC phones) {:.2} s ({:.2} cores), SIPp {:.2} s |",
        m.self_cpu,
        m.self_cpu / m.wall_s,
        m.sipp_cpu
    );
    (json, t)
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
        eprintln!("--profile transcode|passthrough");
        return std::process::ExitCode::FAILURE;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let opts = Options {
        profile,
        rate: arg(&args, "--rate", 5.0),
        concurrent: arg(&args, "--concurrent", 10),
        hold: Duration::from_secs_f64(arg(&args, "--hold", 10.0)),
        total: arg(&args, "--total", 10),
        whatsip: PathBuf::from(arg(&args, "--whatsip", "whatsip".to_string())),
        sipp: PathBuf::from(arg(&args, "--sipp", "sipp".to_string())),
        repo: PathBuf::from(arg(&args, "--repo", repo.display().to_string())),
        work_dir: PathBuf::from(arg(
            &args,
            "--work-dir",
            std::env::temp_dir()
                .join(format!("whatsip-bench-{}", std::process::id()))
                .display()
                .to_string(),
        )),
        out: PathBuf::from(arg(&args, "--out", "bench_report.json".to_string())),
    };
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
