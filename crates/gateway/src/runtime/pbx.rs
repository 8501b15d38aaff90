//! SIP messages of the PBX leg: the INVITE (with the WhatsApp context), BYE in the
//! dialog the 2xx created, and answers to in-dialog requests.

use std::net::SocketAddr;

use whatsip_sip::endpoint::ack_for_2xx;
use whatsip_sip::transport::TransportKind;
use whatsip_sip::{CallId, HeaderName, Method, Request, Response, StatusCode, Tag, Uri};

use crate::call::PbxInviteContext;

/// Builds the INVITE of one attempt. `local` is our SIP address toward the PBX.
pub(crate) fn invite(
    uri: &Uri,
    local: SocketAddr,
    kind: TransportKind,
    ctx: &PbxInviteContext,
    call_id: &CallId,
    from_tag: &Tag,
    sdp: String,
) -> Request {
    let mut req = Request::new(Method::Invite, uri.clone());
    let from = match &ctx.from_display {
        Some(name) => format!("{name} <{}>;tag={from_tag}", ctx.from_uri),
        None => format!("<{}>;tag={from_tag}", ctx.from_uri),
    };
    req.headers.push(HeaderName::FROM, from);
    req.headers.push(HeaderName::TO, format!("<{uri}>"));
    req.headers.push(HeaderName::CALL_ID, call_id.as_str());
    req.headers.push(HeaderName::CSEQ, "1 INVITE");
    req.headers.push(HeaderName::CONTACT, contact(local, kind));
    req.headers
        .push("P-Asserted-Identity", ctx.p_asserted_identity.clone());
    req.headers
        .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE");
    for (name, value) in &ctx.headers {
        req.headers.push(name.as_str(), value.clone());
    }
    req.set_body("application/sdp", sdp);
    req
}

/// Our Contact toward the PBX.
pub(crate) fn contact(local: SocketAddr, kind: TransportKind) -> String {
    match kind {
        TransportKind::Udp => format!("<sip:whatsip@{local}>"),
        other => format!(
            "<sip:whatsip@{local};transport={}>",
            other.as_str().to_ascii_lowercase()
        ),
    }
}

/// The BYE for the dialog `answer` created for `invite` (as sent, our Via removed).
/// Shares the ACK's Request-URI (remote Contact), Route set, tags and Call-ID.
pub(crate) fn bye(invite: &Request, answer: &Response, local_seq: u32) -> Request {
    let mut bye = ack_for_2xx(&without_via(invite), answer);
    bye.method = Method::Bye;
    bye.headers
        .set(HeaderName::CSEQ, format!("{local_seq} BYE"));
    bye
}

/// `invite` without Via headers (the endpoint adds its own to requests it sends).
pub(crate) fn without_via(req: &Request) -> Request {
    let mut r = req.clone();
    r.headers.remove("Via");
    r
}

/// A response to an in-dialog request (the To tag is already there).
pub(crate) fn response(req: &Request, status: StatusCode) -> Response {
    req.response(status, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::PbxInviteContext;

    fn ctx() -> PbxInviteContext {
        PbxInviteContext {
            from_display: Some("\"Jane Doe\"".into()),
            from_uri: "sip:+4915112345678@pbx.example.com".into(),
            p_asserted_identity: "<sip:+4915112345678@pbx.example.com>".into(),
            headers: vec![
                ("X-WA-Call-Id".into(), "wacid.ABC".into()),
                ("X-Route".into(), "support".into()),
            ],
        }
    }

    #[test]
    fn invite_carries_identity_context_headers_and_sdp() {
        let uri = Uri::parse("sip:2000@pbx.example.com").unwrap();
        let local: SocketAddr = "192.0.2.10:5060".parse().unwrap();
        let req = invite(
            &uri,
            local,
            TransportKind::Tcp,
            &ctx(),
            &CallId::new("c1@192.0.2.10"),
            &Tag::new("t1"),
            "v=0\r\n".into(),
        );
        let text = req.to_string();
        assert!(
            text.starts_with("INVITE sip:2000@pbx.example.com SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("From: \"Jane Doe\" <sip:+4915112345678@pbx.example.com>;tag=t1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:2000@pbx.example.com>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("P-Asserted-Identity: <sip:+4915112345678@pbx.example.com>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:whatsip@192.0.2.10:5060;transport=tcp>\r\n"),
            "{text}"
        );
        assert!(text.contains("X-WA-Call-Id: wacid.ABC\r\n"), "{text}");
        assert!(text.contains("X-Route: support\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/sdp\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nv=0\r\n"), "{text}");
    }

    #[test]
    fn bye_follows_the_dialog_of_the_2xx() {
        let uri = Uri::parse("sip:2000@pbx.example.com").unwrap();
        let local: SocketAddr = "192.0.2.10:5060".parse().unwrap();
        let mut req = invite(
            &uri,
            local,
            TransportKind::Udp,
            &ctx(),
            &CallId::new("c1@192.0.2.10"),
            &Tag::new("t1"),
            String::new(),
        );
        req.headers.push_front(
            HeaderName::VIA,
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx",
        );
        let mut ok = req.response(StatusCode::OK, Some(&Tag::new("pbx9")));
        ok.headers
            .push(HeaderName::CONTACT, "<sip:2000@192.0.2.20:5070>");
        ok.headers
            .push(HeaderName::RECORD_ROUTE, "<sip:proxy.example.com;lr>");
        let bye = bye(&req, &ok, 2).to_string();
        assert!(
            bye.starts_with("BYE sip:2000@192.0.2.20:5070 SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(
            bye.contains("Route: <sip:proxy.example.com;lr>\r\n"),
            "{bye}"
        );
        assert!(bye.contains(";tag=t1\r\n"), "{bye}");
        assert!(
            bye.contains("To: <sip:2000@pbx.example.com>;tag=pbx9\r\n"),
            "{bye}"
        );
        assert!(bye.contains("CSeq: 2 BYE\r\n"), "{bye}");
        assert!(!bye.contains("Via:"), "{bye}");
    }
}
