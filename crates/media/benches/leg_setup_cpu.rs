//! CPU cost of one WhatsApp call's WebRTC setup, both ends, sans-IO (no sockets, no tasks).
//!
//! Per call: the phone ([`PhonePeer`], Meta's side) writes its offer, our [`WaLeg`] answers,
//! ICE + DTLS-SRTP run to `Connected` on both ends (datagrams handed over in memory on a
//! virtual clock), then the leg hangs up. Run with a fresh DTLS certificate per leg (str0m's
//! default, `DtlsCertificates::per_leg`) and with one certificate shared by all legs of each
//! side (the endpoint's and the simulator's default); and, alone, the certificate generation
//! and the `dimpl::Config` build that str0m's own aws-lc-rs provider runs for every `Rtc`
//! (whatsip's provider, `webrtc/crypto.rs`, builds it once):
//!
//! ```text
//! WHATSIP_BENCH_CALLS=200 cargo bench -p whatsip-media --bench leg_setup_cpu
//! ```
//!
//! Figures are wall time on one thread per call (median, p90) and the process's CPU
//! (user+system from `/proc/self/stat`) divided by calls; the split "leg / phone" times only
//! the constructors (`WaLeg::answer`, `PhonePeer::offer`), where the certificate is made.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use whatsip_media::phone::{PhoneConfig, PhonePeer};
use whatsip_media::webrtc::{DtlsCertificates, DtlsIdentity, WaLeg, WaLegConfig, WaLegEvent};

mod common;
use common::{cpu_ticks, env_or};

const LEG: &str = "127.0.0.1:40000";
const PHONE: &str = "127.0.0.1:3484";

#[derive(Default)]
struct Times {
    total: Vec<Duration>,
    leg_new: Vec<Duration>,
    phone_new: Vec<Duration>,
}

/// One call: offer, answer, ICE + DTLS to connected on both ends, hang-up. Virtual clock.
fn one_call(leg_cfg: &WaLegConfig, phone_cfg: &PhoneConfig, base: Instant, times: &mut Times) {
    let start = Instant::now();
    let mut now = base;
    let (mut phone, offer) = PhonePeer::offer(phone_cfg, now).unwrap();
    let t_phone = start.elapsed();
    let t = Instant::now();
    let (mut leg, answer) = WaLeg::answer(leg_cfg, &offer, now).unwrap();
    let t_leg = t.elapsed();
    phone.accept_answer(&answer, now).unwrap();
    let (mut leg_up, mut phone_up) = (false, false);
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(d) = leg.poll_datagram() {
            phone.handle_datagram(now, d.source, d.destination, &d.contents);
            moved = true;
        }
        while let Some(d) = phone.poll_datagram() {
            leg.handle_datagram(now, d.source, d.destination, &d.contents);
            moved = true;
        }
        while let Some(e) = leg.poll_event() {
            leg_up |= e == WaLegEvent::Connected;
        }
        while let Some(e) = phone.poll_event() {
            phone_up |= e == WaLegEvent::Connected;
        }
        if leg_up && phone_up {
            break;
        }
        if moved {
            continue;
        }
        let next = [leg.poll_timeout(), phone.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        now = next.max(now);
        leg.handle_timeout(now);
        phone.handle_timeout(now);
    }
    assert!(leg_up && phone_up, "call did not connect");
    leg.hang_up(now);
    while let Some(d) = leg.poll_datagram() {
        phone.handle_datagram(now, d.source, d.destination, &d.contents);
    }
    times.total.push(start.elapsed());
    times.leg_new.push(t_leg);
    times.phone_new.push(t_phone);
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn run(name: &str, leg_dtls: DtlsCertificates, phone_dtls: DtlsCertificates, calls: u64) {
    let leg_cfg = WaLegConfig {
        candidates: vec![LEG.parse::<SocketAddr>().unwrap()],
        dtls: leg_dtls,
        ..WaLegConfig::default()
    };
    let phone_cfg = PhoneConfig {
        candidates: vec![PHONE.parse::<SocketAddr>().unwrap()],
        dtls: phone_dtls,
        ..PhoneConfig::default()
    };
    let base = Instant::now();
    let mut times = Times::default();
    // warm-up (and, when shared, the one certificate of each side)
    for _ in 0..5 {
        one_call(&leg_cfg, &phone_cfg, base, &mut times);
    }
    times = Times::default();
    let ticks = cpu_ticks();
    let wall = Instant::now();
    for _ in 0..calls {
        one_call(&leg_cfg, &phone_cfg, base, &mut times);
    }
    let wall = wall.elapsed().as_secs_f64();
    let cpu_ms = (cpu_ticks() - ticks) as f64 * 10.0 / calls as f64;
    println!(
        "| {name} | {calls} | {:.3} / {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
        pct(&mut times.total, 0.5),
        pct(&mut times.total, 0.9),
        pct(&mut times.leg_new, 0.5),
        pct(&mut times.phone_new, 0.5),
        cpu_ms,
        calls as f64 / wall,
    );
}

fn main() {
    let calls = env_or("WHATSIP_BENCH_CALLS", 200).clamp(10, 2_000);
    let now = Instant::now();
    let mut gen_times = Vec::new();
    for _ in 0..calls.min(200) {
        let t = Instant::now();
        let id = DtlsIdentity::generate(now).unwrap();
        gen_times.push(t.elapsed());
        assert_eq!(id.fingerprint_sha256().len(), 95);
    }
    println!(
        "dtls certificate generation: median {:.3} ms, p90 {:.3} ms ({} runs)",
        pct(&mut gen_times, 0.5),
        pct(&mut gen_times, 0.9),
        gen_times.len()
    );
    let mut cfg_times = Vec::new();
    for _ in 0..calls.min(200) {
        let t = Instant::now();
        let c = dimpl::Config::builder()
            .use_server_cookie(false)
            .build()
            .unwrap();
        cfg_times.push(t.elapsed());
        drop(c);
    }
    println!(
        "dimpl config build (what str0m's provider did per Rtc; ours shares one): median {:.3} ms, p90 {:.3} ms",
        pct(&mut cfg_times, 0.5),
        pct(&mut cfg_times, 0.9),
    );
    println!();
    println!(
        "| certificates | calls | call setup both ends median / p90 ms | WaLeg::answer median ms | PhonePeer::offer median ms | CPU ms per call (process) | calls/s (one thread) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for round in 0..2 {
        let tag = if round == 0 { "" } else { " (again)" };
        run(
            &format!("fresh per leg{tag}"),
            DtlsCertificates::per_leg(),
            DtlsCertificates::per_leg(),
            calls,
        );
        run(
            &format!("shared per side{tag}"),
            DtlsCertificates::default(),
            DtlsCertificates::default(),
            calls,
        );
    }
}
