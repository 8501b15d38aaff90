//! Stateful target: arbitrary sequences of messages, responses and timeouts fed to
//! the four transaction machines and a dialog. Nothing may panic and every machine
//! must stay bounded (no timer in the past after handling, terminated ones stay so).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use whatsip_sip::{
    InviteClientTxn, InviteServerTxn, NonInviteClientTxn, NonInviteServerTxn, ParseLimits,
    SipMessage, StatusCode, Tag, TimerConfig,
};

const INVITE: &[u8] = b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKf1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: f1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>\r\nContent-Length: 0\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Ok(SipMessage::Request(invite)) = SipMessage::parse(INVITE, &ParseLimits::default()) else {
        return;
    };
    let cfg = TimerConfig::default();
    let t0 = Instant::now();
    let mut now = t0;
    let reliable = data.first().is_some_and(|b| b & 1 == 1);
    let mut ict = InviteClientTxn::new(invite.clone(), reliable, &cfg, now);
    let mut ist = InviteServerTxn::new(invite.clone(), reliable, &cfg, now);
    let mut nict = NonInviteClientTxn::new(invite.cancel(), reliable, &cfg, now);
    let mut nist = NonInviteServerTxn::new(invite.cancel(), reliable, &cfg, now);
    let tag = Tag::new("t");
    for chunk in data.chunks(3).take(256) {
        let op = chunk.first().copied().unwrap_or(0);
        let arg = u16::from(chunk.get(1).copied().unwrap_or(0)) * 3
            + u16::from(chunk.get(2).copied().unwrap_or(0) % 3);
        let status = StatusCode::new(100 + arg % 600).unwrap_or(StatusCode::OK);
        match op % 8 {
            0 => {
                now += Duration::from_millis(u64::from(arg) * 37);
                ict.handle_timeout(now);
                ist.handle_timeout(now);
                nict.handle_timeout(now);
                nist.handle_timeout(now);
            }
            1 => {
                let _ = ict.handle_response(invite.response(status, Some(&tag)), now);
            }
            2 => {
                let _ = ist.send_response(invite.response(status, Some(&tag)), now);
            }
            3 => {
                let resp = invite.response(status, Some(&tag));
                let req = if op & 0x80 != 0 { invite.ack_for(&resp) } else { invite.clone() };
                ist.handle_request(req, now);
            }
            4 => {
                let cancel = invite.cancel();
                let _ = nict.handle_response(cancel.response(status, None), now);
            }
            5 => {
                let cancel = invite.cancel();
                let _ = nist.send_response(cancel.response(status, None), now);
                nist.handle_request(cancel, now);
            }
            6 => {
                let _ = ist.handle_cancel(&invite.cancel(), Some(&tag), now);
            }
            _ => {
                ict.handle_transport_error(now);
            }
        }
        while ict.poll_transmit().is_some() || ict.poll_event().is_some() {}
        while ist.poll_transmit().is_some() || ist.poll_event().is_some() {}
        while nict.poll_transmit().is_some() || nict.poll_event().is_some() {}
        while nist.poll_transmit().is_some() || nist.poll_event().is_some() {}
        for t in [ict.poll_timeout(), ist.poll_timeout(), nict.poll_timeout(), nist.poll_timeout()] {
            if let Some(t) = t {
                assert!(t > t0, "timers lie in the future of the start");
            }
        }
    }
});
