//! `received`/`rport` on incoming requests and the Via side of response routing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::message::{Request, Via};
use crate::transport::{TransportKind, ViaRouting};

/// Stamps the top Via of an incoming request (RFC 3261 §18.2.1, RFC 3581 §4):
/// `received` when the sent-by host differs from the packet source (always when `rport`
/// was asked for), and `rport` filled with the source port when present without a value.
///
/// Returns the stamped top Via, or `None` when the request has no parsable Via (the
/// parser rejects those, so this is defensive).
pub fn stamp_received(request: &mut Request, source: SocketAddr) -> Option<Via> {
    let header = request.headers.iter_mut().find(|h| h.name.is("Via"))?;
    let mut vias = Via::parse_list(&header.value)?;
    let top = vias.first_mut()?;
    let wants_rport = matches!(top.rport(), Some(None));
    if wants_rport {
        top.params.set("rport", Some(source.port().to_string()));
    }
    if wants_rport || top.host.ip() != Some(source.ip()) {
        top.params.set("received", Some(source.ip().to_string()));
    }
    let stamped = top.clone();
    header.value = vias
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Some(stamped)
}

/// The routing facts of a (stamped) Via, for [`crate::transport::response_target`].
/// `None` for a transport we do not run (SCTP, WS).
pub fn via_routing(via: &Via) -> Option<ViaRouting> {
    Some(ViaRouting {
        kind: TransportKind::from_token(via.transport.as_str())?,
        sent_by_ip: via.host.ip(),
        sent_by_port: via.port,
        received: via.received(),
        rport: via.rport().flatten(),
        maddr: via.maddr().and_then(|h| h.ip()),
    })
}

/// The address to advertise: the bound one, unless it is unspecified (0.0.0.0 / ::), then
/// the configured one, else loopback.
pub(crate) fn advertised(addr: SocketAddr, advertised_ip: Option<IpAddr>) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = advertised_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ParseLimits, SipMessage};

    fn parse(s: &str) -> Request {
        match SipMessage::parse(s.as_bytes(), &ParseLimits::default()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("not a request"),
        }
    }

    const REQ: &str = "OPTIONS sip:a@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP {VIA}, SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\n\
        Max-Forwards: 70\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n\
        Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn rport_request_gets_rport_and_received_rfc3581_4() {
        let mut r = parse(&REQ.replace("{VIA}", "192.0.2.1:5060;branch=z9hG4bKa;rport"));
        let v = stamp_received(&mut r, "192.0.2.1:61000".parse().unwrap()).unwrap();
        assert_eq!(v.rport(), Some(Some(61000)));
        assert_eq!(v.received(), Some("192.0.2.1".parse().unwrap()));
        // The rewritten header keeps the second Via.
        let vias = r.headers.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].rport(), Some(Some(61000)));
        assert_eq!(vias[1].host.to_string(), "proxy.example.com");
        let route = via_routing(&vias[0]).unwrap();
        assert_eq!(route.rport, Some(61000));
    }

    #[test]
    fn received_only_when_host_differs_rfc3261_18_2_1() {
        let mut same = parse(&REQ.replace("{VIA}", "192.0.2.1:5060;branch=z9hG4bKa"));
        let v = stamp_received(&mut same, "192.0.2.1:5060".parse().unwrap()).unwrap();
        assert_eq!(v.received(), None);
        let mut nat = parse(&REQ.replace("{VIA}", "10.0.0.1:5060;branch=z9hG4bKa"));
        let v = stamp_received(&mut nat, "192.0.2.1:5060".parse().unwrap()).unwrap();
        assert_eq!(v.received(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(v.rport(), None);
        let mut name = parse(&REQ.replace("{VIA}", "pbx.example.com;branch=z9hG4bKa"));
        let v = stamp_received(&mut name, "[2001:db8::1]:5060".parse().unwrap()).unwrap();
        assert_eq!(v.received(), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn advertised_replaces_unspecified() {
        let a: SocketAddr = "0.0.0.0:5060".parse().unwrap();
        assert_eq!(advertised(a, None), "127.0.0.1:5060".parse().unwrap());
        assert_eq!(
            advertised(a, Some("192.0.2.5".parse().unwrap())),
            "192.0.2.5:5060".parse().unwrap()
        );
        let b: SocketAddr = "192.0.2.9:5070".parse().unwrap();
        assert_eq!(advertised(b, None), b);
    }
}
