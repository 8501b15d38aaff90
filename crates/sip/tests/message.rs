//! Message layer tests: the cases that made us write our own parser, builders, limits,
//! the 400 answer and stream framing.

use whatsip_sip::{
    Contacts, Host, Method, ParseError, ParseLimits, Request, SipMessage, StatusCode, StreamFrame,
    Tag, Transport, Uri, error_response, stream_frame,
};

fn parse(s: &str) -> Result<SipMessage, ParseError> {
    SipMessage::parse(s.as_bytes(), &ParseLimits::default())
}

fn req(s: &str) -> Request {
    match parse(s).expect("valid message") {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("expected a request"),
    }
}

const COMPACT: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcompact1;rport\r\n\
f: <sip:alice@example.com>;tag=a1\r\n\
t: <sip:bob@example.com>\r\n\
i: compact-call@192.0.2.1\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:alice@192.0.2.1:5060>\r\n\
c: application/sdp\r\n\
k: timer\r\n\
x: 1800;refresher=uac\r\n\
l: 4\r\n\
\r\n\
v=0\n";

#[test]
fn compact_header_forms_are_normalised_on_lookup() {
    let r = req(COMPACT);
    assert_eq!(r.headers.get("Via"), r.headers.get("v"));
    assert_eq!(r.call_id().unwrap().as_str(), "compact-call@192.0.2.1");
    assert_eq!(r.from_tag().unwrap(), Tag::new("a1"));
    assert!(r.headers.content_type().unwrap().is("application", "sdp"));
    assert_eq!(r.headers.content_length(), Some(4));
    assert_eq!(&r.body[..], b"v=0\n");
    assert_eq!(r.headers.session_expires().unwrap().delta_secs, 1800);
    assert!(r.headers.has_option_tag("Supported", "timer"));
    let via = r.top_via().unwrap();
    assert_eq!(via.transport, Transport::Udp);
    assert_eq!(via.rport(), Some(None));
    assert_eq!(via.port, Some(5060));
}

const IPV6: &str = "OPTIONS sip:[2001:db8::10]:5070;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bKv6;received=2001:db8::99\r\n\
From: <sip:alice@[2001:db8::9]>;tag=x\r\n\
To: <sip:[2001:db8::10]>\r\n\
Call-ID: v6@[2001:db8::9]\r\n\
CSeq: 7 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn ipv6_hosts_in_uri_and_via() {
    let r = req(IPV6);
    let u = r.uri.as_sip().unwrap();
    assert_eq!(u.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
    assert_eq!(u.port, Some(5070));
    assert_eq!(u.transport().as_deref(), Some("tcp"));
    let via = r.top_via().unwrap();
    assert_eq!(via.host, Host::Ipv6("2001:db8::9".parse().unwrap()));
    assert_eq!(via.received(), Some("2001:db8::99".parse().unwrap()));
    assert_eq!(r.uri.to_string(), "sip:[2001:db8::10]:5070;transport=tcp");
}

const TEL: &str = "INVITE tel:+15551234567;phone-context=example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pbx.example.com;branch=z9hG4bKtel\r\n\
From: <tel:+15550000000>;tag=1\r\n\
To: tel:+15551234567\r\n\
Call-ID: tel-1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn tel_uris_parse() {
    let r = req(TEL);
    let Uri::Tel(t) = &r.uri else {
        panic!("not tel")
    };
    assert_eq!(t.number, "+15551234567");
    assert!(t.is_global());
    assert_eq!(t.params.value("phone-context"), Some("example.com"));
    assert_eq!(r.to().unwrap().uri.to_string(), "tel:+15551234567");
}

const INSTANCE: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.5;branch=z9hG4bKreg\r\n\
From: <sip:alice@example.com>;tag=r\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: reg-1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.0.2.5;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1;expires=600\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn quoted_sip_instance_in_contact() {
    let r = req(INSTANCE);
    let Some(Contacts::Addresses(c)) = r.headers.contacts() else {
        panic!("no contact")
    };
    assert_eq!(
        c[0].sip_instance().as_deref(),
        Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>")
    );
    assert_eq!(c[0].expires(), Some(600));
}

const FOLDED: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via : SIP/2.0/UDP 192.0.2.1\r\n  ;branch=z9hG4bKfold\r\n\
From: <sip:alice@example.com>\r\n\t;tag=f\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: fold-1\r\n\
CSeq: 1\r\n OPTIONS\r\n\
Subject: first line\r\n second line\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn folded_headers_and_space_before_colon() {
    let r = req(FOLDED);
    assert_eq!(r.branch().unwrap().as_str(), "z9hG4bKfold");
    assert_eq!(r.from_tag().unwrap().as_str(), "f");
    assert_eq!(r.cseq().unwrap().seq, 1);
    assert_eq!(r.headers.get("subject"), Some("first line second line"));
}

