//! Virtual-clock tests, one per RFC rule, named after it.

use std::time::Instant;

use whatsip_testkit::{LinkConfig, Network, Node, NodeId, VirtualClock, run_until_idle};

use super::*;
use crate::message::{ParseLimits, StatusCode, Tag};

fn request(method: &str, branch: &str) -> Request {
    let raw = format!(
        "{method} sip:bob@192.0.2.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=alice1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: txn-test@192.0.2.1\r\n\
CSeq: 1 {method}\r\n\
Content-Length: 0\r\n\r\n"
    );
    match SipMessage::parse(raw.as_bytes(), &ParseLimits::default()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn invite() -> Request {
    request("INVITE", "z9hG4bKinv1")
}

fn drain(poll: impl FnMut() -> Option<Transmit>) -> Vec<Transmit> {
    std::iter::from_fn(poll).collect()
}

fn statuses(t: &[Transmit]) -> Vec<u16> {
    t.iter()
        .filter_map(|t| match &t.message {
            SipMessage::Response(r) => Some(r.status.as_u16()),
            SipMessage::Request(_) => None,
        })
        .collect()
}

fn methods(t: &[Transmit]) -> Vec<String> {
    t.iter()
        .filter_map(|t| match &t.message {
            SipMessage::Request(r) => Some(r.method.to_string()),
            SipMessage::Response(_) => None,
        })
        .collect()
}

/// Runs a single core alone: fires its timers in order up to `until` and records at
/// which virtual second each transmit left. Returns (secs, transmit) pairs.
macro_rules! run_alone {
    ($clock:expr, $txn:expr, $until:expr) => {{
        let mut out = Vec::new();
        for _ in 0..1000 {
            for t in drain(|| $txn.poll_transmit()) {
                out.push(($clock.secs($clock.now()), t));
            }
            match $txn.poll_timeout() {
                Some(at) if at <= $until => {
                    $clock.advance_to(at);
                    $txn.handle_timeout($clock.now());
                }
                _ => break,
            }
        }
        out
    }};
}

fn secs(v: &[(f64, Transmit)]) -> Vec<f64> {
    v.iter()
        .map(|(s, _)| (s * 1000.0).round() / 1000.0)
        .collect()
}

#[test]
fn invite_server_udp_486_retransmits_until_ack() {
    let mut clock = VirtualClock::new();
    let cfg = TimerConfig::default();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv.clone(), false, &cfg, clock.now());
    assert_eq!(statuses(&drain(|| txn.poll_transmit())), vec![100]);
    let busy = inv.response(StatusCode::BUSY_HERE, Some(&Tag::new("bob1")));
    txn.send_response(busy.clone(), clock.now()).unwrap();
    assert_eq!(txn.state_name(), "Completed");
    let sent = run_alone!(clock, txn, clock.at(3.9));
    assert_eq!(secs(&sent), vec![0.0, 0.5, 1.5, 3.5]);
    assert!(
        sent.iter()
            .all(|(_, t)| t.message == SipMessage::Response(busy.clone()))
    );
    clock.advance_to(clock.at(4.0));
    txn.handle_timeout(clock.now());
    txn.handle_request(inv.ack_for(&busy), clock.now());
    assert_eq!(txn.state_name(), "Confirmed");
    assert!(drain(|| txn.poll_transmit()).is_empty());
    // Timer I = T4 = 5 s: ACK retransmits absorbed until 9 s, then Terminated.
    assert_eq!(clock.secs(txn.poll_timeout().unwrap()), 9.0);
    clock.advance_to(clock.at(8.9));
    txn.handle_request(inv.ack_for(&busy), clock.now());
    txn.handle_timeout(clock.now());
    assert!(!txn.is_terminated());
    clock.advance_to(clock.at(9.0));
    txn.handle_timeout(clock.now());
    assert!(txn.is_terminated());
    assert_eq!(txn.poll_event(), None);
}

#[test]
fn invite_server_tcp_486_sent_once_and_ack_terminates() {
    let mut clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv.clone(), true, &TimerConfig::default(), clock.now());
    let busy = inv.response(StatusCode::BUSY_HERE, Some(&Tag::new("bob1")));
    txn.send_response(busy.clone(), clock.now()).unwrap();
    let sent = run_alone!(clock, txn, clock.at(20.0));
    assert_eq!(
        statuses(&sent.into_iter().map(|(_, t)| t).collect::<Vec<_>>()),
        vec![100, 486]
    );
    txn.handle_request(inv.ack_for(&busy), clock.now());
    assert!(txn.is_terminated(), "Timer I is 0 on reliable transports");
}

