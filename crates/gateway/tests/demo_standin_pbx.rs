//! The demo's stand-in PBX against a SIP UAC built on whatsip-sip's endpoint, over loopback:
//! answer with an SDP answer, symmetric RTP echo, RFC 4733 digits, BYE both ways, CANCEL,
//! busy, refused offers, OPTIONS.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use whatsip_gateway::pbx_standin::{PbxEvent, StandinPbx, StandinPbxConfig};
use whatsip_media::{Codec, DtmfPayload, RtpPacket, RtpTs, SeqNo, Ssrc};
use whatsip_sip::endpoint::{ClientEvent, Endpoint, EndpointConfig, EndpointEvent, ack_for_2xx};
use whatsip_sip::transport::{ListenAddr, Target, TransportKind};
use whatsip_sip::{CallId, HeaderName, Method, NameAddr, Request, Response, StatusCode, Tag, Uri};

/// Generous bound for anything that takes well under a second on an idle machine.
const WAIT: Duration = Duration::from_secs(20);

async fn uac() -> (Endpoint, tokio::sync::mpsc::Receiver<EndpointEvent>) {
    let mut config = EndpointConfig::default();
    config.transport.listen = [TransportKind::Udp, TransportKind::Tcp]
        .into_iter()
        .map(|kind| ListenAddr {
            kind,
            addr: "127.0.0.1:0".parse().unwrap(),
        })
        .collect();
    config.shutdown_grace = Duration::from_secs(2);
    Endpoint::start(config).await.unwrap()
}

