//! Loopback tests of the transports: real sockets on 127.0.0.1 / ::1, generous timeouts.

use std::time::Duration;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn msg(extra: &str) -> String {
    format!(
        "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKx\r\n{extra}Content-Length: 4\r\n\r\nbody"
    )
}

async fn bind(
    kinds: &[(TransportKind, &str)],
    tweak: impl FnOnce(&mut TransportConfig),
) -> (Transport, mpsc::Receiver<TransportEvent>) {
    let mut config = TransportConfig {
        listen: kinds
            .iter()
            .map(|(kind, a)| ListenAddr {
                kind: *kind,
                addr: a.parse().unwrap(),
            })
            .collect(),
        ..TransportConfig::default()
    };
    tweak(&mut config);
    Transport::bind(config).await.unwrap()
}

async fn next_message(rx: &mut mpsc::Receiver<TransportEvent>) -> Received {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(TransportEvent::Message(m))) => m,
        Ok(Some(other)) => panic!("unexpected event {other:?}"),
        Ok(None) => panic!("channel closed"),
        Err(_) => panic!("timed out waiting for a message"),
    }
}

fn addr(t: &Transport, kind: TransportKind) -> SocketAddr {
    t.listen_addrs()
        .iter()
        .find(|l| l.kind == kind)
        .unwrap()
        .addr
}

#[tokio::test]
async fn udp_datagram_round_trip_and_reply_target() {
    let (a, mut _arx) = bind(&[(TransportKind::Udp, "127.0.0.1:0")], |_| {}).await;
    let (b, mut brx) = bind(&[(TransportKind::Udp, "127.0.0.1:0")], |_| {}).await;
    let b_addr = addr(&b, TransportKind::Udp);
    a.send(
        &Target::new(TransportKind::Udp, b_addr),
        Bytes::from(msg("")),
    )
    .unwrap();
    let got = next_message(&mut brx).await;
    assert_eq!(got.bytes, Bytes::from(msg("")));
    assert_eq!(got.source, addr(&a, TransportKind::Udp));
    assert_eq!(got.local, b_addr);
    assert_eq!(got.connection, None);
    assert_eq!(got.reply_target().addr, addr(&a, TransportKind::Udp));
    assert_eq!(b.stats().messages_received, 1);
    // The sender counts after the socket call returns, which may be after delivery.
    for _ in 0..100 {
        if a.stats().messages_sent == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.stats().messages_sent, 1);
}

#[tokio::test]
async fn udp_over_ipv6() {
    let (a, _arx) = bind(&[(TransportKind::Udp, "[::1]:0")], |_| {}).await;
    let (b, mut brx) = bind(&[(TransportKind::Udp, "[::1]:0")], |_| {}).await;
    let b_addr = addr(&b, TransportKind::Udp);
    a.send(
        &Target::new(TransportKind::Udp, b_addr),
        Bytes::from(msg("")),
    )
    .unwrap();
    let got = next_message(&mut brx).await;
    assert!(got.source.is_ipv6());
}

#[tokio::test]
async fn udp_oversized_and_truncated_datagrams_are_dropped_and_counted() {
    let (b, mut brx) = bind(&[(TransportKind::Udp, "127.0.0.1:0")], |c| {
        c.limits.max_message_bytes = 200;
    })
    .await;
    let b_addr = addr(&b, TransportKind::Udp);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&[b'x'; 500], b_addr).unwrap();
    sock.send_to(msg("").replace("body", "bo").as_bytes(), b_addr)
        .unwrap();
    sock.send_to(b"\r\n\r\n", b_addr).unwrap();
    sock.send_to(msg("").as_bytes(), b_addr).unwrap();
    // Ordering on loopback is preserved, so the good one arrives after the bad ones.
    let got = next_message(&mut brx).await;
    assert_eq!(got.bytes, Bytes::from(msg("")));
    let s = b.stats();
    assert_eq!(s.frame_errors, 2);
    assert_eq!(s.keepalives, 1);
    assert_eq!(s.messages_received, 1);
}

