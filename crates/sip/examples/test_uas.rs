//! A small SIP UAS on `whatsip_sip::endpoint::Endpoint`, for SIPp interop and load runs.
//!
//! ```text
//! cargo run --release -p whatsip-sip --example test_uas -- [--udp ADDR] [--tcp ADDR]
//!     [--auth USER:PASSWORD [--md5-only]] [--seconds N]
//! ```
//!
//! Defaults: UDP on 127.0.0.1:5060 and TCP on the same address (`--no-tcp` for none). The Request-URI user picks the behaviour:
//! `busy` → 486, `ring` → 180 and wait, `slow` → 200 after 300 ms, anything else →
//! 180 + 200. Runs until `--seconds` pass (default: forever) or Ctrl-C, then prints
//! what it saw and the transport counters to stderr.

#![allow(clippy::print_stderr, missing_docs)]

#[path = "../tests/common/uas.rs"]
#[allow(unreachable_pub)]
mod uas;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use whatsip_sip::endpoint::{Endpoint, EndpointConfig, ServerAuth};
use whatsip_sip::transport::{ListenAddr, TransportKind};

/// A minimal SDP answer (no media flows in signalling tests).
fn sdp(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=whatsip 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = addr.ip()
    )
}

fn usage() -> ! {
    eprintln!(
        "usage: test_uas [--udp ADDR] [--tcp ADDR] [--auth USER:PASSWORD [--md5-only]] [--seconds N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut config = EndpointConfig::default();
    let mut udp: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5060));
    // `None`: same address as UDP; `Some(None)`: no TCP.
    let mut tcp: Option<Option<SocketAddr>> = None;
    let mut seconds: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--udp" => udp = value().parse().unwrap_or_else(|_| usage()),
            "--tcp" => tcp = Some(Some(value().parse().unwrap_or_else(|_| usage()))),
            "--no-tcp" => tcp = Some(None),
            "--seconds" => seconds = Some(value().parse().unwrap_or_else(|_| usage())),
            "--auth" => {
                let v = value();
                let Some((u, p)) = v.split_once(':') else {
                    usage()
                };
                config.server_auth = Some(ServerAuth::new("whatsip", u, p));
            }
            // SIPp 3.6 answers MD5 challenges only.
            "--md5-only" => {
                if let Some(a) = config.server_auth.as_mut() {
                    a.config.algorithms = vec![whatsip_sip::DigestAlgorithm::Md5];
                }
            }
            _ => usage(),
        }
    }
    config.transport.listen.push(ListenAddr {
        kind: TransportKind::Udp,
        addr: udp,
    });
    if let Some(tcp) = tcp.unwrap_or(Some(udp)) {
        config.transport.listen.push(ListenAddr {
            kind: TransportKind::Tcp,
            addr: tcp,
        });
    }
    config.queue = 8192;
    let (ep, events) = match Endpoint::start(config).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("test_uas: {e}");
            std::process::exit(1);
        }
    };
    for l in ep.transport().listen_addrs() {
        eprintln!("test_uas: listening on {} {}", l.kind, l.addr);
    }
    let stats = Arc::new(Mutex::new(uas::UasStats::default()));
    tokio::spawn(uas::run_uas(ep.clone(), events, stats.clone()));
    let stop = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let s = stats.lock().map(|s| s.clone()).unwrap_or_default();
    eprintln!("test_uas: {s:?}");
    eprintln!("test_uas: {:?}", ep.transport().stats());
    ep.shutdown().await;
}