fn offer(rtp: SocketAddr) -> String {
    format!(
        "v=0\r\no=whatsip 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8 0 9 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
         a=ptime:20\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

fn invite(local: SocketAddr, uri: &str, call_id: &str, body: Option<String>) -> Request {
    let uri = Uri::parse(uri).unwrap();
    let mut req = Request::new(Method::Invite, uri.clone());
    let from = Uri::parse(&format!("sip:+4915112345678@{local}")).unwrap();
    req.headers.push(
        HeaderName::FROM,
        NameAddr::new(from).with_tag(&Tag::new("uac1")).to_string(),
    );
    req.headers
        .push(HeaderName::TO, NameAddr::new(uri).to_string());
    req.headers
        .push(HeaderName::CALL_ID, CallId::new(call_id).as_str());
    req.headers.push(HeaderName::CSEQ, "1 INVITE");
    req.headers
        .push(HeaderName::CONTACT, format!("<sip:whatsip@{local}>"));
    req.headers.push("X-WA-Customer-Number", "+4915112345678");
    if let Some(b) = body {
        req.set_body("application/sdp", b);
    }
    req
}

fn strip_via(req: &Request) -> Request {
    let mut r = req.clone();
    r.headers.remove("Via");
    r
}

/// Sends an INVITE and returns (provisional statuses, final response, INVITE as sent).
type CallOutcome = (
    Vec<u16>,
    Response,
    Request,
    whatsip_sip::endpoint::ClientTxnHandle,
);

async fn call(ep: &Endpoint, pbx: SocketAddr, req: Request) -> CallOutcome {
    call_over(ep, Target::new(TransportKind::Udp, pbx), req).await
}

async fn call_over(ep: &Endpoint, target: Target, req: Request) -> CallOutcome {
    let mut h = ep.send_request(req, target).await.unwrap();
    let sent = h.request.clone();
    let mut provisional = Vec::new();
    let fin = loop {
        match tokio::time::timeout(WAIT, h.recv())
            .await
            .expect("invite outcome")
        {
            Some(ClientEvent::Provisional(r)) => provisional.push(r.status.as_u16()),
            Some(ClientEvent::Final(r)) => break r,
            other => panic!("invite failed: {other:?}"),
        }
    };
    (provisional, fin, sent, h)
}

/// The `m=audio` port and first format of an SDP.
fn answer_port_and_pt(sdp: &str) -> (u16, u8) {
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .expect("m=audio");
    let mut f = m.split_whitespace().skip(1);
    let port = f.next().unwrap().parse().unwrap();
    let pt = f.nth(1).unwrap().parse().unwrap();
    (port, pt)
}

fn rtp(pt: u8, seq: u16, ts: u32, payload: Vec<u8>) -> Vec<u8> {
    RtpPacket {
        pt,
        seq: SeqNo(seq),
        ts: RtpTs(ts),
        ssrc: Ssrc(0x1234_5678),
        marker: false,
        payload: payload.into(),
    }
    .to_vec()
}

async fn bye(ep: &Endpoint, pbx: SocketAddr, invite: &Request, ok: &Response) -> u16 {
    let mut bye = ack_for_2xx(&strip_via(invite), ok);
    bye.method = Method::Bye;
    bye.headers.set(HeaderName::CSEQ, "2 BYE");
    let mut h = ep
        .send_request(bye, Target::new(TransportKind::Udp, pbx))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, h.final_response())
        .await
        .expect("bye outcome")
        .expect("bye answered")
        .status
        .as_u16()
}

#[tokio::test]
async fn standin_answers_pcmu_echoes_audio_and_decodes_rfc4733() {
    let pbx = StandinPbx::start(StandinPbxConfig::default())
        .await
        .unwrap();
    let pbx_addr = pbx.sip_addr(TransportKind::Udp).unwrap();
    let (ep, _events) = uac().await;
    let local = ep.local_addr(TransportKind::Udp, pbx_addr).unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media_addr = media.local_addr().unwrap();

    let req = invite(
        local,
        &format!("sip:echo@{pbx_addr}"),
        "standin-echo-1",
        Some(offer(media_addr)),
    );
    let (provisional, ok, sent, _h) = call(&ep, pbx_addr, req).await;
    assert!(provisional.contains(&180), "{provisional:?}");
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.to_tag().is_some());
    let answer = String::from_utf8(ok.body.to_vec()).unwrap();
    // PCMU preferred over the offer's first codec (PCMA), telephone-event kept.
    let (pbx_rtp_port, pt) = answer_port_and_pt(&answer);
    assert_eq!(pt, 0, "{answer}");
    assert!(answer.contains("telephone-event/8000"), "{answer}");
    let ack = ack_for_2xx(&strip_via(&sent), &ok);
    ep.send_ack(ack, Target::new(TransportKind::Udp, pbx_addr))
        .await
        .unwrap();

    // Audio comes back to where it was sent from, same payload, the PBX's own SSRC.
    let pbx_rtp: SocketAddr = format!("127.0.0.1:{pbx_rtp_port}").parse().unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..5u16 {
        let payload = vec![0x10 + i as u8; 160];
        media
            .send_to(
                &rtp(0, 100 + i, 160 * u32::from(i), payload.clone()),
                pbx_rtp,
            )
            .await
            .unwrap();
        let (n, from) = tokio::time::timeout(WAIT, media.recv_from(&mut buf))
            .await
            .expect("echo")
            .unwrap();
        assert_eq!(
            from, pbx_rtp,
            "symmetric: echo comes from the advertised port"
        );
        let echoed = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(echoed.payload.as_ref(), payload.as_slice());
        assert_eq!(echoed.ts, RtpTs(160 * u32::from(i)));
        assert_ne!(echoed.ssrc, Ssrc(0x1234_5678));
    }

    // Key 5: three updates and three end packets, one event timestamp.
    let ts = 2000;
    for (i, (end, dur)) in [
        (false, 160),
        (false, 320),
        (false, 480),
        (true, 640),
        (true, 640),
        (true, 640),
    ]
    .into_iter()
    .enumerate()
    {
        let p = DtmfPayload {
            event: 5,
            end,
            volume: 10,
            duration: dur,
        };
        media
            .send_to(
                &rtp(101, 200 + i as u16, ts, p.to_bytes().to_vec()),
                pbx_rtp,
            )
            .await
            .unwrap();
    }
    let end = pbx
        .wait_for(WAIT, |e| matches!(e, PbxEvent::DigitEnd { .. }))
        .await
        .expect("digit end recorded");
    assert!(matches!(
        end.event,
        PbxEvent::DigitEnd { digit: '5', duration, .. } if duration == Duration::from_millis(80)
    ));

    assert_eq!(bye(&ep, pbx_addr, &sent, &ok).await, 200);
    let ended = pbx
        .wait_for(WAIT, |e| matches!(e, PbxEvent::Ended { .. }))
        .await
        .expect("call ended");
    match ended.event {
        PbxEvent::Ended {
            rtp_received,
            rtp_echoed,
            digits,
            ..
        } => {
            assert_eq!(digits, "5");
            assert_eq!(rtp_echoed, 5);
            assert_eq!(rtp_received, 11);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pbx.calls_in_progress().await, 0);

    let records = pbx.stop().await;
    let kinds: Vec<&'static str> = records.iter().map(|r| kind(&r.event)).collect();
    // ACK and first RTP race each other; everything else is ordered.
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k} in {kinds:?}"))
    };
    assert!(pos("invite") < pos("ringing"));
    assert!(pos("ringing") < pos("answered"));
    assert!(pos("answered") < pos("acked"));
    assert!(pos("answered") < pos("media"));
    assert!(pos("media") < pos("digit"));
    assert!(pos("digit") < pos("bye_received"));
    assert!(pos("bye_received") < pos("ended"));
    assert_eq!(kinds.iter().filter(|k| **k == "digit").count(), 1);
    match &records[0].event {
        PbxEvent::Invite { request, .. } => {
            assert_eq!(
                request.headers.get("X-WA-Customer-Number"),
                Some("+4915112345678")
            );
        }
        other => panic!("{other:?}"),
    }
    match records
        .iter()
        .find(|r| kind(&r.event) == "answered")
        .map(|r| &r.event)
    {
        Some(PbxEvent::Answered {
            codec, pt, dtmf_pt, ..
        }) => {
            assert_eq!((*codec, *pt, *dtmf_pt), (Codec::Pcmu, 0, Some(101)));
        }
        other => panic!("{other:?}"),
    }
    ep.shutdown().await;
}