#[tokio::test]
async fn tcp_frames_pipelined_messages_and_replies_on_same_connection() {
    let (b, mut brx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |_| {}).await;
    let b_addr = addr(&b, TransportKind::Tcp);
    let mut client = tokio::net::TcpStream::connect(b_addr).await.unwrap();
    let two = format!("\r\n\r\n{}{}", msg("X-N: 1\r\n"), msg("l: 0\r\nX-N: 2\r\n"));
    // The second message has two Content-Length headers that disagree: 0 vs 4.
    // Send them split across writes to exercise reassembly.
    let (first, rest) = two.as_bytes().split_at(30);
    client.write_all(first).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(rest).await.unwrap();
    let got = next_message(&mut brx).await;
    assert_eq!(got.bytes, Bytes::from(msg("X-N: 1\r\n")));
    let conn = got.connection.expect("stream has a connection id");
    // The conflicting Content-Length closes the connection: framing is lost.
    let mut pong = [0u8; 2];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"\r\n", "double CRLF ping gets a CRLF pong");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "connection closed without data");
    assert_eq!(b.stats().frame_errors, 1);
    assert_eq!(b.stats().keepalives, 1);
    // ... and they are TCP's: the per-transport split puts nothing on UDP or TLS.
    let by_kind = b.stats_by_kind();
    assert_eq!(by_kind[1].0, TransportKind::Tcp);
    assert_eq!((by_kind[1].1.frame_errors, by_kind[1].1.keepalives), (1, 1));
    assert_eq!(by_kind[0].1, Default::default(), "nothing on UDP");
    assert_eq!(by_kind[2].1, Default::default(), "nothing on TLS");
    // After close, a reply to the old connection opens a new one to the address.
    let _ = conn;
}

#[tokio::test]
async fn tcp_response_goes_back_on_request_connection() {
    let (b, mut brx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |_| {}).await;
    let b_addr = addr(&b, TransportKind::Tcp);
    let mut client = tokio::net::TcpStream::connect(b_addr).await.unwrap();
    client.write_all(msg("").as_bytes()).await.unwrap();
    let got = next_message(&mut brx).await;
    let reply = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    b.send(&got.reply_target(), Bytes::from_static(reply.as_bytes()))
        .unwrap();
    let mut buf = vec![0u8; reply.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, reply.as_bytes());
    assert_eq!(b.connection_count(), 1);
}

#[tokio::test]
async fn tcp_outgoing_connection_is_reused_both_ways() {
    let (a, mut arx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |_| {}).await;
    let (b, mut brx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |_| {}).await;
    let b_addr = addr(&b, TransportKind::Tcp);
    for i in 0..3 {
        a.send(
            &Target::new(TransportKind::Tcp, b_addr),
            Bytes::from(msg(&format!("X-N: {i}\r\n"))),
        )
        .unwrap();
    }
    let mut conns = Vec::new();
    for i in 0..3 {
        let got = next_message(&mut brx).await;
        assert_eq!(got.bytes, Bytes::from(msg(&format!("X-N: {i}\r\n"))));
        conns.push(got.connection.unwrap());
    }
    assert!(conns.windows(2).all(|w| w[0] == w[1]), "one connection");
    assert_eq!(a.connection_count(), 1);
    assert_eq!(a.stats().connections_opened, 1);
    // B answers on the accepted connection; A hears it on its outgoing one.
    b.send(
        &Target {
            connection: Some(conns[0]),
            ..Target::new(TransportKind::Tcp, "127.0.0.1:9".parse().unwrap())
        },
        Bytes::from(msg("")),
    )
    .unwrap();
    let back = next_message(&mut arx).await;
    assert_eq!(back.source, b_addr);
    assert_eq!(b.stats().connections_opened, 1);
}

