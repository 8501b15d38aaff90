//! Shared helpers for the endpoint and SIPp integration tests: a small UAS and UAC built
//! on `Endpoint`, free ports, and a bounded SIPp runner.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

pub mod uas;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use whatsip_sip::endpoint::{ClientEvent, Endpoint, EndpointConfig, EndpointEvent, ack_for_2xx};
use whatsip_sip::transport::{ListenAddr, Target, TransportKind};
use whatsip_sip::{CallId, HeaderName, Method, NameAddr, Request, Response, StatusCode, Tag, Uri};

/// Generous bound for anything that should take well under a second.
pub const WAIT: Duration = Duration::from_secs(20);

/// An endpoint listening on UDP and TCP on 127.0.0.1, OS-chosen ports, fast timers.
pub async fn endpoint(
    tweak: impl FnOnce(&mut EndpointConfig),
) -> (Endpoint, tokio::sync::mpsc::Receiver<EndpointEvent>) {
    let mut config = EndpointConfig::default();
    config.transport.listen = vec![
        ListenAddr {
            kind: TransportKind::Udp,
            addr: "127.0.0.1:0".parse().unwrap(),
        },
        ListenAddr {
            kind: TransportKind::Tcp,
            addr: "127.0.0.1:0".parse().unwrap(),
        },
    ];
    config.shutdown_grace = Duration::from_secs(5);
    tweak(&mut config);
    Endpoint::start(config).await.unwrap()
}

/// The bound address of `kind`.
pub fn addr_of(ep: &Endpoint, kind: TransportKind) -> SocketAddr {
    ep.transport()
        .listen_addrs()
        .iter()
        .find(|l| l.kind == kind)
        .unwrap()
        .addr
}

/// A port free on both UDP and TCP at 127.0.0.1 right now (for SIPp's `-p`).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port")
}

/// A minimal SDP offer/answer for signalling tests (no media flows).
pub fn sdp(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=whatsip 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = addr.ip()
    )
}

/// A fresh out-of-dialog INVITE from `local` to `uri`.
pub fn invite(local: SocketAddr, kind: TransportKind, uri: &str, seed: u64) -> Request {
    let uri = Uri::parse(uri).unwrap();
    let mut req = Request::new(Method::Invite, uri.clone());
    let from = Uri::parse(&format!("sip:whatsip@{local}")).unwrap();
    let tag = Tag::new(format!("t{seed}"));
    req.headers.push(
        HeaderName::FROM,
        NameAddr::new(from).with_tag(&tag).to_string(),
    );
    req.headers
        .push(HeaderName::TO, NameAddr::new(uri).to_string());
    req.headers.push(
        HeaderName::CALL_ID,
        CallId::new(format!("call-{seed}-{}", local.port())).as_str(),
    );
    req.headers.push(HeaderName::CSEQ, "1 INVITE");
    let transport = match kind {
        TransportKind::Udp => String::new(),
        other => format!(";transport={}", other.as_str().to_ascii_lowercase()),
    };
    req.headers.push(
        HeaderName::CONTACT,
        format!("<sip:whatsip@{local}{transport}>"),
    );
    req.set_body("application/sdp", sdp(local));
    req
}

/// What a UAC call saw.
#[derive(Debug, Default, Clone)]
pub struct UacOutcome {
    pub provisionals: Vec<u16>,
    pub final_status: u16,
    pub bye_status: Option<u16>,
}

/// Places one call: INVITE, ACK on 2xx, hold, BYE. Returns what came back.
pub async fn uac_call(
    ep: &Endpoint,
    target: Target,
    uri: &str,
    hold: Duration,
    seed: u64,
) -> UacOutcome {
    let local = ep.local_addr(target.kind, target.addr).unwrap();
    let inv = invite(local, target.kind, uri, seed);
    let mut h = ep.send_request(inv, target.clone()).await.unwrap();
    let invite_sent = h.request.clone();
    let mut out = UacOutcome::default();
    let final_resp: Response = loop {
        match tokio::time::timeout(WAIT, h.recv())
            .await
            .expect("invite outcome")
        {
            Some(ClientEvent::Provisional(r)) => out.provisionals.push(r.status.as_u16()),
            Some(ClientEvent::Final(r)) => break r,
            other => panic!("invite failed: {other:?}"),
        }
    };
    out.final_status = final_resp.status.as_u16();
    if !final_resp.status.is_success() {
        return out;
    }
    let mut ack = ack_for_2xx(&strip_via(&invite_sent), &final_resp);
    let dest = next_hop(&ack, &target);
    ack = ep.send_ack(ack, dest.clone()).await.unwrap();
    let _ = ack;
    tokio::time::sleep(hold).await;
    let mut bye = ack_for_2xx(&strip_via(&invite_sent), &final_resp);
    bye.method = Method::Bye;
    let seq = final_resp.cseq().map_or(1, |c| c.seq) + 1;
    bye.headers.set(HeaderName::CSEQ, format!("{seq} BYE"));
    let mut hb = ep.send_request(bye, dest).await.unwrap();
    let r = tokio::time::timeout(WAIT, hb.final_response())
        .await
        .expect("bye outcome")
        .expect("bye answered");
    out.bye_status = Some(r.status.as_u16());
    out
}

