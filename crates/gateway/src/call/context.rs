//! What the INVITE to the PBX carries about the WhatsApp caller (issue 5): the configured
//! `X-WA-*` headers, the route's extra headers, and a From / P-Asserted-Identity the PBX
//! can route and display. Pure functions; the SIP layer renders the message.

use crate::config::ContextHeaders;
use crate::dialplan::PbxTarget;
use crate::types::{E164, WaCallId};

/// The WhatsApp side of an inbound call, from the `connect` webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaCaller {
    /// Meta's call id.
    pub call_id: WaCallId,
    /// The caller (`from`), normalised.
    pub number: E164,
    /// `contacts[].profile.name`, if present.
    pub name: Option<String>,
    /// `cta_payload`, if present.
    pub cta_payload: Option<String>,
    /// `deeplink_payload`, if present.
    pub deeplink_payload: Option<String>,
}

/// Identity and headers for the INVITE toward the PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxInviteContext {
    /// From display name, already a quoted-string (`"Jane Doe"`), if the caller has a name.
    pub from_display: Option<String>,
    /// From URI: `sip:+<digits>@<domain>`.
    pub from_uri: String,
    /// P-Asserted-Identity value (RFC 3325): `<sip:+<digits>@<domain>>`.
    pub p_asserted_identity: String,
    /// Extra headers in order: configured context headers, then the route's headers.
    pub headers: Vec<(String, String)>,
}

/// Builds what the INVITE carries. `domain` is `[pbx].domain`.
pub fn pbx_invite_context(
    names: &ContextHeaders,
    caller: &WaCaller,
    target: &PbxTarget,
    domain: &str,
) -> PbxInviteContext {
    let from_uri = format!("sip:{}@{domain}", caller.number);
    let mut headers = Vec::new();
    let mut add = |name: &Option<String>, value: Option<&str>| {
        if let (Some(n), Some(v)) = (name, value) {
            let v = header_value(v);
            if !v.is_empty() {
                headers.push((n.clone(), v));
            }
        }
    };
    add(&names.call_id, Some(caller.call_id.as_str()));
    add(&names.customer_number, Some(caller.number.as_str()));
    add(&names.customer_name, caller.name.as_deref());
    add(&names.cta_payload, caller.cta_payload.as_deref());
    add(&names.deeplink_payload, caller.deeplink_payload.as_deref());
    headers.extend(target.headers.iter().cloned());
    PbxInviteContext {
        from_display: caller
            .name
            .as_deref()
            .map(quoted_string)
            .filter(|q| q.len() > 2),
        p_asserted_identity: format!("<{from_uri}>"),
        from_uri,
        headers,
    }
}

/// A header value from untrusted text: no control characters (no CRLF injection), at
/// most 512 bytes (Meta caps payloads at 512 characters), cut on a char boundary.
fn header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len().min(512));
    for c in v.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 512 {
            break;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// RFC 3261 §25.1 quoted-string: escape `"` and `\`, drop control characters.
fn quoted_string(v: &str) -> String {
    let mut out = String::from("\"");
    for c in header_value(v).chars().take(64) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn names() -> ContextHeaders {
        ContextHeaders {
            call_id: Some("X-WA-Call-Id".into()),
            customer_number: Some("X-WA-Customer-Number".into()),
            customer_name: Some("X-WA-Customer-Name".into()),
            cta_payload: Some("X-WA-CTA-Payload".into()),
            deeplink_payload: None,
        }
    }

    fn caller(name: Option<&str>, cta: Option<&str>) -> WaCaller {
        WaCaller {
            call_id: WaCallId::new("wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhgg").unwrap(),
            number: E164::parse("917358580180").unwrap(),
            name: name.map(str::to_owned),
            cta_payload: cta.map(str::to_owned),
            deeplink_payload: Some("promo".into()),
        }
    }

    fn target() -> PbxTarget {
        PbxTarget {
            uri: "sip:2000@pbx".into(),
            headers: vec![("X-Queue".into(), "sales".into())],
            ring_timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn invite_carries_configured_context_headers_then_route_headers() {
        let c = pbx_invite_context(
            &names(),
            &caller(Some("Jane \"JD\" Doe"), Some("sales")),
            &target(),
            "pbx.example.com",
        );
        assert_eq!(c.from_uri, "sip:+917358580180@pbx.example.com");
        assert_eq!(c.p_asserted_identity, "<sip:+917358580180@pbx.example.com>");
        assert_eq!(c.from_display.as_deref(), Some(r#""Jane \"JD\" Doe""#));
        let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "X-WA-Call-Id",
                "X-WA-Customer-Number",
                "X-WA-Customer-Name",
                "X-WA-CTA-Payload",
                "X-Queue"
            ]
        );
        assert_eq!(c.headers[1].1, "+917358580180");
    }

    #[test]
    fn invite_headers_drop_crlf_and_absent_values() {
        let c = pbx_invite_context(
            &names(),
            &caller(None, Some("a\r\nVia: evil")),
            &target(),
            "pbx",
        );
        assert_eq!(c.from_display, None);
        assert!(
            c.headers.iter().all(|(n, _)| n != "X-WA-Customer-Name"),
            "no empty header for a missing name"
        );
        let cta = &c
            .headers
            .iter()
            .find(|(n, _)| n == "X-WA-CTA-Payload")
            .unwrap()
            .1;
        assert_eq!(cta, "aVia: evil");
        assert!(
            c.headers.iter().all(|(n, _)| n != "X-WA-Deeplink-Payload"),
            "disabled header"
        );
    }

    #[test]
    fn invite_header_values_are_capped_on_char_boundary() {
        let long = "é".repeat(400);
        let c = pbx_invite_context(&names(), &caller(None, Some(&long)), &target(), "pbx");
        let cta = &c
            .headers
            .iter()
            .find(|(n, _)| n == "X-WA-CTA-Payload")
            .unwrap()
            .1;
        assert_eq!(cta.len(), 512);
    }
}