#[tokio::test]
async fn tcp_idle_connection_is_closed() {
    let (b, mut brx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |c| {
        c.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let b_addr = addr(&b, TransportKind::Tcp);
    let mut client = tokio::net::TcpStream::connect(b_addr).await.unwrap();
    client.write_all(msg("").as_bytes()).await.unwrap();
    let _ = next_message(&mut brx).await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .expect("idle close within the wait")
        .unwrap();
    assert_eq!(n, 0);
    // The table entry goes with it.
    for _ in 0..100 {
        if b.connection_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.connection_count(), 0);
    assert_eq!(b.stats().connections_closed, 1);
}

#[tokio::test]
async fn tcp_oversized_message_closes_connection() {
    let (b, _brx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |c| {
        c.limits.max_message_bytes = 300;
    })
    .await;
    let b_addr = addr(&b, TransportKind::Tcp);
    let mut client = tokio::net::TcpStream::connect(b_addr).await.unwrap();
    client
        .write_all(
            msg("")
                .replace("Content-Length: 4", "Content-Length: 100000")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(b.stats().frame_errors, 1);
}

#[tokio::test]
async fn tcp_connect_failure_is_reported() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (a, mut arx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |_| {}).await;
    a.send(&Target::new(TransportKind::Tcp, port), Bytes::from(msg("")))
        .unwrap();
    match tokio::time::timeout(WAIT, arx.recv()).await.unwrap() {
        Some(TransportEvent::ConnectFailed { kind, addr }) => {
            assert_eq!(kind, TransportKind::Tcp);
            assert_eq!(addr, port);
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert_eq!(a.connection_count(), 0);
}

#[tokio::test]
async fn tls_round_trip_with_pem_certificates() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let settings = TlsSettings::from_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        Some(cert_pem.as_bytes()),
    )
    .unwrap();
    let (a, mut arx) = bind(&[(TransportKind::Tls, "127.0.0.1:0")], |c| {
        c.tls = Some(settings.clone());
    })
    .await;
    let (b, mut brx) = bind(&[(TransportKind::Tls, "127.0.0.1:0")], |c| {
        c.tls = Some(settings.clone());
    })
    .await;
    let b_addr = addr(&b, TransportKind::Tls);
    let target = Target {
        server_name: Some("localhost".to_owned()),
        ..Target::new(TransportKind::Tls, b_addr)
    };
    a.send(&target, Bytes::from(msg(""))).unwrap();
    let got = next_message(&mut brx).await;
    assert_eq!(got.kind, TransportKind::Tls);
    assert_eq!(got.bytes, Bytes::from(msg("")));
    b.send(&got.reply_target(), Bytes::from(msg("X-Reply: 1\r\n")))
        .unwrap();
    let back = next_message(&mut arx).await;
    assert_eq!(back.bytes, Bytes::from(msg("X-Reply: 1\r\n")));
}

#[tokio::test]
async fn tls_wrong_server_name_fails_handshake() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let settings = TlsSettings::from_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        Some(cert_pem.as_bytes()),
    )
    .unwrap();
    let (a, mut arx) = bind(&[], |c| c.tls = Some(settings.clone())).await;
    let (b, _brx) = bind(&[(TransportKind::Tls, "127.0.0.1:0")], |c| {
        c.tls = Some(settings.clone());
    })
    .await;
    let target = Target {
        server_name: Some("pbx.example.com".to_owned()),
        ..Target::new(TransportKind::Tls, addr(&b, TransportKind::Tls))
    };
    a.send(&target, Bytes::from(msg(""))).unwrap();
    assert!(matches!(
        tokio::time::timeout(WAIT, arx.recv()).await.unwrap(),
        Some(TransportEvent::ConnectFailed { .. })
    ));
}

#[test]
fn tls_pem_without_key_is_an_error() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    assert!(matches!(
        TlsSettings::from_pem(cert_pem.as_bytes(), b"", None),
        Err(TlsError::NoKey)
    ));
    assert!(matches!(
        TlsSettings::from_pem(b"", cert.signing_key.serialize_pem().as_bytes(), None),
        Err(TlsError::NoCertificate)
    ));
}

fn req(kind: TransportKind, connection: Option<ConnectionId>) -> Received {
    Received {
        bytes: Bytes::new(),
        kind,
        source: "192.0.2.7:40000".parse().unwrap(),
        local: "192.0.2.1:5060".parse().unwrap(),
        connection,
    }
}

fn via(kind: TransportKind) -> ViaRouting {
    ViaRouting {
        kind,
        sent_by_ip: Some("192.0.2.9".parse().unwrap()),
        sent_by_port: Some(5070),
        received: None,
        rport: None,
        maddr: None,
    }
}

