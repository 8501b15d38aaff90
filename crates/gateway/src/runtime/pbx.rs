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
