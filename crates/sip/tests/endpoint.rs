//! Endpoint against endpoint over loopback UDP and TCP: INVITE/180/200/ACK/BYE, 486,
//! CANCEL, OPTIONS, 481 for unknown dialogs, malformed input, shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::uas::{UasStats, run_uas};
use common::*;
use whatsip_sip::endpoint::{ClientEvent, EndpointEvent};
use whatsip_sip::transport::{Target, TransportKind};
use whatsip_sip::{HeaderName, Method, NameAddr, Request, Uri};

async fn uas() -> (whatsip_sip::endpoint::Endpoint, Arc<Mutex<UasStats>>) {
    let (ep, events) = endpoint(|_| {}).await;
    let stats = Arc::new(Mutex::new(UasStats::default()));
    tokio::spawn(run_uas(ep.clone(), events, stats.clone()));
    (ep, stats)
}

async fn call_answered(kind: TransportKind) {
    let (server, stats) = uas().await;
    let (client, _ev) = endpoint(|_| {}).await;
    let target = Target::new(kind, addr_of(&server, kind));
    let out = uac_call(
        &client,
        target,
        "sip:answer@127.0.0.1",
        Duration::from_millis(50),
        1,
    )
    .await;
    assert_eq!(out.final_status, 200);
    assert!(out.provisionals.contains(&100), "automatic 100 Trying");
    assert!(out.provisionals.contains(&180));
    assert_eq!(out.bye_status, Some(200));
    // The ACK reaches the UAS as an event shortly after.
    for _ in 0..100 {
        if stats.lock().unwrap().acks == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = stats.lock().unwrap().clone();
    assert_eq!((s.invites, s.answered, s.acks, s.byes), (1, 1, 1, 1));
}

#[tokio::test]
async fn udp_call_invite_180_200_ack_bye() {
    call_answered(TransportKind::Udp).await;
}

#[tokio::test]
async fn tcp_call_invite_180_200_ack_bye() {
    call_answered(TransportKind::Tcp).await;
}

#[tokio::test]
async fn busy_486_is_final_and_acked_in_transaction() {
    let (server, stats) = uas().await;
    let (client, _ev) = endpoint(|_| {}).await;
    let target = Target::new(TransportKind::Udp, addr_of(&server, TransportKind::Udp));
    let out = uac_call(&client, target, "sip:busy@127.0.0.1", Duration::ZERO, 2).await;
    assert_eq!(out.final_status, 486);
    assert_eq!(stats.lock().unwrap().busy, 1);
}

#[tokio::test]
async fn cancel_after_180_gives_487_and_event() {
    let (server, stats) = uas().await;
    let (client, _ev) = endpoint(|_| {}).await;
    let kind = TransportKind::Udp;
    let target = Target::new(kind, addr_of(&server, kind));
    let local = client.local_addr(kind, target.addr).unwrap();
    let mut h = client
        .send_request(invite(local, kind, "sip:ring@127.0.0.1", 3), target)
        .await
        .unwrap();
    // Cancel at once: the endpoint holds the CANCEL until a provisional arrives (§9.1).
    client.cancel(h.id).await.unwrap();
    let resp = tokio::time::timeout(WAIT, h.final_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status.as_u16(), 487);
    for _ in 0..100 {
        if stats.lock().unwrap().cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.lock().unwrap().cancelled, 1);
}

fn options(local: std::net::SocketAddr, to_tag: Option<&str>) -> Request {
    let uri = Uri::parse("sip:peer@127.0.0.1").unwrap();
    let mut req = Request::new(Method::Options, uri.clone());
    req.headers
        .push(HeaderName::FROM, format!("<sip:ping@{local}>;tag=abc"));
    let to = NameAddr::new(uri).to_string();
    req.headers.push(
        HeaderName::TO,
        match to_tag {
            Some(t) => format!("{to};tag={t}"),
            None => to,
        },
    );
    req.headers.push(HeaderName::CALL_ID, "opt-1");
    req.headers.push(HeaderName::CSEQ, "1 OPTIONS");
    req
}

#[tokio::test]
async fn options_answered_with_capabilities_and_unknown_dialog_gets_481() {
    let (server, _stats) = uas().await;
    let (client, _ev) = endpoint(|_| {}).await;
    for kind in [TransportKind::Udp, TransportKind::Tcp] {
        let target = Target::new(kind, addr_of(&server, kind));
        let local = client.local_addr(kind, target.addr).unwrap();
        let mut h = client
            .send_request(options(local, None), target.clone())
            .await
            .unwrap();
        let r = tokio::time::timeout(WAIT, h.final_response())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status.as_u16(), 200);
        let allow = r.headers.allow();
        assert!(allow.contains(&Method::Invite) && allow.contains(&Method::Options));
        assert!(r.headers.get("Accept").is_some());
        assert!(r.headers.get("Supported").is_some());
        // In-dialog OPTIONS for a dialog that does not exist.
        let mut h = client
            .send_request(options(local, Some("nope")), target)
            .await
            .unwrap();
        let r = tokio::time::timeout(WAIT, h.final_response())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status.as_u16(), 481);
    }
    let st = server.stats();
    assert_eq!(st.no_dialog_481, 2);
    assert_eq!(
        st.requests, 0,
        "auto-answered OPTIONS and 481s never reach the owner"
    );
}