#[test]
fn response_routing_rfc3261_18_2_2() {
    let id = ConnectionId(7);
    // Reliable: the request's connection.
    let t = response_target(&via(TransportKind::Tcp), &req(TransportKind::Tcp, Some(id))).unwrap();
    assert_eq!(t.connection, Some(id));
    // Fallback if the connection closed: sent-by host and port, not the ephemeral source.
    assert_eq!(t.addr, "192.0.2.9:5070".parse().unwrap());
    let v = ViaRouting {
        received: Some("192.0.2.7".parse().unwrap()),
        rport: Some(40000),
        ..via(TransportKind::Tcp)
    };
    let t = response_target(&v, &req(TransportKind::Tcp, Some(id))).unwrap();
    assert_eq!(t.addr, "192.0.2.7:5070".parse().unwrap());
    // maddr wins over received, keeps the sent-by port.
    let v = ViaRouting {
        maddr: Some("239.1.1.1".parse().unwrap()),
        received: Some("192.0.2.7".parse().unwrap()),
        ..via(TransportKind::Udp)
    };
    let t = response_target(&v, &req(TransportKind::Udp, None)).unwrap();
    assert_eq!(t.addr, "239.1.1.1:5070".parse().unwrap());
    // received + rport (RFC 3581 §4).
    let v = ViaRouting {
        received: Some("192.0.2.7".parse().unwrap()),
        rport: Some(40000),
        ..via(TransportKind::Udp)
    };
    let t = response_target(&v, &req(TransportKind::Udp, None)).unwrap();
    assert_eq!(t.addr, "192.0.2.7:40000".parse().unwrap());
    // received without rport: sent-by port.
    let v = ViaRouting {
        received: Some("192.0.2.7".parse().unwrap()),
        ..via(TransportKind::Udp)
    };
    assert_eq!(
        response_target(&v, &req(TransportKind::Udp, None))
            .unwrap()
            .addr,
        "192.0.2.7:5070".parse().unwrap()
    );
    // sent-by only, default port by transport.
    let v = ViaRouting {
        sent_by_port: None,
        ..via(TransportKind::Udp)
    };
    assert_eq!(
        response_target(&v, &req(TransportKind::Udp, None))
            .unwrap()
            .addr,
        "192.0.2.9:5060".parse().unwrap()
    );
    // TLS with a closed connection falls back to received/sent-by on port 5061.
    let v = ViaRouting {
        sent_by_port: None,
        ..via(TransportKind::Tls)
    };
    let t = response_target(&v, &req(TransportKind::Tls, None)).unwrap();
    assert_eq!(t.addr, "192.0.2.9:5061".parse().unwrap());
    // Hostname sent-by and nothing else: nowhere to go.
    let v = ViaRouting {
        sent_by_ip: None,
        ..via(TransportKind::Udp)
    };
    assert_eq!(response_target(&v, &req(TransportKind::Udp, None)), None);
}

#[test]
fn transport_kind_tokens() {
    assert_eq!(TransportKind::from_token("tcp"), Some(TransportKind::Tcp));
    assert_eq!(TransportKind::from_token("UDP"), Some(TransportKind::Udp));
    assert_eq!(TransportKind::from_token("Tls"), Some(TransportKind::Tls));
    assert_eq!(TransportKind::from_token("sctp"), None);
    assert!(!TransportKind::Udp.is_reliable());
    assert_eq!(TransportKind::Tls.to_string(), "TLS");
}

#[tokio::test]
async fn tcp_request_without_content_length_gets_400_then_close() {
    let (b, _brx) = bind(&[(TransportKind::Tcp, "127.0.0.1:0")], |_| {}).await;
    let mut client = tokio::net::TcpStream::connect(addr(&b, TransportKind::Tcp))
        .await
        .unwrap();
    let req = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKnocl\r\n\
               From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: nocl\r\nCSeq: 1 OPTIONS\r\n\
               Max-Forwards: 70\r\n\r\n";
    client.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 400"), "{text}");
    assert!(text.contains("Call-ID: nocl"));
    assert_eq!(b.stats().frame_errors, 1);
}

#[tokio::test]
async fn udp_sockets_get_the_receive_buffer_asked_for_up_to_the_kernel_cap() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992);
    let asked = 1 << 20;
    let (t, _rx) = bind(&[(TransportKind::Udp, "127.0.0.1:0")], |c| {
        c.udp_buffer_bytes = asked;
    })
    .await;
    let (default, _rx2) = bind(&[(TransportKind::Udp, "127.0.0.1:0")], |c| {
        c.udp_buffer_bytes = 0;
    })
    .await;
    let got = t.udp_receive_buffers();
    assert_eq!(got.len(), 1);
    // Linux grants min(asked, rmem_max) and reports twice that.
    assert!(
        got[0].1 >= asked.min(rmem_max),
        "{got:?}, rmem_max {rmem_max}"
    );
    let kernel_default = default.udp_receive_buffers()[0].1;
    if rmem_max > kernel_default {
        assert!(
            got[0].1 > kernel_default,
            "{got:?} vs default {kernel_default}"
        );
    }
}
