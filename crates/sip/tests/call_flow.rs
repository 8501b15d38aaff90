//! A whole call (INVITE / 200 / ACK / BYE / 200) between two stacks built from the
//! sans-IO cores, over the testkit's lossy, duplicating, reordering UDP network on a
//! virtual clock. It exercises together: the INVITE client transaction passing 2xx
//! retransmissions up (RFC 6026), the UAS dialog retransmitting its 2xx until the ACK
//! (RFC 3261 §13.3.1.4), the UAC dialog re-sending the same ACK for each 2xx
//! retransmission, and non-INVITE transactions carrying the BYE.

use std::time::{Duration, Instant};

use whatsip_sip::{
    Branch, Dialog, DialogEvent, Host, InviteClientTxn, InviteServerTxn, Method,
    NonInviteClientTxn, NonInviteServerTxn, ParseLimits, Request, SipMessage, StatusCode, Tag,
    TimerConfig, Transport, TxnEvent, TxnKey, Via,
};
use whatsip_testkit::{LinkConfig, Network, Node, NodeId, VirtualClock, run_until_idle};

const INVITE: &str = "INVITE sip:bob@192.0.2.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcall1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=alice\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: call-flow@192.0.2.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.1:5060>\r\n\
Content-Length: 0\r\n\r\n";

fn via(n: u32) -> Via {
    Via::new(
        Transport::Udp,
        Host::Ipv4("192.0.2.1".parse().expect("ip")),
        Some(5060),
        &Branch::new(format!("z9hG4bKuac{n}")),
    )
}

/// Round-trips through bytes, as the wire would.
fn wire(m: SipMessage) -> SipMessage {
    SipMessage::parse(&m.to_bytes(), &ParseLimits::default()).expect("own output parses")
}

struct Uac {
    peer: NodeId,
    cfg: TimerConfig,
    invite: Request,
    invite_txn: InviteClientTxn,
    dialog: Option<Dialog>,
    bye_txn: Option<NonInviteClientTxn>,
    bye_at: Option<Instant>,
    out: Vec<SipMessage>,
    ok_seen: u32,
    acks_sent: u32,
    bye_status: Option<u16>,
    timeouts: u32,
}

impl Uac {
    fn pump(&mut self, now: Instant) {
        while let Some(t) = self.invite_txn.poll_transmit() {
            self.out.push(t.message);
        }
        while let Some(ev) = self.invite_txn.poll_event() {
            match ev {
                TxnEvent::Final(r) if r.status.is_success() => self.on_2xx(r, now),
                TxnEvent::Timeout => self.timeouts += 1,
                _ => {}
            }
        }
        if let Some(b) = &mut self.bye_txn {
            while let Some(t) = b.poll_transmit() {
                self.out.push(t.message);
            }
            while let Some(ev) = b.poll_event() {
                match ev {
                    TxnEvent::Final(r) => self.bye_status = Some(r.status.as_u16()),
                    TxnEvent::Timeout => self.timeouts += 1,
                    _ => {}
                }
            }
        }
    }

    fn on_2xx(&mut self, r: whatsip_sip::Response, now: Instant) {
        self.ok_seen += 1;
        match &mut self.dialog {
            None => {
                let mut d =
                    Dialog::uac(&self.invite, &r, "<sip:alice@192.0.2.1>", false, &self.cfg)
                        .expect("2xx creates the dialog");
                let ack = d.create_ack(1, &via(100));
                self.out.push(SipMessage::Request(ack));
                self.acks_sent += 1;
                self.dialog = Some(d);
                self.bye_at = Some(now + Duration::from_secs(2));
            }
            Some(d) => {
                // a retransmitted 2xx: the same ACK again
                if let Some(ack) = d.ack_for_retransmission(&r) {
                    self.out.push(SipMessage::Request(ack.clone()));
                    self.acks_sent += 1;
                }
            }
        }
    }
}