#[test]
fn invite_server_timer_h_reports_missing_ack_after_64_t1() {
    let mut clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    txn.send_response(
        inv.response(StatusCode::DECLINE, Some(&Tag::new("b"))),
        clock.now(),
    )
    .unwrap();
    let sent = run_alone!(clock, txn, clock.at(40.0));
    // G doubles to T2 = 4 s: 0, .5, 1.5, 3.5, 7.5, 11.5, ... until H at 32 s.
    assert_eq!(
        secs(&sent),
        vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert!(txn.is_terminated());
    assert_eq!(clock.secs(clock.now()), 32.0);
    assert_eq!(txn.poll_event(), Some(TxnEvent::AckTimeout));
}

#[test]
fn invite_server_2xx_accepted_absorbs_retransmits_until_timer_l() {
    let mut clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    let ok = inv.response(StatusCode::OK, Some(&Tag::new("b")));
    txn.send_response(ok.clone(), clock.now()).unwrap();
    assert_eq!(txn.state_name(), "Accepted");
    assert_eq!(statuses(&drain(|| txn.poll_transmit())), vec![200]);
    clock.advance_to(clock.at(1.0));
    txn.handle_request(inv.clone(), clock.now());
    assert!(
        drain(|| txn.poll_transmit()).is_empty(),
        "INVITE retransmit absorbed"
    );
    // the TU (dialog) retransmits its 2xx through the transaction
    txn.send_response(ok.clone(), clock.now()).unwrap();
    assert_eq!(statuses(&drain(|| txn.poll_transmit())), vec![200]);
    // a non-2xx after a 2xx is a TU bug
    assert!(
        txn.send_response(inv.response(StatusCode::BUSY_HERE, None), clock.now())
            .is_err()
    );
    let ack = request("ACK", "z9hG4bKinv1");
    txn.handle_request(ack.clone(), clock.now());
    assert_eq!(txn.poll_event(), Some(TxnEvent::Ack(ack)));
    assert_eq!(clock.secs(txn.poll_timeout().unwrap()), 32.0);
    clock.advance_to(clock.at(32.0));
    txn.handle_timeout(clock.now());
    assert!(txn.is_terminated());
}

#[test]
fn invite_server_resends_last_provisional_on_invite_retransmit() {
    let clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    assert_eq!(statuses(&drain(|| txn.poll_transmit())), vec![100]);
    txn.handle_request(inv.clone(), clock.now());
    assert_eq!(statuses(&drain(|| txn.poll_transmit())), vec![100]);
    txn.send_response(
        inv.response(StatusCode::RINGING, Some(&Tag::new("b"))),
        clock.now(),
    )
    .unwrap();
    drain(|| txn.poll_transmit());
    txn.handle_request(inv, clock.now());
    let again = drain(|| txn.poll_transmit());
    assert_eq!(statuses(&again), vec![180]);
    assert!(again[0].retransmission);
}

#[test]
fn invite_server_stray_ack_in_proceeding_is_dropped() {
    let clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv, false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    txn.handle_request(request("ACK", "z9hG4bKinv1"), clock.now());
    assert_eq!(txn.state_name(), "Proceeding");
    assert!(drain(|| txn.poll_transmit()).is_empty());
    assert_eq!(txn.poll_event(), None);
}

#[test]
fn cancel_before_final_sends_487_for_invite_and_200_for_cancel() {
    let clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    let cancel = inv.cancel();
    assert_eq!(TxnKey::cancel_target(&cancel).as_ref(), txn.key());
    assert_ne!(TxnKey::server(&cancel).as_ref(), txn.key());
    let tag = Tag::new("b");
    let ok = txn.handle_cancel(&cancel, Some(&tag), clock.now());
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.cseq().unwrap().method, Method::Cancel);
    let sent = drain(|| txn.poll_transmit());
    assert_eq!(statuses(&sent), vec![487]);
    assert_eq!(txn.state_name(), "Completed");
}

