//! Dialog tests on a virtual clock, named after the RFC 3261 §12/§13 rule.

use whatsip_testkit::VirtualClock;

use super::*;
use crate::message::{Branch, Host, ParseLimits, Transport};

fn parse_req(raw: &str) -> Request {
    match SipMessage::parse(raw.as_bytes(), &ParseLimits::default()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn parse_resp(raw: &str) -> Response {
    match SipMessage::parse(raw.as_bytes(), &ParseLimits::default()).unwrap() {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => unreachable!(),
    }
}

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n\
Content-Length: 0\r\n\r\n";

fn ok_with_rr(rr: &str) -> Response {
    parse_resp(&format!(
        "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
{rr}\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=314159\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@client.biloxi.example.com>\r\n\
Content-Length: 0\r\n\r\n"
    ))
}

fn via(n: u32) -> Via {
    Via::new(
        Transport::Udp,
        Host::Domain("client.atlanta.example.com".into()),
        Some(5060),
        &Branch::new(format!("z9hG4bKnew{n}")),
    )
}

fn uac_dialog(rr: &str) -> Dialog {
    Dialog::uac(
        &parse_req(INVITE),
        &ok_with_rr(rr),
        "<sip:alice@client.atlanta.example.com>",
        false,
        &TimerConfig::default(),
    )
    .unwrap()
}

#[test]
fn uac_route_set_is_record_route_reversed_and_kept_exactly() {
    let mut d = uac_dialog(
        "Record-Route: <sip:ss2.biloxi.example.com;lr;X=Y>\r\nRecord-Route: <sip:SS1.atlanta.example.com;lr>\r\n",
    );
    assert_eq!(d.state(), DialogState::Confirmed);
    assert_eq!(d.id().local_tag.as_str(), "9fxced76sl");
    assert_eq!(d.id().remote_tag.as_str(), "314159");
    let bye = d.create_request(Method::Bye, &via(1));
    let routes: Vec<&str> = bye.headers.get_all("Route").collect();
    assert_eq!(
        routes,
        vec![
            "<sip:SS1.atlanta.example.com;lr>",
            "<sip:ss2.biloxi.example.com;lr;X=Y>"
        ]
    );
    assert_eq!(bye.uri.to_string(), "sip:bob@client.biloxi.example.com");
    assert_eq!(bye.cseq().unwrap().seq, 2);
    assert_eq!(bye.to_tag().unwrap().as_str(), "314159");
    assert_eq!(bye.from_tag().unwrap().as_str(), "9fxced76sl");
    assert!(d.is_terminated(), "sending BYE ends the dialog");
    // and the request parses back
    assert!(SipMessage::parse(&bye.to_bytes(), &ParseLimits::default()).is_ok());
}

#[test]
fn uas_route_set_keeps_record_route_order() {
    let mut inv = parse_req(INVITE);
    inv.headers.push(
        "Record-Route",
        "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
    );
    let ok = inv.response(StatusCode::OK, Some(&Tag::new("uas1")));
    let mut d = Dialog::uas(
        &inv,
        &ok,
        "<sip:bob@192.0.2.9>",
        false,
        &TimerConfig::default(),
    )
    .unwrap();
    assert_eq!(d.remote_seq(), Some(1));
    let bye = d.create_request(Method::Bye, &via(2));
    assert_eq!(
        bye.headers.get_all("Route").collect::<Vec<_>>(),
        vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    assert_eq!(
        bye.uri.to_string(),
        "sip:alice@client.atlanta.example.com;transport=udp"
    );
    assert_eq!(bye.from_tag().unwrap().as_str(), "uas1");
    assert_eq!(bye.to_tag().unwrap().as_str(), "9fxced76sl");
}

#[test]
fn strict_router_becomes_request_uri_and_remote_target_goes_last() {
    let mut d = uac_dialog(
        "Record-Route: <sip:p2.example.com;lr>\r\nRecord-Route: <sip:p1.example.com>\r\n",
    );
    let info = d.create_request(Method::Info, &via(3));
    assert_eq!(info.uri.to_string(), "sip:p1.example.com");
    assert_eq!(
        info.headers.get_all("Route").collect::<Vec<_>>(),
        vec![
            "<sip:p2.example.com;lr>",
            "<sip:bob@client.biloxi.example.com>"
        ]
    );
    assert_eq!(d.next_hop().to_string(), "sip:p1.example.com");
}

#[test]
fn no_route_set_targets_contact_and_reinvite_carries_contact() {
    let mut d = uac_dialog("");
    let reinvite = d.create_request(Method::Invite, &via(4));
    assert_eq!(
        reinvite.uri.to_string(),
        "sip:bob@client.biloxi.example.com"
    );
    assert!(!reinvite.headers.contains("Route"));
    assert_eq!(
        reinvite.headers.get("Contact"),
        Some("<sip:alice@client.atlanta.example.com>")
    );
    let opts = d.create_request(Method::Options, &via(5));
    assert!(!opts.headers.contains("Contact"));
    assert_eq!(opts.cseq().unwrap().seq, 3, "CSeq grows by one per request");
}

#[test]
fn ack_for_2xx_uses_invite_cseq_and_is_resent_for_2xx_retransmissions() {
    let mut d = uac_dialog("Record-Route: <sip:p1.example.com;lr>\r\n");
    let ok = ok_with_rr("Record-Route: <sip:p1.example.com;lr>\r\n");
    let ack = d.create_ack(1, &via(6));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    assert_eq!(ack.headers.get("Route"), Some("<sip:p1.example.com;lr>"));
    assert_eq!(d.ack_for_retransmission(&ok), Some(&ack));
    assert_eq!(d.local_seq(), 1, "ACK does not consume a CSeq");
}

#[test]
fn early_dialog_from_180_with_tag_confirmed_by_200_which_recomputes_route_set() {
    let inv = parse_req(INVITE);
    let ringing = parse_resp(
        &ok_with_rr("Record-Route: <sip:old.example.com;lr>\r\n")
            .to_string()
            .replacen("200 OK", "180 Ringing", 1),
    );
    let mut d = Dialog::uac(&inv, &ringing, "<sip:a@h>", false, &TimerConfig::default()).unwrap();
    assert_eq!(d.state(), DialogState::Early);
    d.handle_response(&ok_with_rr("Record-Route: <sip:new.example.com;lr>\r\n"));
    assert_eq!(d.state(), DialogState::Confirmed);
    assert_eq!(d.route_set()[0].raw, "<sip:new.example.com;lr>");
}

#[test]
fn early_dialog_terminated_by_final_failure() {
    let inv = parse_req(INVITE);
    let ringing = parse_resp(
        &ok_with_rr("")
            .to_string()
            .replacen("200 OK", "180 Ringing", 1),
    );
    let mut d = Dialog::uac(&inv, &ringing, "<sip:a@h>", false, &TimerConfig::default()).unwrap();
    d.handle_response(&parse_resp(&ok_with_rr("").to_string().replacen(
        "200 OK",
        "486 Busy Here",
        1,
    )));
    assert!(d.is_terminated());
}

#[test]
fn response_without_to_tag_creates_no_dialog() {
    let inv = parse_req(INVITE);
    let r = inv.response(StatusCode::RINGING, None);
    assert_eq!(
        Dialog::uac(&inv, &r, "<sip:a@h>", false, &TimerConfig::default()).unwrap_err(),
        DialogError::MissingToTag
    );
}

fn incoming(d: &Dialog, method: &str, seq: u32, contact: Option<&str>) -> Request {
    let id = d.id();
    let contact = contact
        .map(|c| format!("Contact: {c}\r\n"))
        .unwrap_or_default();
    parse_req(&format!(
        "{method} sip:alice@client.atlanta.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP client.biloxi.example.com;branch=z9hG4bKin{seq}\r\n\
From: <sip:bob@biloxi.example.com>;tag={}\r\n\
To: <sip:alice@atlanta.example.com>;tag={}\r\n\
Call-ID: {}\r\n\
CSeq: {seq} {method}\r\n\
{contact}Content-Length: 0\r\n\r\n",
        id.remote_tag, id.local_tag, id.call_id
    ))
}

#[test]
fn reinvite_from_peer_is_surfaced_and_refreshes_remote_target() {
    let clock = VirtualClock::new();
    let mut d = uac_dialog("");
    let re = incoming(&d, "INVITE", 10, Some("<sip:bob@198.51.100.7:5070>"));
    d.handle_request(re.clone(), clock.now()).unwrap();
    assert_eq!(d.poll_event(), Some(DialogEvent::ReInvite(re)));
    assert_eq!(d.remote_target().to_string(), "sip:bob@198.51.100.7:5070");
    let upd = incoming(&d, "UPDATE", 11, None);
    d.handle_request(upd.clone(), clock.now()).unwrap();
    assert_eq!(d.poll_event(), Some(DialogEvent::Update(upd)));
    let info = incoming(&d, "INFO", 12, None);
    d.handle_request(info.clone(), clock.now()).unwrap();
    assert_eq!(d.poll_event(), Some(DialogEvent::Info(info)));
}

#[test]
fn out_of_order_cseq_is_refused_with_500() {
    let clock = VirtualClock::new();
    let mut d = uac_dialog("");
    d.handle_request(incoming(&d, "INFO", 5, None), clock.now())
        .unwrap();
    let err = d
        .handle_request(incoming(&d, "INFO", 4, None), clock.now())
        .unwrap_err();
    assert_eq!(err, DialogError::OutOfOrder { got: 4, last: 5 });
    assert_eq!(err.status_code().as_u16(), 500);
}

#[test]
fn bye_from_peer_terminates_and_later_requests_get_481() {
    let clock = VirtualClock::new();
    let mut d = uac_dialog("");
    let bye = incoming(&d, "BYE", 2, None);
    d.handle_request(bye.clone(), clock.now()).unwrap();
    assert_eq!(d.poll_event(), Some(DialogEvent::Bye(bye)));
    assert!(d.is_terminated());
    let err = d
        .handle_request(incoming(&d, "INFO", 3, None), clock.now())
        .unwrap_err();
    assert_eq!(err.status_code().as_u16(), 481);
}

#[test]
fn request_for_unknown_dialog_gets_481() {
    let clock = VirtualClock::new();
    let mut d = uac_dialog("");
    let mut other = incoming(&d, "BYE", 2, None);
    other.headers.set("Call-ID", "someone-else");
    assert_eq!(
        d.handle_request(other.clone(), clock.now()),
        Err(DialogError::NotThisDialog)
    );
    assert_eq!(no_dialog_response(&other).status.as_u16(), 481);
}

fn uas_dialog(reliable: bool) -> (Dialog, Request, Response) {
    let inv = parse_req(INVITE);
    let ok = inv.response(StatusCode::OK, Some(&Tag::new("uas1")));
    let d = Dialog::uas(
        &inv,
        &ok,
        "<sip:bob@192.0.2.9>",
        reliable,
        &TimerConfig::default(),
    )
    .unwrap();
    (d, inv, ok)
}

#[test]
fn uas_2xx_retransmits_until_ack() {
    let mut clock = VirtualClock::new();
    let (mut d, _inv, ok) = uas_dialog(false);
    d.start_2xx_retransmission(ok.clone(), clock.now());
    let mut at = Vec::new();
    for _ in 0..20 {
        match d.poll_timeout() {
            Some(t) if t <= clock.at(4.0) => {
                clock.advance_to(t);
                d.handle_timeout(clock.now());
                while let Some(tx) = d.poll_transmit() {
                    assert_eq!(tx.message, SipMessage::Response(ok.clone()));
                    at.push(clock.secs(clock.now()));
                }
            }
            _ => break,
        }
    }
    assert_eq!(at, vec![0.5, 1.5, 3.5]);
    clock.advance_to(clock.at(4.0));
    let ack = incoming(&d, "ACK", 1, None);
    d.handle_request(ack.clone(), clock.now()).unwrap();
    assert_eq!(d.poll_event(), Some(DialogEvent::AckReceived(ack)));
    assert!(!d.is_awaiting_ack());
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn uas_2xx_without_ack_gives_up_after_64_t1() {
    let mut clock = VirtualClock::new();
    let (mut d, _inv, ok) = uas_dialog(true);
    d.start_2xx_retransmission(ok, clock.now());
    assert_eq!(clock.secs(d.poll_timeout().unwrap()), 32.0);
    clock.advance_to(clock.at(32.0));
    d.handle_timeout(clock.now());
    assert!(d.poll_transmit().is_none(), "no retransmission over TCP");
    assert_eq!(d.poll_event(), Some(DialogEvent::AckTimeout));
    assert!(d.is_terminated());
}

#[test]
fn stray_ack_is_absorbed() {
    let clock = VirtualClock::new();
    let (mut d, _inv, _ok) = uas_dialog(false);
    d.handle_request(incoming(&d, "ACK", 7, None), clock.now())
        .unwrap();
    assert_eq!(d.poll_event(), None);
}