#[test]
fn print_then_parse_round_trip_keeps_headers_and_fixes_content_length() {
    let mut r = req(COMPACT);
    r.body = bytes::Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
    let printed = r.to_bytes();
    let again = req(std::str::from_utf8(&printed).unwrap());
    assert_eq!(again.headers.content_length(), Some(r.body.len()));
    assert_eq!(again.body, r.body);
    assert_eq!(again.headers.len(), r.headers.len());
    assert_eq!(again.method, Method::Invite);
}

#[test]
fn record_route_is_kept_exactly_as_received() {
    let raw = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKrr\r\n\
Record-Route: <sip:p2.example.com;lr;ftag=ab>,<sip:p1.example.com;lr>\r\n\
Record-Route:   <sip:P0.EXAMPLE.com;lr>  \r\n\
From: <sip:a@example.com>;tag=1\r\n\
To: <sip:b@example.com>;tag=2\r\n\
Call-ID: rr\r\n\
CSeq: 1 INVITE\r\n\r\n";
    let SipMessage::Response(r) = parse(raw).unwrap() else {
        panic!()
    };
    assert_eq!(
        r.headers.raw_list("Record-Route"),
        vec![
            "<sip:p2.example.com;lr;ftag=ab>",
            "<sip:p1.example.com;lr>",
            "<sip:P0.EXAMPLE.com;lr>"
        ]
    );
    assert_eq!(r.headers.record_routes().unwrap().len(), 3);
}

#[test]
fn response_from_request_copies_mandatory_headers_and_adds_to_tag() {
    let r = req(COMPACT);
    let resp = r.response(StatusCode::BUSY_HERE, Some(&Tag::new("uas1")));
    assert_eq!(resp.status.as_u16(), 486);
    assert_eq!(resp.reason, "Busy Here");
    assert_eq!(resp.headers.get("Via"), r.headers.get("Via"));
    assert_eq!(resp.to_tag().unwrap().as_str(), "uas1");
    assert_eq!(resp.call_id(), r.call_id());
    assert_eq!(resp.cseq(), r.cseq());
    // and it parses back
    let printed = resp.to_bytes();
    assert!(SipMessage::parse(&printed, &ParseLimits::default()).is_ok());
}

#[test]
fn ack_and_cancel_follow_rfc3261() {
    let r = req(COMPACT);
    let resp = r.response(StatusCode::BUSY_HERE, Some(&Tag::new("uas1")));
    let ack = r.ack_for(&resp);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, r.uri);
    assert_eq!(ack.branch(), r.branch());
    assert_eq!(ack.to_tag().unwrap().as_str(), "uas1");
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    let cancel = r.cancel();
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.branch(), r.branch());
    assert_eq!(cancel.to_tag(), None);
    assert!(SipMessage::parse(&cancel.to_bytes(), &ParseLimits::default()).is_ok());
}

#[test]
fn limits_apply_before_parsing() {
    let limits = ParseLimits {
        max_message_bytes: 100,
        ..ParseLimits::default()
    };
    assert!(matches!(
        SipMessage::parse(COMPACT.as_bytes(), &limits),
        Err(ParseError::TooLarge { .. })
    ));
    let limits = ParseLimits {
        max_headers: 3,
        ..ParseLimits::default()
    };
    assert!(matches!(
        SipMessage::parse(COMPACT.as_bytes(), &limits),
        Err(ParseError::TooManyHeaders { max: 3 })
    ));
    let long = format!(
        "OPTIONS sip:a@b SIP/2.0\r\nX-Long: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert!(matches!(
        parse(&long),
        Err(ParseError::LineTooLong { max: 8192 })
    ));
}

#[test]
fn bad_request_answer_needs_the_five_headers() {
    let raw = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbad\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: bad-1\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 300\r\n\r\n";
    let err = parse(raw).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
    let resp = error_response(raw.as_bytes(), &err).unwrap();
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.to_tag().is_some());
    assert!(
        resp.headers
            .get("Warning")
            .unwrap()
            .contains("Max-Forwards")
    );
    assert_eq!(resp.call_id().unwrap().as_str(), "bad-1");

    let no_callid = raw
        .replace("Call-ID: bad-1\r\n", "")
        .replace("Max-Forwards: 300", "Max-Forwards: 70");
    let err = parse(&no_callid).unwrap_err();
    assert_eq!(err, ParseError::MissingHeader("Call-ID"));
    assert!(error_response(no_callid.as_bytes(), &err).is_none());

    let response = "SIP/2.0 200 OK\r\nVia: x\r\n\r\n";
    let err = parse(response).unwrap_err();
    assert!(error_response(response.as_bytes(), &err).is_none());
}