/// In these loopback tests the remote target is the peer we called.
fn next_hop(_req: &Request, target: &Target) -> Target {
    Target::new(target.kind, target.addr)
}

fn strip_via(req: &Request) -> Request {
    let mut r = req.clone();
    r.headers.remove("Via");
    r
}

/// Whether a status is a 2xx.
pub fn is_ok(s: StatusCode) -> bool {
    s.is_success()
}

// ---- SIPp ---------------------------------------------------------------------------

/// Finds `sipp`, running `scripts/install-test-deps.sh` once if it is missing.
/// Returns `None` (and the test should skip loudly) only if it still cannot be found.
pub fn sipp() -> Option<PathBuf> {
    fn which() -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("sipp"))
                .find(|p| p.is_file())
        })
    }
    if let Some(p) = which() {
        return Some(p);
    }
    let script = repo_root().join("scripts/install-test-deps.sh");
    let _ = Command::new("bash").arg(script).status();
    let found = which();
    if found.is_none() {
        eprintln!(
            "\n!!!!!!!! SIPp NOT FOUND: SKIPPING SIPp INTEROP TEST (run scripts/install-test-deps.sh) !!!!!!!!\n"
        );
    }
    found
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn scenario(name: &str) -> PathBuf {
    repo_root().join("tests/sipp").join(name)
}

/// Result of one SIPp run.
#[derive(Debug)]
pub struct SippRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub successful: Option<u64>,
    pub failed: Option<u64>,
    pub retransmissions: Option<u64>,
}

/// Runs SIPp to completion with hard bounds: `-timeout` on SIPp itself, and a kill after
/// `limit` in case it hangs anyway.
pub fn run_sipp(args: &[String], limit: Duration) -> SippRun {
    let sipp = sipp().expect("sipp checked by caller");
    let dir = tempdir();
    let mut cmd = Command::new(sipp);
    cmd.args(args)
        .args([
            "-nostdin",
            "-timeout_error",
            "-trace_stat",
            "-fd",
            "1",
            "-trace_err",
            "-timeout",
        ])
        .arg(format!("{}s", limit.as_secs().saturating_sub(5).max(5)))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn sipp");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("sipp output"),
        Err(_) => {
            // Kill only the SIPp we started, by pid.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("sipp did not finish within {limit:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stats = read_stat_csv(&dir);
    let errors = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let _ = std::fs::remove_dir_all(&dir);
    SippRun {
        code: output.status.code(),
        stdout,
        stderr: format!("{stderr}\n{errors}"),
        successful: stats
            .as_ref()
            .and_then(|s| s.get("SuccessfulCall(C)").copied()),
        failed: stats.as_ref().and_then(|s| s.get("FailedCall(C)").copied()),
        retransmissions: stats
            .as_ref()
            .and_then(|s| s.get("Retransmissions(C)").copied()),
    }
}

fn read_stat_csv(dir: &Path) -> Option<std::collections::HashMap<String, u64>> {
    let file = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("_.csv"))?;
    let text = std::fs::read_to_string(file.path()).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.rfind(|l| !l.trim().is_empty())?.split(';').collect();
    Some(
        header
            .iter()
            .zip(last.iter())
            .filter_map(|(h, v)| v.trim().parse::<u64>().ok().map(|n| (h.to_string(), n)))
            .collect(),
    )
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "whatsip-sipp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts a SIPp run ended with every call successful.
pub fn assert_sipp_ok(run: &SippRun, calls: u64) {
    assert!(
        run.code == Some(0) && run.successful == Some(calls) && run.failed == Some(0),
        "sipp failed: code {:?}, successful {:?}, failed {:?}\nstdout:\n{}\nstderr:\n{}",
        run.code,
        run.successful,
        run.failed,
        tail(&run.stdout),
        tail(&run.stderr)
    );
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