#[tokio::test]
async fn malformed_request_gets_400_and_is_counted() {
    let (server, _stats) = uas().await;
    let addr = addr_of(&server, TransportKind::Udp);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bad = "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKbad\r\n\
               From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: bad-1\r\nCSeq: notanumber INVITE\r\n\
               Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    sock.send_to(bad.as_bytes(), addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("a 400 comes back")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 400"), "got {text}");
    // Garbage that cannot be answered is dropped and counted.
    sock.send_to(b"\x00\x01garbage\r\n\r\n", addr)
        .await
        .unwrap();
    for _ in 0..100 {
        if server.transport().stats().parse_errors == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.transport().stats().parse_errors, 2);
}

#[tokio::test]
async fn udp_invite_retransmissions_are_absorbed_by_one_transaction() {
    // A raw client sends the same INVITE three times: the UAS sees one INVITE event and
    // every copy gets the latest response again.
    let (server, stats) = uas().await;
    let addr = addr_of(&server, TransportKind::Udp);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let inv = format!(
        "INVITE sip:ring@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKretx;rport\r\n\
         From: <sip:x@{me}>;tag=1\r\nTo: <sip:ring@127.0.0.1>\r\nCall-ID: retx-1\r\nCSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\nContact: <sip:x@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        sock.send_to(inv.as_bytes(), addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(text.lines().next().unwrap_or_default().to_owned());
        assert!(
            text.contains(&format!("rport={}", me.port())),
            "rport stamped: {text}"
        );
        assert!(text.contains("received=127.0.0.1"));
    }
    assert_eq!(stats.lock().unwrap().invites, 1);
    assert!(seen.len() >= 3, "each retransmission answered: {seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("SIP/2.0 180")));
}

#[tokio::test]
async fn shutdown_refuses_new_requests_and_finishes() {
    let (server, _stats) = uas().await;
    let (client, mut ev) = endpoint(|_| {}).await;
    tokio::time::timeout(WAIT, client.shutdown())
        .await
        .expect("shutdown with nothing in flight is quick");
    let target = Target::new(TransportKind::Udp, addr_of(&server, TransportKind::Udp));
    let local = "127.0.0.1:1".parse().unwrap();
    assert!(
        client
            .send_request(options(local, None), target)
            .await
            .is_err()
    );
    // The event stream ends.
    assert!(
        tokio::time::timeout(WAIT, ev.recv())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn options_pinger_reports_peer_up_then_down() {
    let (server, _stats) = uas().await;
    let peer = Target::new(TransportKind::Udp, addr_of(&server, TransportKind::Udp));
    let (_client, mut ev) = endpoint(|c| {
        c.timers.t1 = Duration::from_millis(50);
        c.ping = vec![whatsip_sip::endpoint::PingTarget {
            target: peer.clone(),
            uri: Uri::parse("sip:pbx@127.0.0.1").unwrap(),
            interval: Duration::from_millis(300),
        }];
    })
    .await;
    let first = tokio::time::timeout(WAIT, ev.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, EndpointEvent::PeerStatus { up: true, .. }),
        "{first:?}"
    );
    server.shutdown().await;
    let second = tokio::time::timeout(WAIT, ev.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(second, EndpointEvent::PeerStatus { up: false, .. }),
        "{second:?}"
    );
}

#[tokio::test]
async fn request_timeout_reports_timeout() {
    // Nobody listens: Timer F fires (fast T1) and the handle says Timeout.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let (client, _ev) = endpoint(|c| c.timers.t1 = Duration::from_millis(20)).await;
    let local = client.local_addr(TransportKind::Udp, dead_addr).unwrap();
    let mut h = client
        .send_request(
            options(local, None),
            Target::new(TransportKind::Udp, dead_addr),
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, h.recv()).await.unwrap();
    assert!(matches!(got, Some(ClientEvent::Timeout)), "{got:?}");
    // And the peer saw the retransmissions (E doubling from 20 ms up to T2).
    dead.set_nonblocking(true).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 4096];
    while dead.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    assert!(n >= 5, "retransmitted over UDP, saw {n}");
}

#[tokio::test]
async fn digest_challenge_then_authenticated_call() {
    use whatsip_sip::endpoint::{ServerAuth, TrunkCredentials};
    let (server_ep, events) = endpoint(|c| {
        c.server_auth = Some(ServerAuth::new("whatsip", "trunk", "s3cret"));
    })
    .await;
    let stats = Arc::new(Mutex::new(UasStats::default()));
    tokio::spawn(run_uas(server_ep.clone(), events, stats.clone()));
    let target = Target::new(TransportKind::Udp, addr_of(&server_ep, TransportKind::Udp));
    // Without credentials the 401 is the final answer.
    let (anon, _e1) = endpoint(|_| {}).await;
    let out = uac_call(
        &anon,
        target.clone(),
        "sip:answer@127.0.0.1",
        Duration::ZERO,
        10,
    )
    .await;
    assert_eq!(out.final_status, 401);
    // Wrong password: one retry, then the second 401 is final.
    let (wrong, _e2) = endpoint(|c| {
        c.credentials = Some(TrunkCredentials {
            username: "trunk".into(),
            password: "guess".into(),
            realm: None,
        });
    })
    .await;
    let out = uac_call(
        &wrong,
        target.clone(),
        "sip:answer@127.0.0.1",
        Duration::ZERO,
        11,
    )
    .await;
    assert_eq!(out.final_status, 401);
    // Right password: the call goes through, BYE (in dialog) is not challenged.
    let (good, _e3) = endpoint(|c| {
        c.credentials = Some(TrunkCredentials {
            username: "trunk".into(),
            password: "s3cret".into(),
            realm: Some("whatsip".into()),
        });
    })
    .await;
    let out = uac_call(&good, target, "sip:answer@127.0.0.1", Duration::ZERO, 12).await;
    assert_eq!(out.final_status, 200);
    assert_eq!(out.bye_status, Some(200));
    let s = stats.lock().unwrap().clone();
    assert_eq!(
        (s.invites, s.answered, s.byes),
        (1, 1, 1),
        "only the authenticated INVITE reached the UAS: {s:?}"
    );
    // Challenged: the anonymous INVITE, both of the wrong caller's, the good caller's first.
    let st = server_ep.stats();
    assert_eq!(st.challenges, 4, "{st:?}");
    assert_eq!(
        (wrong.stats().auth_retries, good.stats().auth_retries),
        (1, 1)
    );
}

#[tokio::test]
async fn tls_call_invite_180_200_ack_bye() {
    use whatsip_sip::transport::{ListenAddr, TlsSettings};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let tls = TlsSettings::from_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        Some(cert_pem.as_bytes()),
    )
    .unwrap();
    let with_tls = |c: &mut whatsip_sip::endpoint::EndpointConfig| {
        c.transport.listen.push(ListenAddr {
            kind: TransportKind::Tls,
            addr: "127.0.0.1:0".parse().unwrap(),
        });
        c.transport.tls = Some(tls.clone());
    };
    let (server, events) = endpoint(with_tls).await;
    let stats = Arc::new(Mutex::new(UasStats::default()));
    tokio::spawn(run_uas(server.clone(), events, stats.clone()));
    let (client, _ev) = endpoint(with_tls).await;
    let target = Target {
        server_name: Some("localhost".to_owned()),
        ..Target::new(TransportKind::Tls, addr_of(&server, TransportKind::Tls))
    };
    let out = uac_call(&client, target, "sip:answer@127.0.0.1", Duration::ZERO, 20).await;
    assert_eq!(out.final_status, 200);
    assert_eq!(out.bye_status, Some(200));
    assert_eq!(stats.lock().unwrap().invites, 1);
}