async fn hangs_up_with_bye(kind: TransportKind) {
    let pbx = StandinPbx::start(StandinPbxConfig {
        listen: [TransportKind::Udp, TransportKind::Tcp]
            .into_iter()
            .map(|kind| ListenAddr {
                kind,
                addr: "127.0.0.1:0".parse().unwrap(),
            })
            .collect(),
        hang_up_after: Some(Duration::from_millis(300)),
        ring_time: Duration::from_millis(10),
        ..StandinPbxConfig::default()
    })
    .await
    .unwrap();
    let pbx_addr = pbx.sip_addr(kind).unwrap();
    let (ep, mut events) = uac().await;
    let local = ep.local_addr(kind, pbx_addr).unwrap();
    let mut req = invite(
        local,
        &format!("sip:echo@{pbx_addr}"),
        "standin-bye-1",
        Some(offer("127.0.0.1:40100".parse().unwrap())),
    );
    if kind == TransportKind::Tcp {
        req.uri = Uri::parse(&format!("sip:echo@{pbx_addr};transport=tcp")).unwrap();
        req.headers.set(
            HeaderName::CONTACT,
            format!("<sip:whatsip@{local};transport=tcp>"),
        );
    }
    let (_, ok, sent, _h) = call_over(&ep, Target::new(kind, pbx_addr), req).await;
    assert_eq!(ok.status, StatusCode::OK);
    ep.send_ack(
        ack_for_2xx(&strip_via(&sent), &ok),
        Target::new(kind, pbx_addr),
    )
    .await
    .unwrap();
    let bye = loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("bye from pbx")
        {
            Some(EndpointEvent::Request(inc)) if inc.request.method == Method::Bye => break inc,
            Some(_) => {}
            None => panic!("endpoint stopped"),
        }
    };
    assert_eq!(bye.request.call_id().unwrap().as_str(), "standin-bye-1");
    assert_eq!(bye.kind, kind);
    // In the dialog: From carries the PBX's To tag, To our From tag.
    assert_eq!(bye.request.from_tag(), ok.to_tag());
    assert_eq!(bye.request.to_tag().unwrap().as_str(), "uac1");
    ep.respond(bye.id, bye.request.response(StatusCode::OK, None))
        .await
        .unwrap();
    let sent_bye = pbx
        .wait_for(WAIT, |e| matches!(e, PbxEvent::ByeSent { .. }))
        .await
        .expect("bye outcome recorded");
    assert!(matches!(
        sent_bye.event,
        PbxEvent::ByeSent {
            status: Some(200),
            ..
        }
    ));
    assert_eq!(pbx.calls_in_progress().await, 0);
    pbx.stop().await;
    ep.shutdown().await;
}

#[tokio::test]
async fn standin_hangs_up_with_bye_after_configured_time_udp() {
    hangs_up_with_bye(TransportKind::Udp).await;
}

#[tokio::test]
async fn standin_hangs_up_with_bye_after_configured_time_tcp() {
    hangs_up_with_bye(TransportKind::Tcp).await;
}

