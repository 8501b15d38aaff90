//! A small UAS on `Endpoint`, used by the SIPp tests and the `test_uas` example.
//!
//! The Request-URI user chooses what happens to an INVITE:
//! `busy` → 486; `ring` → 180 and wait (for CANCEL); `slow` → 180, 200 after 300 ms;
//! anything else → 180 then 200 with SDP. BYE, and any other in-dialog request, get 200.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use whatsip_sip::endpoint::{Endpoint, EndpointEvent};
use whatsip_sip::transport::TransportKind;
use whatsip_sip::{HeaderName, Method, StatusCode};

/// What the UAS saw.
#[derive(Debug, Default, Clone)]
pub struct UasStats {
    pub invites: u64,
    pub answered: u64,
    pub busy: u64,
    pub cancelled: u64,
    pub acks: u64,
    pub byes: u64,
    pub other: u64,
    pub ack_timeouts: u64,
}

/// Serves requests until the event stream ends.
pub async fn run_uas(
    ep: Endpoint,
    mut events: mpsc::Receiver<EndpointEvent>,
    stats: Arc<Mutex<UasStats>>,
) {
    while let Some(ev) = events.recv().await {
        let bump = |f: fn(&mut UasStats)| {
            if let Ok(mut s) = stats.lock() {
                f(&mut s);
            }
        };
        match ev {
            EndpointEvent::Request(inc) => {
                let req = inc.request;
                match req.method {
                    Method::Invite if inc.dialog.is_none() => {
                        bump(|s| s.invites += 1);
                        let user = req
                            .uri
                            .as_sip()
                            .and_then(|u| u.user.clone())
                            .unwrap_or_default();
                        let ep = ep.clone();
                        let stats = stats.clone();
                        tokio::spawn(async move {
                            answer(ep, inc.id, req, inc.kind, inc.source, &user, stats).await;
                        });
                    }
                    Method::Bye => {
                        bump(|s| s.byes += 1);
                        let _ = ep.respond(inc.id, req.response(StatusCode::OK, None)).await;
                    }
                    _ => {
                        bump(|s| s.other += 1);
                        let _ = ep.respond(inc.id, req.response(StatusCode::OK, None)).await;
                    }
                }
            }
            EndpointEvent::Cancelled { .. } => bump(|s| s.cancelled += 1),
            EndpointEvent::Ack { .. } => bump(|s| s.acks += 1),
            EndpointEvent::AckTimeout { .. } => bump(|s| s.ack_timeouts += 1),
            _ => {}
        }
    }
}

async fn answer(
    ep: Endpoint,
    id: whatsip_sip::endpoint::ServerTxnId,
    req: whatsip_sip::Request,
    kind: TransportKind,
    source: std::net::SocketAddr,
    user: &str,
    stats: Arc<Mutex<UasStats>>,
) {
    if user == "busy" {
        let _ = ep
            .respond(id, req.response(StatusCode::BUSY_HERE, None))
            .await;
        if let Ok(mut s) = stats.lock() {
            s.busy += 1;
        }
        return;
    }
    let _ = ep
        .respond(id, req.response(StatusCode::RINGING, None))
        .await;
    match user {
        "ring" => return,
        "slow" => tokio::time::sleep(Duration::from_millis(300)).await,
        _ => {}
    }
    let Some(local) = ep.local_addr(kind, source) else {
        return;
    };
    let mut ok = req.response(StatusCode::OK, None);
    let transport = match kind {
        TransportKind::Udp => String::new(),
        other => format!(";transport={}", other.as_str().to_ascii_lowercase()),
    };
    ok.headers
        .push(HeaderName::CONTACT, format!("<sip:uas@{local}{transport}>"));
    ok.set_body("application/sdp", super::sdp(local));
    // Fails only if a CANCEL won the race (487 already sent): that is fine.
    if ep.respond(id, ok).await.is_ok()
        && let Ok(mut s) = stats.lock()
    {
        s.answered += 1;
    }
}