#[tokio::test]
async fn ipv6_udp_and_tcp_calls() {
    use whatsip_sip::transport::ListenAddr;
    let v6 = |c: &mut whatsip_sip::endpoint::EndpointConfig| {
        c.transport.listen = vec![
            ListenAddr {
                kind: TransportKind::Udp,
                addr: "[::1]:0".parse().unwrap(),
            },
            ListenAddr {
                kind: TransportKind::Tcp,
                addr: "[::1]:0".parse().unwrap(),
            },
        ];
    };
    let (server, events) = endpoint(v6).await;
    let stats = Arc::new(Mutex::new(UasStats::default()));
    tokio::spawn(run_uas(server.clone(), events, stats.clone()));
    let (client, _ev) = endpoint(v6).await;
    for (i, kind) in [TransportKind::Udp, TransportKind::Tcp]
        .into_iter()
        .enumerate()
    {
        let target = Target::new(kind, addr_of(&server, kind));
        let out = uac_call(
            &client,
            target,
            "sip:answer@[::1]",
            Duration::ZERO,
            30 + i as u64,
        )
        .await;
        assert_eq!(out.final_status, 200, "{kind}");
        assert_eq!(out.bye_status, Some(200), "{kind}");
    }
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_invite_bounded_and_answers_503() {
    // The UAS rings forever ("ring"): the INVITE stays in flight, so shutdown waits for
    // the grace period; meanwhile new requests get 503.
    let (server, events) = endpoint(|c| c.shutdown_grace = Duration::from_millis(1500)).await;
    let stats = Arc::new(Mutex::new(UasStats::default()));
    tokio::spawn(run_uas(server.clone(), events, stats.clone()));
    let (client, _ev) = endpoint(|_| {}).await;
    let target = Target::new(TransportKind::Udp, addr_of(&server, TransportKind::Udp));
    let local = client.local_addr(TransportKind::Udp, target.addr).unwrap();
    let mut h = client
        .send_request(
            invite(local, TransportKind::Udp, "sip:ring@127.0.0.1", 40),
            target.clone(),
        )
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, h.recv()).await.unwrap() {
            Some(ClientEvent::Provisional(r)) if r.status.as_u16() == 180 => break,
            Some(_) => {}
            None => panic!("no 180"),
        }
    }
    let stopper = server.clone();
    let shutdown = tokio::spawn(async move { stopper.shutdown().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shutdown.is_finished(), "an INVITE is still in flight");
    let mut o = client
        .send_request(options(local, None), target)
        .await
        .unwrap();
    let r = tokio::time::timeout(WAIT, o.final_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status.as_u16(), 503);
    assert!(r.headers.get("Retry-After").is_some());
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown bounded by the grace period")
        .unwrap();
}

