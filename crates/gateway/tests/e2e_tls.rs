//! A TLS trunk to the PBX: simulator → whatsip (in process) → a TLS UAS built on whatsip-sip
//! (Debian's SIPp has no TLS). The PBX's certificate is checked against `pbx.tls_ca`.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)] // this file uses part of the shared harness
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::sync::mpsc;
use whatsip_gateway::Config;
use whatsip_gateway::runtime::Gateway;
use whatsip_sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent};
use whatsip_sip::transport::{ListenAddr, TlsSettings, TransportKind};
use whatsip_sip::{HeaderName, Method, StatusCode, Tag};

/// Requests the UAS saw: method and the transport they came over.
type Seen = Arc<Mutex<Vec<(String, TransportKind)>>>;

/// Answers INVITEs with 200 + PCMU SDP and everything else with 200.
async fn run_tls_uas(ep: Endpoint, mut events: mpsc::Receiver<EndpointEvent>, seen: Seen) {
    while let Some(ev) = events.recv().await {
        let EndpointEvent::Request(inc) = ev else {
            continue;
        };
        let req = inc.request;
        seen.lock()
            .unwrap()
            .push((req.method.as_str().to_owned(), inc.kind));
        let resp = if req.method == Method::Invite && inc.dialog.is_none() {
            let local = ep.local_addr(inc.kind, inc.source).unwrap();
            let mut ok = req.response(StatusCode::OK, Some(&Tag::new("tls-uas")));
            ok.headers.push(
                HeaderName::CONTACT,
                format!("<sip:pbx@{local};transport=tls>"),
            );
            let sdp = format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                 a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
                free_port()
            );
            ok.set_body("application/sdp", sdp);
            ok
        } else {
            req.response(StatusCode::OK, None)
        };
        let _ = ep.respond(inc.id, resp).await;
    }
}

/// A TLS UAS on 127.0.0.1 presenting `cert_pem`; returns it, its port and what it saw.
async fn start_tls_uas(cert_pem: &str, key_pem: &str) -> (Endpoint, u16, Seen) {
    let mut config = EndpointConfig::default();
    config.transport.listen.push(ListenAddr {
        kind: TransportKind::Tls,
        addr: "127.0.0.1:0".parse().unwrap(),
    });
    config.transport.tls =
        Some(TlsSettings::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), None).unwrap());
    let (uas, events) = Endpoint::start(config).await.unwrap();
    let port = uas
        .transport()
        .listen_addrs()
        .iter()
        .find(|l| l.kind == TransportKind::Tls)
        .unwrap()
        .addr
        .port();
    let seen: Seen = Arc::default();
    tokio::spawn(run_tls_uas(uas.clone(), events, seen.clone()));
    (uas, port, seen)
}

/// The harness's config with its `[pbx]` trunk moved to a TLS PBX on `port`, trusting
/// `ca_file`.
fn tls_trunk_toml(toml: &str, port: u16, ca_file: &Path) -> String {
    let pbx = toml.split("[pbx]").nth(1).unwrap();
    let old_port = pbx
        .lines()
        .find_map(|l| l.strip_prefix("address = \"127.0.0.1:"))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let moved = toml
        .replace(
            &format!("127.0.0.1:{old_port}\"\ntransport = \"udp\""),
            &format!(
                "127.0.0.1:{port}\"\ntransport = \"tls\"\ntls_ca = \"{}\"",
                ca_file.display()
            ),
        )
        .replace(
            &format!("@127.0.0.1:{old_port}\""),
            &format!("@127.0.0.1:{port};transport=tls\""),
        );
    assert!(moved.contains("transport = \"tls\"\ntls_ca"), "{moved}");
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_over_a_tls_trunk_checks_the_pbx_certificate() {
    // No SIPp is started, but the harness needs it installed (like every E2E test).
    let mut opts = InboundOpts::new(Kind::Udp, None);
    opts.in_process = false;
    opts.rtp_base = 45_400;
    let Some(h) = inbound_harness(opts).await else {
        return;
    };
    let dir = TempDir::new("whatsip-tls");
    // The PBX's certificate, for 127.0.0.1 (whatsip checks the IP when the trunk address
    // is an IP literal); it is also the CA whatsip trusts. whatsip's own TLS listener
    // uses it too.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let (cert_file, key_file) = (dir.0.join("pbx.pem"), dir.0.join("pbx.key"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();

    let (uas, uas_port, seen) = start_tls_uas(&cert_pem, &key_pem).await;

    // The harness's config, with the trunk moved to the TLS UAS and a TLS listener.
    let tls_listen = free_port();
    let toml = tls_trunk_toml(&h.toml, uas_port, &cert_file)
        .replacen(
            "[[sip.listen]]",
            &format!(
                "[[sip.listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:{tls_listen}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n[[sip.listen]]",
                cert_file.display(),
                key_file.display()
            ),
            1,
        );
    let gw = Gateway::start(Config::from_toml(&toml, Path::new("tls.toml"), &TestEnv).unwrap())
        .await
        .unwrap();

    let id = h.user_calls().await;
    h.wait_active(&id).await;
    h.sim.user_hangs_up(&id).await.unwrap();
    assert_released(&gw).await;

    let seen = seen.lock().unwrap().clone();
    let methods: Vec<&str> = seen.iter().map(|(m, _)| m.as_str()).collect();
    assert!(
        methods.starts_with(&["INVITE"]) && methods.contains(&"BYE"),
        "the call reached the PBX and was hung up there: {methods:?}"
    );
    assert!(
        seen.iter().all(|(_, k)| *k == TransportKind::Tls),
        "every request came over TLS: {seen:?}"
    );
    assert_eq!(h.graph_actions(), ["pre_accept", "accept"]);

    gw.shutdown().await;
    uas.shutdown().await;
    h.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_certificate_from_another_ca_is_refused() {
    let mut opts = InboundOpts::new(Kind::Udp, None);
    opts.in_process = false;
    opts.rtp_base = 45_600;
    opts.ring_timeout_s = 5;
    let Some(h) = inbound_harness(opts).await else {
        return;
    };
    let dir = TempDir::new("whatsip-tls-bad");
    let pbx_cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let other_ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca_file = dir.0.join("other-ca.pem");
    std::fs::write(&ca_file, other_ca.cert.pem()).unwrap();

    let (uas, uas_port, seen) =
        start_tls_uas(&pbx_cert.cert.pem(), &pbx_cert.signing_key.serialize_pem()).await;
    let toml = tls_trunk_toml(&h.toml, uas_port, &ca_file);
    let gw = Gateway::start(Config::from_toml(&toml, Path::new("tls.toml"), &TestEnv).unwrap())
        .await
        .unwrap();
    let id = h.user_calls().await;
    let info = h.sim.wait_for_call_end(&id, WAIT).await.unwrap();
    assert_ne!(info.state, whatsip_sim::core::CallState::Active);
    assert!(
        seen.lock().unwrap().is_empty(),
        "no request reached a PBX whose certificate whatsip does not trust"
    );
    assert_eq!(
        h.graph_actions(),
        ["pre_accept", "reject"],
        "the caller is refused"
    );
    assert_released(&gw).await;
    gw.shutdown().await;
    uas.shutdown().await;
    h.sim.shutdown().await;
}