impl Node<SipMessage> for Uac {
    fn handle_message(&mut self, _from: NodeId, msg: SipMessage, now: Instant) {
        let SipMessage::Response(r) = wire(msg) else {
            return;
        };
        match r.cseq().map(|c| c.method) {
            Some(Method::Invite) => {
                if self.invite_txn.is_terminated() {
                    // Timer M is over: 2xx retransmissions go straight to the dialog.
                    if r.status.is_success() {
                        self.on_2xx(r, now);
                    }
                } else {
                    let _ = self.invite_txn.handle_response(r, now);
                }
            }
            Some(Method::Bye) => {
                if let Some(b) = &mut self.bye_txn {
                    let _ = b.handle_response(r, now);
                }
            }
            _ => {}
        }
        self.pump(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.invite_txn.poll_timeout(),
            self.bye_txn.as_ref().and_then(|b| b.poll_timeout()),
            self.bye_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.invite_txn.handle_timeout(now);
        if let Some(b) = &mut self.bye_txn {
            b.handle_timeout(now);
        }
        if self.bye_at.is_some_and(|t| t <= now) {
            self.bye_at = None;
            if let Some(d) = &mut self.dialog {
                let bye = d.create_request(Method::Bye, &via(200));
                self.bye_txn = Some(NonInviteClientTxn::new(bye, false, &self.cfg, now));
            }
        }
        self.pump(now);
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, SipMessage)> {
        self.out.pop().map(|m| (self.peer, m))
    }
}

struct Uas {
    peer: NodeId,
    cfg: TimerConfig,
    invite_txn: Option<InviteServerTxn>,
    dialog: Option<Dialog>,
    bye_txn: Option<NonInviteServerTxn>,
    out: Vec<SipMessage>,
    invites: u32,
    acks_received: u32,
    ack_timeouts: u32,
    byes: u32,
}

impl Uas {
    fn pump(&mut self, now: Instant) {
        if let Some(t) = &mut self.invite_txn {
            while let Some(x) = t.poll_transmit() {
                self.out.push(x.message);
            }
            while t.poll_event().is_some() {}
        }
        let mut bye_to_answer = None;
        if let Some(d) = &mut self.dialog {
            while let Some(x) = d.poll_transmit() {
                self.out.push(x.message);
            }
            while let Some(ev) = d.poll_event() {
                match ev {
                    DialogEvent::AckReceived(_) => self.acks_received += 1,
                    DialogEvent::AckTimeout => self.ack_timeouts += 1,
                    DialogEvent::Bye(b) => {
                        self.byes += 1;
                        bye_to_answer = Some(b);
                    }
                    _ => {}
                }
            }
        }
        if let (Some(b), Some(t)) = (bye_to_answer, &mut self.bye_txn) {
            t.send_response(b.response(StatusCode::OK, None), now)
                .expect("first answer to the BYE");
        }
        if let Some(t) = &mut self.bye_txn {
            while let Some(x) = t.poll_transmit() {
                self.out.push(x.message);
            }
        }
    }
}

impl Node<SipMessage> for Uas {
    fn handle_message(&mut self, _from: NodeId, msg: SipMessage, now: Instant) {
        let SipMessage::Request(req) = wire(msg) else {
            return;
        };
        let key = TxnKey::server(&req);
        match req.method {
            Method::Invite | Method::Ack
                if self.invite_txn.as_ref().and_then(|t| t.key()) == key.as_ref()
                    && key.is_some() =>
            {
                if let Some(t) = &mut self.invite_txn {
                    t.handle_request(req, now);
                }
            }
            Method::Invite if self.invite_txn.is_none() => {
                self.invites += 1;
                let tag = Tag::new("bob");
                let mut ok = req.response(StatusCode::OK, Some(&tag));
                ok.headers.push("Contact", "<sip:bob@192.0.2.2:5060>");
                let mut txn = InviteServerTxn::new(req.clone(), false, &self.cfg, now);
                txn.send_response(ok.clone(), now)
                    .expect("200 from Proceeding");
                let mut d = Dialog::uas(&req, &ok, "<sip:bob@192.0.2.2>", false, &self.cfg)
                    .expect("dialog");
                d.start_2xx_retransmission(ok, now);
                self.invite_txn = Some(txn);
                self.dialog = Some(d);
            }
            Method::Bye
                if self.bye_txn.as_ref().and_then(|t| t.key()) == key.as_ref() && key.is_some() =>
            {
                if let Some(t) = &mut self.bye_txn {
                    t.handle_request(req, now);
                }
            }
            Method::Ack | Method::Bye => {
                if req.method == Method::Bye {
                    self.bye_txn =
                        Some(NonInviteServerTxn::new(req.clone(), false, &self.cfg, now));
                }
                if let Some(d) = &mut self.dialog {
                    let _ = d.handle_request(req, now);
                }
            }
            _ => {}
        }
        self.pump(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.invite_txn.as_ref().and_then(|t| t.poll_timeout()),
            self.dialog.as_ref().and_then(|d| d.poll_timeout()),
            self.bye_txn.as_ref().and_then(|t| t.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
    fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = &mut self.invite_txn {
            t.handle_timeout(now);
        }
        if let Some(d) = &mut self.dialog {
            d.handle_timeout(now);
        }
        if let Some(t) = &mut self.bye_txn {
            t.handle_timeout(now);
        }
        self.pump(now);
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, SipMessage)> {
        self.out.pop().map(|m| (self.peer, m))
    }
}

#[test]
fn full_call_survives_lossy_reordering_udp_with_2xx_retransmitted_until_ack() {
    let link = LinkConfig::perfect()
        .with_loss(0.25)
        .with_duplicate(0.1)
        .with_jitter(Duration::from_millis(5), Duration::from_millis(150));
    let SipMessage::Request(invite) =
        SipMessage::parse(INVITE.as_bytes(), &ParseLimits::default()).expect("INVITE")
    else {
        panic!("request")
    };
    let mut ok_retransmitted = 0;
    let mut acked = 0;
    for seed in 0..30u64 {
        let cfg = TimerConfig::default();
        let mut clock = VirtualClock::new();
        let mut net = Network::new(seed, link.clone());
        let mut uac = Uac {
            peer: NodeId(1),
            cfg: cfg.clone(),
            invite: invite.clone(),
            invite_txn: InviteClientTxn::new(invite.clone(), false, &cfg, clock.now()),
            dialog: None,
            bye_txn: None,
            bye_at: None,
            out: Vec::new(),
            ok_seen: 0,
            acks_sent: 0,
            bye_status: None,
            timeouts: 0,
        };
        uac.pump(clock.now());
        let mut uas = Uas {
            peer: NodeId(0),
            cfg: cfg.clone(),
            invite_txn: None,
            dialog: None,
            bye_txn: None,
            out: Vec::new(),
            invites: 0,
            acks_received: 0,
            ack_timeouts: 0,
            byes: 0,
        };
        let until = clock.at(300.0);
        let report = run_until_idle(
            &mut clock,
            &mut net,
            &mut [&mut uac, &mut uas],
            until,
            20_000,
        );
        assert!(report.idle, "seed {seed}: everything settles");
        assert_eq!(uac.timeouts, 0, "seed {seed}");
        assert_eq!(
            uas.invites, 1,
            "seed {seed}: one INVITE transaction at the UAS"
        );
        assert_eq!(uas.ack_timeouts, 0, "seed {seed}: an ACK got through");
        // The ACK stops the 2xx retransmission; if every ACK copy was lost, the BYE
        // (which proves the 2xx arrived) stops it instead.
        assert!(uas.acks_received <= 1, "seed {seed}: one AckReceived");
        if uas.acks_received == 1 {
            acked += 1;
        }
        assert_eq!(
            uac.acks_sent, uac.ok_seen,
            "seed {seed}: one ACK per 2xx received"
        );
        assert_eq!(uac.bye_status, Some(200), "seed {seed}: BYE answered");
        assert_eq!(uas.byes, 1, "seed {seed}: BYE retransmissions absorbed");
        let (a, b) = (
            uac.dialog.as_ref().expect("uac dialog"),
            uas.dialog.as_ref().expect("uas dialog"),
        );
        assert!(a.is_terminated() && b.is_terminated(), "seed {seed}");
        assert!(
            !b.is_awaiting_ack(),
            "seed {seed}: 2xx retransmission stopped"
        );
        assert_eq!(a.id().local_tag, b.id().remote_tag);
        assert_eq!(a.id().remote_tag, b.id().local_tag);
        if uac.ok_seen > 1 {
            ok_retransmitted += 1;
        }
    }
    assert!(ok_retransmitted > 0, "some runs saw a retransmitted 2xx");
    assert!(
        acked > 20,
        "most runs stopped the 2xx with the ACK ({acked}/30)"
    );
}