#[test]
fn cancel_after_final_only_gets_200() {
    let clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteServerTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    txn.send_response(
        inv.response(StatusCode::OK, Some(&Tag::new("b"))),
        clock.now(),
    )
    .unwrap();
    drain(|| txn.poll_transmit());
    let ok = txn.handle_cancel(&inv.cancel(), None, clock.now());
    assert_eq!(ok.status, StatusCode::OK);
    assert!(drain(|| txn.poll_transmit()).is_empty());
    assert_eq!(txn.state_name(), "Accepted");
}

#[test]
fn cancel_for_unknown_transaction_gets_481() {
    let cancel = invite().cancel();
    assert_eq!(cancel_unknown_response(&cancel).status.as_u16(), 481);
}

#[test]
fn invite_client_udp_timer_a_doubles_until_timer_b() {
    let mut clock = VirtualClock::new();
    let mut txn = InviteClientTxn::new(invite(), false, &TimerConfig::default(), clock.now());
    let sent = run_alone!(clock, txn, clock.at(60.0));
    assert_eq!(secs(&sent), vec![0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    assert!(
        methods(&sent.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>())
            .iter()
            .all(|m| m == "INVITE")
    );
    assert_eq!(clock.secs(clock.now()), 32.0);
    assert!(txn.is_terminated());
    assert_eq!(txn.poll_event(), Some(TxnEvent::Timeout));
}

#[test]
fn invite_client_tcp_sends_once_and_times_out_at_timer_b() {
    let mut clock = VirtualClock::new();
    let mut txn = InviteClientTxn::new(invite(), true, &TimerConfig::default(), clock.now());
    let sent = run_alone!(clock, txn, clock.at(60.0));
    assert_eq!(secs(&sent), vec![0.0]);
    assert_eq!(txn.poll_event(), Some(TxnEvent::Timeout));
}

#[test]
fn invite_client_provisional_stops_retransmission_and_allows_cancel() {
    let mut clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteClientTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    assert!(!txn.can_cancel(), "no CANCEL before a provisional (§9.1)");
    drain(|| txn.poll_transmit());
    clock.advance_to(clock.at(0.2));
    let ringing = inv.response(StatusCode::RINGING, Some(&Tag::new("b")));
    txn.handle_response(ringing.clone(), clock.now()).unwrap();
    assert!(txn.can_cancel());
    assert_eq!(txn.poll_event(), Some(TxnEvent::Provisional(ringing)));
    let sent = run_alone!(clock, txn, clock.at(100.0));
    assert!(sent.is_empty(), "no retransmission once Proceeding");
    assert!(!txn.is_terminated(), "Timer B does not apply in Proceeding");
}

#[test]
fn invite_client_timer_c_asks_tu_to_cancel() {
    let mut clock = VirtualClock::new();
    let inv = invite();
    let cfg = TimerConfig::default();
    let mut txn = InviteClientTxn::new(inv.clone(), false, &cfg, clock.now());
    txn.handle_response(inv.response(StatusCode::RINGING, None), clock.now())
        .unwrap();
    let _ = txn.poll_event();
    let until = clock.now() + cfg.timer_c;
    run_alone!(clock, txn, until);
    assert_eq!(txn.poll_event(), Some(TxnEvent::TimerC));
}

#[test]
fn invite_client_non_2xx_is_acked_in_transaction_and_reacked_on_retransmit() {
    let mut clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteClientTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    let busy = inv.response(StatusCode::BUSY_HERE, Some(&Tag::new("b")));
    txn.handle_response(busy.clone(), clock.now()).unwrap();
    assert_eq!(txn.poll_event(), Some(TxnEvent::Final(busy.clone())));
    let acks = drain(|| txn.poll_transmit());
    assert_eq!(methods(&acks), vec!["ACK"]);
    let SipMessage::Request(ack) = &acks[0].message else {
        unreachable!()
    };
    assert_eq!(
        ack.branch(),
        inv.branch(),
        "ACK for non-2xx reuses the branch"
    );
    assert_eq!(ack.to_tag().unwrap().as_str(), "b");
    clock.advance_to(clock.at(1.0));
    txn.handle_response(busy.clone(), clock.now()).unwrap();
    assert_eq!(methods(&drain(|| txn.poll_transmit())), vec!["ACK"]);
    assert_eq!(txn.poll_event(), None, "retransmitted final not passed up");
    assert_eq!(
        clock.secs(txn.poll_timeout().unwrap()),
        32.0,
        "Timer D 32 s"
    );
    clock.advance_to(clock.at(32.0));
    txn.handle_timeout(clock.now());
    assert!(txn.is_terminated());
}

#[test]
fn invite_client_2xx_retransmits_reach_tu_until_timer_m() {
    let mut clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteClientTxn::new(inv.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    let ok = inv.response(StatusCode::OK, Some(&Tag::new("b")));
    txn.handle_response(ok.clone(), clock.now()).unwrap();
    assert_eq!(txn.state_name(), "Accepted");
    assert!(
        drain(|| txn.poll_transmit()).is_empty(),
        "2xx ACK belongs to the dialog"
    );
    clock.advance_to(clock.at(0.5));
    txn.handle_response(ok.clone(), clock.now()).unwrap();
    assert_eq!(txn.poll_event(), Some(TxnEvent::Final(ok.clone())));
    assert_eq!(txn.poll_event(), Some(TxnEvent::Final(ok)));
    clock.advance_to(clock.at(32.0));
    txn.handle_timeout(clock.now());
    assert!(txn.is_terminated());
}

#[test]
fn client_rejects_responses_of_other_transactions() {
    let clock = VirtualClock::new();
    let inv = invite();
    let mut txn = InviteClientTxn::new(inv, false, &TimerConfig::default(), clock.now());
    let other = request("INVITE", "z9hG4bKother");
    assert_eq!(
        txn.handle_response(other.response(StatusCode::OK, None), clock.now()),
        Err(TxnError::Mismatch)
    );
}

#[test]
fn non_invite_client_timer_e_caps_at_t2_until_timer_f() {
    let mut clock = VirtualClock::new();
    let mut txn = NonInviteClientTxn::new(
        request("OPTIONS", "z9hG4bKo1"),
        false,
        &TimerConfig::default(),
        clock.now(),
    );
    let sent = run_alone!(clock, txn, clock.at(60.0));
    assert_eq!(
        secs(&sent),
        vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(txn.poll_event(), Some(TxnEvent::Timeout));
    assert_eq!(clock.secs(clock.now()), 32.0);
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2() {
    let mut clock = VirtualClock::new();
    let req = request("BYE", "z9hG4bKb1");
    let mut txn = NonInviteClientTxn::new(req.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    clock.advance_to(clock.at(0.1));
    txn.handle_response(req.response(StatusCode::TRYING, None), clock.now())
        .unwrap();
    let sent = run_alone!(clock, txn, clock.at(13.0));
    // E fires at 0.5 (now Proceeding: next in T2), 4.5, 8.5, 12.5
    assert_eq!(secs(&sent), vec![0.5, 4.5, 8.5, 12.5]);
}

#[test]
fn non_invite_client_final_then_timer_k_absorbs_retransmits() {
    let mut clock = VirtualClock::new();
    let req = request("BYE", "z9hG4bKb1");
    let mut txn = NonInviteClientTxn::new(req.clone(), false, &TimerConfig::default(), clock.now());
    drain(|| txn.poll_transmit());
    let ok = req.response(StatusCode::OK, None);
    txn.handle_response(ok.clone(), clock.now()).unwrap();
    assert_eq!(txn.poll_event(), Some(TxnEvent::Final(ok.clone())));
    txn.handle_response(ok, clock.now()).unwrap();
    assert_eq!(txn.poll_event(), None);
    assert_eq!(clock.secs(txn.poll_timeout().unwrap()), 5.0, "Timer K = T4");
    clock.advance_to(clock.at(5.0));
    txn.handle_timeout(clock.now());
    assert!(txn.is_terminated());
}

#[test]
fn non_invite_server_absorbs_in_trying_and_replays_final_until_timer_j() {
    let mut clock = VirtualClock::new();
    let req = request("OPTIONS", "z9hG4bKo2");
    let mut txn = NonInviteServerTxn::new(req.clone(), false, &TimerConfig::default(), clock.now());
    txn.handle_request(req.clone(), clock.now());
    assert!(
        drain(|| txn.poll_transmit()).is_empty(),
        "absorbed in Trying"
    );
    txn.send_response(
        req.response(StatusCode::OK, Some(&Tag::new("t"))),
        clock.now(),
    )
    .unwrap();
    assert_eq!(statuses(&drain(|| txn.poll_transmit())), vec![200]);
    clock.advance_to(clock.at(10.0));
    txn.handle_request(req.clone(), clock.now());
    assert_eq!(statuses(&drain(|| txn.poll_transmit())), vec![200]);
    assert!(
        txn.send_response(req.response(StatusCode::OK, None), clock.now())
            .is_err()
    );
    assert_eq!(
        clock.secs(txn.poll_timeout().unwrap()),
        32.0,
        "Timer J = 64*T1"
    );
    clock.advance_to(clock.at(32.0));
    txn.handle_timeout(clock.now());
    assert!(txn.is_terminated());
}

#[test]
fn non_invite_server_reliable_terminates_on_final() {
    let clock = VirtualClock::new();
    let req = request("OPTIONS", "z9hG4bKo2");
    let mut txn = NonInviteServerTxn::new(req.clone(), true, &TimerConfig::default(), clock.now());
    txn.send_response(req.response(StatusCode::OK, None), clock.now())
        .unwrap();
    assert!(txn.is_terminated());
}

#[test]
fn server_keys_match_ack_for_non_2xx_but_not_2xx_ack_or_other_sent_by() {
    let inv = invite();
    let key = TxnKey::server(&inv).unwrap();
    let busy = inv.response(StatusCode::BUSY_HERE, Some(&Tag::new("b")));
    assert_eq!(TxnKey::server(&inv.ack_for(&busy)).unwrap(), key);
    assert_ne!(TxnKey::server(&request("ACK", "z9hG4bKnew")).unwrap(), key);
    let mut moved = inv.clone();
    moved.headers.set(
        crate::message::HeaderName::VIA,
        "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKinv1",
    );
    assert_ne!(
        TxnKey::server(&moved).unwrap(),
        key,
        "sent-by is part of the key"
    );
    // client side: branch + CSeq method
    let ck = TxnKey::client(&inv).unwrap();
    assert_eq!(TxnKey::for_response(&busy).unwrap(), ck);
    let cancel = inv.cancel();
    assert_ne!(TxnKey::client(&cancel).unwrap(), ck);
    assert_eq!(
        TxnKey::for_response(&cancel.response(StatusCode::OK, None)).unwrap(),
        TxnKey::client(&cancel).unwrap()
    );
}

#[test]
fn rfc2543_requests_without_cookie_still_get_a_key() {
    let old = request("INVITE", "1234");
    let key = TxnKey::server(&old).unwrap();
    let busy = old.response(StatusCode::BUSY_HERE, Some(&Tag::new("b")));
    assert_eq!(TxnKey::server(&old.ack_for(&busy)).unwrap(), key);
}

// ---- lossy UDP through the testkit network ----

struct Uac {
    peer: NodeId,
    txn: InviteClientTxn,
    finals: Vec<u16>,
    timeouts: u32,
}

impl Node<SipMessage> for Uac {
    fn handle_message(&mut self, _from: NodeId, msg: SipMessage, now: Instant) {
        if let SipMessage::Response(r) = msg {
            let _ = self.txn.handle_response(r, now);
        }
        while let Some(ev) = self.txn.poll_event() {
            match ev {
                TxnEvent::Final(r) => self.finals.push(r.status.as_u16()),
                TxnEvent::Timeout => self.timeouts += 1,
                _ => {}
            }
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.txn.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.txn.handle_timeout(now);
        while let Some(ev) = self.txn.poll_event() {
            if ev == TxnEvent::Timeout {
                self.timeouts += 1;
            }
        }
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, SipMessage)> {
        self.txn.poll_transmit().map(|t| (self.peer, t.message))
    }
}

struct Uas {
    peer: NodeId,
    txn: Option<InviteServerTxn>,
    invites_seen: u32,
    ack_timeouts: u32,
}

impl Node<SipMessage> for Uas {
    fn handle_message(&mut self, _from: NodeId, msg: SipMessage, now: Instant) {
        let SipMessage::Request(req) = msg else {
            return;
        };
        match &mut self.txn {
            Some(txn) => txn.handle_request(req, now),
            None if req.method == Method::Invite => {
                self.invites_seen += 1;
                let busy = req.response(StatusCode::BUSY_HERE, Some(&Tag::new("uas")));
                let mut txn = InviteServerTxn::new(req, false, &TimerConfig::default(), now);
                txn.send_response(busy, now).unwrap();
                self.txn = Some(txn);
            }
            None => {}
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.txn.as_ref().and_then(|t| t.poll_timeout())
    }
    fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = &mut self.txn {
            t.handle_timeout(now);
            while let Some(ev) = t.poll_event() {
                if ev == TxnEvent::AckTimeout {
                    self.ack_timeouts += 1;
                }
            }
        }
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, SipMessage)> {
        let peer = self.peer;
        self.txn
            .as_mut()
            .and_then(|t| t.poll_transmit())
            .map(|t| (peer, t.message))
    }
}

#[test]
fn invite_486_completes_over_lossy_reordering_udp() {
    let link = LinkConfig::perfect()
        .with_loss(0.3)
        .with_duplicate(0.1)
        .with_jitter(
            std::time::Duration::from_millis(5),
            std::time::Duration::from_millis(120),
        );
    let mut lost_total = 0;
    for seed in 0..25u64 {
        let mut clock = VirtualClock::new();
        let mut net = Network::new(seed, link.clone());
        let mut uac = Uac {
            peer: NodeId(1),
            txn: InviteClientTxn::new(invite(), false, &TimerConfig::default(), clock.now()),
            finals: vec![],
            timeouts: 0,
        };
        let mut uas = Uas {
            peer: NodeId(0),
            txn: None,
            invites_seen: 0,
            ack_timeouts: 0,
        };
        let until = clock.at(120.0);
        let report = run_until_idle(
            &mut clock,
            &mut net,
            &mut [&mut uac, &mut uas],
            until,
            10_000,
        );
        // Timer C stays armed on the client after a 1xx-less exchange; everything
        // else must be over.
        assert!(report.idle || uac.txn.is_terminated(), "seed {seed}");
        assert_eq!(uac.finals, vec![486], "seed {seed}: final delivered once");
        assert_eq!(uac.timeouts, 0, "seed {seed}");
        assert_eq!(uas.invites_seen, 1, "seed {seed}");
        assert_eq!(uas.ack_timeouts, 0, "seed {seed}: ACK got through");
        assert!(uas.txn.as_ref().unwrap().is_terminated(), "seed {seed}");
        assert!(uac.txn.is_terminated(), "seed {seed}");
        lost_total += net.stats().lost;
    }
    assert!(
        lost_total > 20,
        "the network really lost messages ({lost_total})"
    );
}
