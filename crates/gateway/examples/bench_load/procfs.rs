//! Process and socket accounting from `/proc`, ports, and child processes (Linux).

use std::collections::HashMap;
use std::process::{Child, Command};

/// CPU time (user + system) of a process in seconds, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the `(comm)`: state is field 3; utime/stime are fields 14/15
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / clk_tck())
}

/// CPU time (user + system) of this process's children that were waited for, in seconds
/// (`cutime` + `cstime` of `/proc/self/stat`).
pub(crate) fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(13)?.parse().ok()?;
    let st: f64 = f.get(14)?.parse().ok()?;
    Some((ut + st) / clk_tck())
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A line of `/proc/<pid>/status` (`VmRSS`, `Cpus_allowed_list`, …), value only.
pub(crate) fn status_field(pid: &str, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// `VmRSS` in KiB.
pub(crate) fn rss_kib(pid: &str) -> Option<u64> {
    status_field(pid, "VmRSS")?
        .split_whitespace()
        .next()?
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
pub(crate) struct DropTracker {
    start: HashMap<u64, u64>,
    max: HashMap<u64, (u16, u64)>,
}

impl DropTracker {
    pub(crate) fn new() -> Self {
        Self {
            start: udp_drops().into_iter().map(|(i, (_, d))| (i, d)).collect(),
            max: HashMap::new(),
        }
    }

    pub(crate) fn sample(&mut self) {
        for (inode, (port, drops)) in udp_drops() {
            let e = self.max.entry(inode).or_insert((port, drops));
            e.1 = e.1.max(drops);
        }
    }

    /// (SIPp echo socket, whatsip WhatsApp sockets, whatsip PBX-leg sockets, all others,
    /// SIPp's SIP socket, whatsip's SIP socket, the SIPp UAC's SIP socket, the SIPp UAC's
    /// media socket). The WhatsApp sockets are the first `wa_ports` ports of the range.
    /// `sip_ports`: SIPp UAS, whatsip, SIPp UAC, SIPp UAC media base (0: none). The UAC's
    /// media socket is the first call's `[auto_media_port]`: SIPp binds it and never reads
    /// it, so the RTP whatsip sends the first call's PBX ends up as drops there.
    pub(crate) fn split(
        &self,
        sip_ports: [u16; 4],
        sipp_media: u16,
        rtp_min: u32,
        rtp_max: u32,
        wa_ports: u32,
    ) -> [u64; 8] {
        let mut out = [0u64; 8];
        for (inode, (port, drops)) in &self.max {
            let d = drops.saturating_sub(self.start.get(inode).copied().unwrap_or(0));
            let p = u32::from(*port);
            let i = if *port == sip_ports[0] && *port != 0 {
                4
            } else if *port == sip_ports[1] {
                5
            } else if *port == sip_ports[2] && *port != 0 {
                6
            } else if *port == sip_ports[3] && *port != 0 {
                7
            } else if *port == sipp_media {
                0
            } else if p >= rtp_min && p < rtp_min + wa_ports {
                1
            } else if p >= rtp_min + wa_ports && p <= rtp_max {
                2
            } else {
                3
            };
            out[i] += d;
        }
        out
    }
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The start of an even RTP range of `len` ports whose first `head` ports (the gateway's
/// WhatsApp media sockets) are free right now; other tests on this machine use other ranges.
pub(crate) fn free_rtp_base(len: u32, head: u32) -> Result<u32, String> {
    // two runs in one process (the smoke tests run in parallel) must not pick one range
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = std::process::id().wrapping_add(run.wrapping_mul(37));
    for i in 0..50u32 {
        let base = 20_000 + ((seed.wrapping_add(i * 7919)) % 200) * 200;
        if base + len > 65_000 {
            continue;
        }
        let free = (base..base + head.max(2))
            .all(|p| std::net::UdpSocket::bind(("127.0.0.1", p as u16)).is_ok());
        if free {
            return Ok(base);
        }
    }
    Err("no free RTP range".into())
}

/// A `-mp` base for the SIPp UAC between 4000 and 9000 whose first four UDP ports are free
/// (SIPp binds the base; its per-call ports reach base + 9996, below the gateway's RTP
/// ranges at 20000 and up). Runs in parallel (the smoke tests) pick different bases.
pub(crate) fn free_uac_media_base() -> Result<u16, String> {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = std::process::id()
        .wrapping_mul(31)
        .wrapping_add(run.wrapping_mul(389));
    for i in 0..100u32 {
        let base = 4_000 + (seed.wrapping_add(i * 97) % 1_250) * 4;
        let free =
            (base..base + 4).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p as u16)).is_ok());
        if free {
            return Ok(base as u16);
        }
    }
    Err("no free media port base for the SIPp UAC".into())
}

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

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:`port` (plain HTTP/1.0, bounded by `timeout`); the body.
pub(crate) async fn http_get(
    port: u16,
    path: &str,
    timeout: std::time::Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        Some(body)
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}
