//! Why whatsip-sip has its own parser: each test feeds rsip 0.4 a message or URI that
//! RFC 3261 (or a widely deployed extension) makes valid, shows that rsip fails on it,
//! and that our parser gets it right. Recorded in `docs/dependencies.md`.

use rsip::prelude::{HeadersExt, ToTypedHeader};
use whatsip_sip::{Contacts, Host, ParseLimits, SipMessage, Uri};

fn ours(s: &str) -> SipMessage {
    SipMessage::parse(s.as_bytes(), &ParseLimits::default()).expect("valid message")
}

const BASE_VIA: &str = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKgap\r\n";

fn msg(request_line: &str, extra: &str) -> String {
    format!(
        "{request_line}\r\n{extra}From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: gap@192.0.2.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// RFC 3261 §7.3.3: compact forms MUST be accepted. rsip keeps `v:` and `i:` as
/// unknown headers, so it finds no Via and no Call-ID.
#[test]
fn rsip_misses_compact_forms() {
    let raw = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKgap\r\n\
f: <sip:alice@example.com>;tag=1\r\n\
t: <sip:bob@example.com>\r\n\
i: gap@192.0.2.1\r\n\
CSeq: 1 OPTIONS\r\n\
l: 0\r\n\r\n";
    let r = rsip::Request::try_from(raw).unwrap();
    assert!(r.via_header().is_err());
    assert!(r.call_id_header().is_err());
    let SipMessage::Request(o) = ours(raw) else {
        panic!()
    };
    assert_eq!(o.branch().unwrap().as_str(), "z9hG4bKgap");
    assert_eq!(o.call_id().unwrap().as_str(), "gap@192.0.2.1");
}

/// RFC 3261 §25.1 `IPv6reference`: rsip cannot parse a bracketed IPv6 host.
#[test]
fn rsip_fails_ipv6_host_in_uri() {
    let uri = "sip:bob@[2001:db8::10]:5070";
    let rsip_ok = rsip::Uri::try_from(uri)
        .map(|u| u.host_with_port.to_string() == "[2001:db8::10]:5070")
        .unwrap_or(false);
    assert!(!rsip_ok, "rsip parsed the IPv6 host correctly now; revisit");
    let u = Uri::parse(uri).unwrap();
    assert_eq!(
        u.as_sip().unwrap().host,
        Host::Ipv6("2001:db8::10".parse().unwrap())
    );
}

/// RFC 3966 `tel:` URIs (PBXs send them in From/To and P-Asserted-Identity).
#[test]
fn rsip_fails_tel_uri() {
    let uri = "tel:+15551234567;phone-context=example.com";
    let rsip_ok = rsip::Uri::try_from(uri)
        .map(|u| u.to_string() == uri)
        .unwrap_or(false);
    assert!(!rsip_ok, "rsip handled tel: now; revisit");
    assert!(matches!(Uri::parse(uri).unwrap(), Uri::Tel(_)));
}

/// RFC 5626 §4.1: `+sip.instance="<urn:uuid:...>"` is a quoted Contact parameter.
#[test]
fn rsip_fails_quoted_sip_instance() {
    let raw = msg(
        "OPTIONS sip:bob@example.com SIP/2.0",
        &format!(
            "{BASE_VIA}Contact: <sip:alice@192.0.2.1>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1\r\n"
        ),
    );
    let rsip_ok = rsip::Request::try_from(raw.as_str())
        .ok()
        .and_then(|r| r.contact_header().ok().and_then(|c| c.typed().ok()))
        .is_some_and(|c| {
            c.params
                .iter()
                .any(|p| p.to_string().contains("urn:uuid:f81d4fae"))
        });
    assert!(!rsip_ok, "rsip parsed +sip.instance now; revisit");
    let SipMessage::Request(o) = ours(&raw) else {
        panic!()
    };
    let Some(Contacts::Addresses(c)) = o.headers.contacts() else {
        panic!()
    };
    assert_eq!(
        c[0].sip_instance().unwrap(),
        "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
    );
}

/// RFC 3261 §7.3.1: header values may be folded over several lines.
#[test]
fn rsip_fails_folded_headers() {
    let raw = msg(
        "OPTIONS sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060\r\n ;branch=z9hG4bKgap\r\n",
    );
    let rsip_ok = rsip::Request::try_from(raw.as_str())
        .ok()
        .and_then(|r| r.via_header().ok().and_then(|v| v.typed().ok()))
        .is_some_and(|v| v.branch().is_some());
    assert!(!rsip_ok, "rsip unfolded headers now; revisit");
    let SipMessage::Request(o) = ours(&raw) else {
        panic!()
    };
    assert_eq!(o.branch().unwrap().as_str(), "z9hG4bKgap");
}

/// RFC 3261 §7.3.1 / RFC 4475 §3.1.1.1: white space is allowed before the colon.
#[test]
fn rsip_fails_space_before_colon() {
    let raw = msg(
        "OPTIONS sip:bob@example.com SIP/2.0",
        "Via : SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKgap\r\n",
    );
    let rsip_ok = rsip::Request::try_from(raw.as_str())
        .ok()
        .is_some_and(|r| r.via_header().is_ok());
    assert!(!rsip_ok, "rsip accepted `Via :` now; revisit");
    let SipMessage::Request(o) = ours(&raw) else {
        panic!()
    };
    assert_eq!(o.branch().unwrap().as_str(), "z9hG4bKgap");
}