#[tokio::test]
async fn standin_busy_cancel_refused_offer_and_options() {
    let pbx = StandinPbx::start(StandinPbxConfig::default())
        .await
        .unwrap();
    let pbx_addr = pbx.sip_addr(TransportKind::Udp).unwrap();
    let (ep, _events) = uac().await;
    let local = ep.local_addr(TransportKind::Udp, pbx_addr).unwrap();
    let sdp = Some(offer("127.0.0.1:40200".parse().unwrap()));

    // busy → 486
    let req = invite(
        local,
        &format!("sip:busy@{pbx_addr}"),
        "standin-busy",
        sdp.clone(),
    );
    let (_, fin, _, _h) = call(&ep, pbx_addr, req).await;
    assert_eq!(fin.status.as_u16(), 486);

    // no SDP (late offer) → 488; an offer without a codec we know → 488
    let req = invite(
        local,
        &format!("sip:echo@{pbx_addr}"),
        "standin-nosdp",
        None,
    );
    let (_, fin, _, _h) = call(&ep, pbx_addr, req).await;
    assert_eq!(fin.status.as_u16(), 488);
    let gsm = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40300 RTP/AVP 3\r\na=rtpmap:3 GSM/8000\r\n";
    let req = invite(
        local,
        &format!("sip:echo@{pbx_addr}"),
        "standin-gsm",
        Some(gsm.into()),
    );
    let (_, fin, _, _h) = call(&ep, pbx_addr, req).await;
    assert_eq!(fin.status.as_u16(), 488);

    // noanswer: 180, then our CANCEL → 487 and the PBX forgets the call
    let req = invite(
        local,
        &format!("sip:noanswer@{pbx_addr}"),
        "standin-cancel",
        sdp,
    );
    let mut h = ep
        .send_request(req, Target::new(TransportKind::Udp, pbx_addr))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, h.recv()).await.expect("ringing") {
            Some(ClientEvent::Provisional(r)) if r.status.as_u16() == 180 => break,
            Some(ClientEvent::Provisional(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    ep.cancel(h.id).await.unwrap();
    let fin = tokio::time::timeout(WAIT, h.final_response())
        .await
        .expect("final")
        .unwrap();
    assert_eq!(fin.status.as_u16(), 487);
    pbx.wait_for(WAIT, |e| matches!(e, PbxEvent::Cancelled { .. }))
        .await
        .expect("cancel recorded");
    assert_eq!(pbx.calls_in_progress().await, 0);

    // OPTIONS → 200 with Allow
    let mut opt = Request::new(
        Method::Options,
        Uri::parse(&format!("sip:{pbx_addr}")).unwrap(),
    );
    opt.headers
        .push(HeaderName::FROM, format!("<sip:whatsip@{local}>;tag=o1"));
    opt.headers
        .push(HeaderName::TO, format!("<sip:{pbx_addr}>"));
    opt.headers.push(HeaderName::CALL_ID, "standin-options");
    opt.headers.push(HeaderName::CSEQ, "1 OPTIONS");
    let mut h = ep
        .send_request(opt, Target::new(TransportKind::Udp, pbx_addr))
        .await
        .unwrap();
    let r = tokio::time::timeout(WAIT, h.final_response())
        .await
        .expect("options")
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.headers.get("Allow").unwrap().contains("INVITE"));

    let records = pbx.stop().await;
    let refused: Vec<u16> = records
        .iter()
        .filter_map(|r| match &r.event {
            PbxEvent::Refused { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![486, 488, 488]);
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, PbxEvent::Options { .. }))
    );
    ep.shutdown().await;
}

fn kind(e: &PbxEvent) -> &'static str {
    match e {
        PbxEvent::Invite { .. } => "invite",
        PbxEvent::Ringing { .. } => "ringing",
        PbxEvent::Answered { .. } => "answered",
        PbxEvent::Refused { .. } => "refused",
        PbxEvent::Acked { .. } => "acked",
        PbxEvent::MediaStarted { .. } => "media",
        PbxEvent::Digit { .. } => "digit",
        PbxEvent::DigitEnd { .. } => "digit_end",
        PbxEvent::Cancelled { .. } => "cancelled",
        PbxEvent::ByeReceived { .. } => "bye_received",
        PbxEvent::ByeSent { .. } => "bye_sent",
        PbxEvent::InDialog { .. } => "in_dialog",
        PbxEvent::Options { .. } => "options",
        PbxEvent::Ended { .. } => "ended",
        _ => "other",
    }
}