#[test]
fn stream_framing_uses_content_length_and_keepalives() {
    let limits = ParseLimits::default();
    let msg = COMPACT.as_bytes();
    let mut buf = b"\r\n\r\n".to_vec();
    assert_eq!(
        stream_frame(&buf, &limits).unwrap(),
        StreamFrame::KeepAlive { len: 4 }
    );
    buf.clear();
    buf.extend_from_slice(&msg[..msg.len() - 2]);
    assert_eq!(
        stream_frame(&buf, &limits).unwrap(),
        StreamFrame::Incomplete
    );
    buf.extend_from_slice(&msg[msg.len() - 2..]);
    buf.extend_from_slice(msg);
    assert_eq!(
        stream_frame(&buf, &limits).unwrap(),
        StreamFrame::Message { len: msg.len() }
    );
}

#[test]
fn extension_methods_and_case_sensitivity() {
    assert_eq!(Method::parse("INVITE").unwrap(), Method::Invite);
    assert_eq!(
        Method::parse("invite").unwrap(),
        Method::Extension("invite".into())
    );
    assert!(Method::parse("IN VITE").is_err());
}

#[test]
fn max_forwards_must_be_digits_up_to_255() {
    for (v, ok) in [
        ("70", true),
        ("0068", true),
        ("0", true),
        ("255", true),
        ("256", false),
        ("+5", false),
        ("-1", false),
        ("7 0", false),
    ] {
        let raw = IPV6.replace("Max-Forwards: 70", &format!("Max-Forwards: {v}"));
        assert_eq!(parse(&raw).is_ok(), ok, "Max-Forwards: {v}");
    }
}

#[test]
fn dialog_creating_responses_copy_record_route_unchanged() {
    let mut r = req(COMPACT);
    r.headers.push(
        "Record-Route",
        "<sip:P1.example.com;lr;ftag=x>, <sip:p2.example.com;lr>",
    );
    let ok = r.response(StatusCode::OK, Some(&Tag::new("t")));
    assert_eq!(
        ok.headers.get("Record-Route"),
        Some("<sip:P1.example.com;lr;ftag=x>, <sip:p2.example.com;lr>")
    );
    assert!(
        !r.response(StatusCode::TRYING, None)
            .headers
            .contains("Record-Route")
    );
    assert!(
        !r.response(StatusCode::BUSY_HERE, None)
            .headers
            .contains("Record-Route")
    );
}

#[test]
fn oversized_request_is_answered_513_when_its_headers_are_readable() {
    let limits = ParseLimits {
        max_message_bytes: 200,
        ..ParseLimits::default()
    };
    let err = SipMessage::parse(COMPACT.as_bytes(), &limits).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::MESSAGE_TOO_LARGE);
    let resp = error_response(COMPACT.as_bytes(), &err).unwrap();
    assert_eq!(resp.status.as_u16(), 513);
    assert_eq!(resp.call_id().unwrap().as_str(), "compact-call@192.0.2.1");
    // the answer is deterministic, so a retransmitted bad request gets the same one
    assert_eq!(error_response(COMPACT.as_bytes(), &err), Some(resp));
}

mod stream {
    use proptest::prelude::*;
    use whatsip_sip::{ParseLimits, SipMessage, StreamFrame, stream_frame};

    use super::{COMPACT, FOLDED, INSTANCE, IPV6, TEL};

    proptest! {
        /// Messages and CRLF keep-alives written back to back on a stream, delivered
        /// in arbitrary chunks, come out of the framer exactly as they went in.
        #[test]
        fn framing_reassembles_any_chunking(
            picks in prop::collection::vec((0usize..5, any::<bool>()), 1..12),
            cuts in prop::collection::vec(1usize..300, 1..40),
        ) {
            let all = [COMPACT, IPV6, TEL, INSTANCE, FOLDED];
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (i, ping) in &picks {
                if *ping {
                    wire.extend_from_slice(b"\r\n\r\n");
                }
                wire.extend_from_slice(all[*i].as_bytes());
                expected.push(all[*i].as_bytes().to_vec());
            }
            let limits = ParseLimits::default();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < wire.len() || !buf.is_empty() {
                let n = (*cut.next().unwrap()).min(wire.len() - pos);
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                loop {
                    match stream_frame(&buf, &limits).unwrap() {
                        StreamFrame::Incomplete => break,
                        StreamFrame::KeepAlive { len } => {
                            buf.drain(..len);
                        }
                        StreamFrame::Message { len } => {
                            let frame: Vec<u8> = buf.drain(..len).collect();
                            prop_assert!(SipMessage::parse(&frame, &limits).is_ok());
                            got.push(frame);
                        }
                    }
                }
                if pos == wire.len() && !buf.is_empty() {
                    prop_assert!(false, "left over bytes: {:?}", String::from_utf8_lossy(&buf));
                }
            }
            prop_assert_eq!(got, expected);
        }
    }
}