#[tokio::test]
async fn core_dialog_drives_ack_and_bye_through_the_endpoint() {
    use whatsip_sip::{Dialog, TimerConfig};
    let (server, stats) = uas().await;
    let (client, _ev) = endpoint(|_| {}).await;
    let kind = TransportKind::Tcp;
    let target = Target::new(kind, addr_of(&server, kind));
    let local = client.local_addr(kind, target.addr).unwrap();
    let mut h = client
        .send_request(
            invite(local, kind, "sip:answer@127.0.0.1", 50),
            target.clone(),
        )
        .await
        .unwrap();
    let ok = tokio::time::timeout(WAIT, h.final_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.status.as_u16(), 200);
    let mut dialog = Dialog::uac(
        &h.request,
        &ok,
        format!("<sip:whatsip@{local};transport=tcp>"),
        true,
        &TimerConfig::default(),
    )
    .unwrap();
    // The dialog builds ACK and BYE with the endpoint's Via; the endpoint keeps it.
    let seq = ok.cseq().unwrap().seq;
    let ack = dialog.create_ack(seq, &client.via_for(&target).unwrap());
    let sent_ack = client.send_ack(ack, target.clone()).await.unwrap();
    assert_eq!(sent_ack.headers.get_all("Via").count(), 1);
    let bye = dialog.create_request(Method::Bye, &client.via_for(&target).unwrap());
    let mut hb = client.send_request(bye, target).await.unwrap();
    assert_eq!(hb.request.headers.get_all("Via").count(), 1);
    let r = tokio::time::timeout(WAIT, hb.final_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    for _ in 0..100 {
        if stats.lock().unwrap().acks == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = stats.lock().unwrap().clone();
    assert_eq!((s.acks, s.byes), (1, 1), "{s:?}");
}

/// Under tokio's paused clock the whole schedule runs in virtual time: no sleeps.
#[tokio::test(start_paused = true)]
async fn udp_retransmission_schedules_timer_e_f_and_a_b_on_virtual_clock() {
    use whatsip_sip::endpoint::SystemClock;
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    dead.set_nonblocking(true).unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let (client, _ev) = endpoint(|_| {}).await; // T1 500 ms, T2 4 s
    let target = Target::new(TransportKind::Udp, dead_addr);
    let local = client.local_addr(TransportKind::Udp, dead_addr).unwrap();
    let count = |dead: &std::net::UdpSocket| {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while dead.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    };

    // Non-INVITE: E at 0.5, 1.5, 3.5, then every T2 (7.5 … 31.5); F at 64·T1 = 32 s.
    let t0 = SystemClock.now();
    let mut h = client
        .send_request(options(local, None), target.clone())
        .await
        .unwrap();
    assert!(matches!(h.recv().await, Some(ClientEvent::Timeout)));
    let elapsed = SystemClock.now() - t0;
    assert!(
        elapsed >= Duration::from_secs(32) && elapsed < Duration::from_millis(32_100),
        "timer F at 32 s, got {elapsed:?}"
    );
    // Let the sockets drain in real time.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(&dead), 11, "sends at 0, .5, 1.5, 3.5, 7.5 … 31.5");

    // INVITE: A doubles without cap (0, .5, 1.5, 3.5, 7.5, 15.5, 31.5); B at 32 s.
    let t0 = SystemClock.now();
    let mut h = client
        .send_request(
            invite(local, TransportKind::Udp, "sip:x@127.0.0.1", 60),
            target,
        )
        .await
        .unwrap();
    assert!(matches!(h.recv().await, Some(ClientEvent::Timeout)));
    let elapsed = SystemClock.now() - t0;
    assert!(
        elapsed >= Duration::from_secs(32) && elapsed < Duration::from_millis(32_100),
        "timer B at 32 s, got {elapsed:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(&dead), 7);
}

/// Reads datagrams until `quiet` passes with nothing new; returns their first lines.
async fn drain_lines(sock: &tokio::net::UdpSocket, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(Ok((n, _))) = tokio::time::timeout(quiet, sock.recv_from(&mut buf)).await {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        out.push(text.lines().next().unwrap_or_default().to_owned());
    }
    out
}

#[tokio::test]
async fn cancel_after_final_gets_200_without_487_and_stray_ack_is_dropped() {
    let (server, stats) = uas().await;
    let addr = addr_of(&server, TransportKind::Udp);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let common = format!(
        "From: <sip:x@{me}>;tag=race\r\nTo: <sip:answer@127.0.0.1>\r\nCall-ID: race-1\r\nMax-Forwards: 70\r\n"
    );
    let invite = format!(
        "INVITE sip:answer@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKrace\r\n{common}\
         CSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(invite.as_bytes(), addr).await.unwrap();
    let lines = drain_lines(&sock, Duration::from_millis(400)).await;
    assert!(
        lines.iter().any(|l| l.starts_with("SIP/2.0 200")),
        "{lines:?}"
    );
    // CANCEL crossing the 200 (RFC 3261 §9.2): 200 for the CANCEL, the INVITE keeps its 200.
    let cancel = format!(
        "CANCEL sip:answer@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKrace\r\n{common}\
         CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(cancel.as_bytes(), addr).await.unwrap();
    let lines = drain_lines(&sock, Duration::from_millis(300)).await;
    assert!(
        lines.iter().any(|l| l.starts_with("SIP/2.0 200")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("SIP/2.0 487")),
        "{lines:?}"
    );
    // A stray ACK (unknown dialog, unknown branch) is dropped silently.
    let stray = format!(
        "ACK sip:answer@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKstray\r\n\
         From: <sip:x@{me}>;tag=zz\r\nTo: <sip:answer@127.0.0.1>;tag=nope\r\nCall-ID: stray-1\r\n\
         Max-Forwards: 70\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(stray.as_bytes(), addr).await.unwrap();
    // A response matching no transaction is dropped too.
    let unmatched = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKnobody\r\nFrom: <sip:a@b>;tag=1\r\n\
         To: <sip:c@d>;tag=2\r\nCall-ID: unmatched-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(unmatched.as_bytes(), addr).await.unwrap();
    // The 200 to the INVITE is still resent until its ACK, nothing else comes back.
    let lines = drain_lines(&sock, Duration::from_millis(700)).await;
    assert!(
        lines.iter().all(|l| l.starts_with("SIP/2.0 200")),
        "{lines:?}"
    );
    let s = stats.lock().unwrap().clone();
    assert_eq!((s.invites, s.cancelled, s.acks), (1, 0, 0), "{s:?}");
}

#[tokio::test]
async fn unsupported_method_gets_405_with_allow() {
    let (server, _stats) = uas().await;
    let (client, _ev) = endpoint(|_| {}).await;
    let target = Target::new(TransportKind::Udp, addr_of(&server, TransportKind::Udp));
    let local = client.local_addr(TransportKind::Udp, target.addr).unwrap();
    let mut req = options(local, None);
    req.method = Method::Register;
    req.headers.set(HeaderName::CSEQ, "1 REGISTER");
    let mut h = client.send_request(req, target).await.unwrap();
    let r = tokio::time::timeout(WAIT, h.final_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status.as_u16(), 405);
    assert!(r.headers.allow().contains(&Method::Invite));
    assert!(!r.headers.allow().contains(&Method::Register));
}

#[tokio::test]
async fn update_trunk_swaps_credentials_and_ping_target() {
    use whatsip_sip::endpoint::{ServerAuth, TrunkCredentials, TrunkUpdate};
    let (server_ep, events) = endpoint(|c| {
        c.server_auth = Some(ServerAuth::new("whatsip", "trunk", "old-pass"));
    })
    .await;
    let stats = Arc::new(Mutex::new(UasStats::default()));
    tokio::spawn(run_uas(server_ep.clone(), events, stats.clone()));
    let target = Target::new(TransportKind::Udp, addr_of(&server_ep, TransportKind::Udp));
    let (client, mut client_ev) = endpoint(|c| {
        c.credentials = Some(TrunkCredentials {
            username: "trunk".into(),
            password: "old-pass".into(),
            realm: None,
        });
    })
    .await;
    let out = uac_call(
        &client,
        target.clone(),
        "sip:a@127.0.0.1",
        Duration::ZERO,
        20,
    )
    .await;
    assert_eq!(
        out.final_status, 200,
        "old credentials accepted before the update"
    );

    // The server now wants a new password: the client's old one is refused.
    server_ep
        .update_trunk(TrunkUpdate {
            server_auth: Some(ServerAuth::new("whatsip", "trunk", "new-pass")),
            ..TrunkUpdate::default()
        })
        .await
        .unwrap();
    let out = uac_call(
        &client,
        target.clone(),
        "sip:a@127.0.0.1",
        Duration::ZERO,
        21,
    )
    .await;
    assert_eq!(
        out.final_status, 401,
        "old password refused after the update"
    );

    // The client takes the new password and starts pinging the server.
    client
        .update_trunk(TrunkUpdate {
            ping: vec![whatsip_sip::endpoint::PingTarget {
                target: target.clone(),
                uri: Uri::parse("sip:pbx@127.0.0.1").unwrap(),
                interval: Duration::from_secs(30),
            }],
            credentials: Some(TrunkCredentials {
                username: "trunk".into(),
                password: "new-pass".into(),
                realm: None,
            }),
            server_auth: None,
        })
        .await
        .unwrap();
    let out = uac_call(
        &client,
        target.clone(),
        "sip:a@127.0.0.1",
        Duration::ZERO,
        22,
    )
    .await;
    assert_eq!(out.final_status, 200, "new password accepted");
    let up = tokio::time::timeout(WAIT, async {
        loop {
            match client_ev.recv().await {
                Some(EndpointEvent::PeerStatus { target: t, up }) => break (t, up),
                Some(_) => continue,
                None => panic!("endpoint gone"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        up,
        (target, true),
        "the new ping target was pinged and answered"
    );
    let s = stats.lock().unwrap().clone();
    assert_eq!((s.invites, s.answered), (2, 2), "{s:?}");
}
