//! Stable fuzz smoke run (CI): 200 000 inputs (50 000 in a debug build, where each
//! costs ~40x more) mutated from a seed corpus by a seeded
//! RNG go through the parser, the stream framer and the 400 builder; none may panic,
//! and every message that parses must print to bytes that parse back and print the
//! same. A second loop drives the transaction machines with random inputs.
//!
//! The real fuzzer lives in `crates/sip/fuzz` (`cargo +nightly fuzz run
//! parse_message`). `WHATSIP_FUZZ_ITERS` overrides the iteration count, e.g.
//! `WHATSIP_FUZZ_ITERS=2000000 cargo test --release -p whatsip-sip --test fuzz_smoke`.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whatsip_sip::{
    Branch, Dialog, Host, InviteClientTxn, InviteServerTxn, Method, NonInviteClientTxn,
    NonInviteServerTxn, ParseLimits, SipMessage, StatusCode, Tag, TimerConfig, Transport, Via,
    error_response, stream_frame,
};
use whatsip_testkit::VirtualClock;

const CORPUS: &[&str] = &[
    include_str!("../fuzz/corpus/parse_message/invite_sdp"),
    include_str!("../fuzz/corpus/parse_message/ok_response"),
    include_str!("../fuzz/corpus/parse_message/compact_folded"),
    "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\nTO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\nfrom   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\nMaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\nContent-Length   : 0\r\ncseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\ns :\r\nv:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\nm:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33\r\n\r\n",
    "OPTIONS sip:[2001:db8::10]:5070;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bKv6;received=2001:db8::99\r\nFrom: <tel:+15550000000>;tag=x\r\nTo: <sip:[2001:db8::10]>\r\nCall-ID: v6@[2001:db8::9]\r\nCSeq: 7 OPTIONS\r\nRoute: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
];

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b"=",
    b"\"",
    b"\\",
    b"<",
    b">",
    b"[",
    b"]",
    b"%",
    b"%0",
    b"@",
    b" ",
    b"\t",
    b"/",
    b"?",
    b"Via: ",
    b"SIP/2.0",
    b"z9hG4bK",
    b"Content-Length: 99999\r\n",
    b";tag=",
    b"sip:",
    b"tel:+1",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"99999999999999999999",
];

fn mutate(rng: &mut ChaCha8Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = v.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                v.splice(i..i, t.iter().copied());
            }
            3 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..=len.min(a + 64));
                v.drain(a..b);
            }
            4 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..=len.min(a + 64));
                let chunk: Vec<u8> = v[a..b].to_vec();
                let at = rng.random_range(0..=v.len());
                v.splice(at..at, chunk);
            }
            5 if len > 0 => {
                v.truncate(rng.random_range(0..len));
            }
            6 => {
                let other = CORPUS[rng.random_range(0..CORPUS.len())].as_bytes();
                let cut = rng.random_range(0..=v.len());
                let from = rng.random_range(0..=other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                // duplicate a whole line
                if let Some(start) = v.iter().position(|&b| b == b'\n') {
                    let end = v[start + 1..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(v.len(), |e| start + 1 + e + 1);
                    let line = v[start + 1..end].to_vec();
                    v.splice(start + 1..start + 1, line);
                }
            }
        }
    }
    v
}

fn iterations() -> usize {
    let default = if cfg!(debug_assertions) {
        50_000
    } else {
        200_000
    };
    std::env::var("WHATSIP_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn parser_survives_mutated_messages_and_round_trips_what_it_accepts() {
    let limits = ParseLimits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(4475);
    let mut accepted = 0usize;
    let mut answered = 0usize;
    let n = iterations();
    for i in 0..n {
        let seed = CORPUS[i % CORPUS.len()].as_bytes();
        let input = mutate(&mut rng, seed);
        let _ = stream_frame(&input, &limits);
        match SipMessage::parse(&input, &limits) {
            Ok(m) => {
                accepted += 1;
                let printed = m.to_bytes();
                let again = SipMessage::parse(&printed, &limits).unwrap_or_else(|e| {
                    panic!(
                        "printed form of an accepted message failed: {e}\ninput: {:?}\nprinted: {:?}",
                        String::from_utf8_lossy(&input),
                        String::from_utf8_lossy(&printed)
                    )
                });
                assert_eq!(
                    again.to_bytes(),
                    printed,
                    "print not idempotent for {:?}",
                    String::from_utf8_lossy(&input)
                );
                let h = m.headers();
                let _ = (
                    h.vias(),
                    h.from(),
                    h.to(),
                    h.cseq(),
                    h.contacts(),
                    h.routes(),
                );
                let _ = (
                    h.session_expires(),
                    h.min_se(),
                    h.reasons(),
                    h.content_type(),
                );
            }
            Err(e) => {
                if error_response(&input, &e).is_some() {
                    answered += 1;
                }
            }
        }
    }
    // the mutator must leave both outcomes well represented, or the run proves little
    assert!(accepted > n / 20, "only {accepted} of {n} accepted");
    assert!(
        n - accepted > n / 20,
        "only {} of {n} rejected",
        n - accepted
    );
    assert!(answered > 0);
}

#[test]
fn transactions_survive_random_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let SipMessage::Request(invite) =
        SipMessage::parse(CORPUS[0].as_bytes(), &ParseLimits::default()).unwrap()
    else {
        panic!()
    };
    let cfg = TimerConfig::default();
    let tag = Tag::new("t");
    for _ in 0..iterations() / 100 {
        let mut clock = VirtualClock::new();
        let reliable = rng.random();
        let mut ict = InviteClientTxn::new(invite.clone(), reliable, &cfg, clock.now());
        let mut ist = InviteServerTxn::new(invite.clone(), reliable, &cfg, clock.now());
        let mut nict = NonInviteClientTxn::new(invite.cancel(), reliable, &cfg, clock.now());
        let mut nist = NonInviteServerTxn::new(invite.cancel(), reliable, &cfg, clock.now());
        for _ in 0..60 {
            let status = StatusCode::new(rng.random_range(100..700)).unwrap();
            let now = clock.now();
            match rng.random_range(0..7) {
                0 => {
                    clock.advance(Duration::from_millis(rng.random_range(0..20_000)));
                    let now = clock.now();
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
                    let r = invite.response(status, Some(&tag));
                    ist.handle_request(
                        if rng.random() {
                            invite.ack_for(&r)
                        } else {
                            invite.clone()
                        },
                        now,
                    );
                }
                4 => {
                    let c = invite.cancel();
                    let _ = nict.handle_response(c.response(status, None), now);
                    let _ = nist.send_response(c.response(status, None), now);
                    nist.handle_request(c, now);
                }
                5 => {
                    let _ = ist.handle_cancel(&invite.cancel(), Some(&tag), now);
                }
                _ => ict.handle_transport_error(now),
            }
            while ict.poll_transmit().is_some() || ict.poll_event().is_some() {}
            while ist.poll_transmit().is_some() || ist.poll_event().is_some() {}
            while nict.poll_transmit().is_some() || nict.poll_event().is_some() {}
            while nist.poll_transmit().is_some() || nist.poll_event().is_some() {}
            // a terminated machine has no timers left
            for (done, t) in [
                (ict.is_terminated(), ict.poll_timeout()),
                (ist.is_terminated(), ist.poll_timeout()),
                (nict.is_terminated(), nict.poll_timeout()),
                (nist.is_terminated(), nist.poll_timeout()),
            ] {
                assert!(!done || t.is_none(), "terminated machine keeps a timer");
            }
        }
    }
}

#[test]
fn dialogs_survive_random_in_dialog_traffic() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let limits = ParseLimits::default();
    let SipMessage::Request(invite) = SipMessage::parse(CORPUS[0].as_bytes(), &limits).unwrap()
    else {
        panic!()
    };
    let cfg = TimerConfig::default();
    let methods = [
        "INVITE", "ACK", "BYE", "UPDATE", "INFO", "OPTIONS", "NOTIFY", "CANCEL", "X",
    ];
    let via = Via::new(
        Transport::Udp,
        Host::Domain("h".into()),
        None,
        &Branch::new("z9hG4bKx"),
    );
    for round in 0..iterations() / 500 {
        let ok = invite.response(StatusCode::OK, Some(&Tag::new("uas")));
        let mut d = Dialog::uas(&invite, &ok, "<sip:me@192.0.2.9>", rng.random(), &cfg).unwrap();
        let mut clock = VirtualClock::new();
        d.start_2xx_retransmission(ok.clone(), clock.now());
        let mut was_terminated = false;
        for _ in 0..40 {
            match rng.random_range(0..4) {
                0 => {
                    clock.advance(Duration::from_millis(rng.random_range(0..10_000)));
                    d.handle_timeout(clock.now());
                }
                1 => {
                    let m = methods[rng.random_range(0..methods.len())];
                    let seq: u32 = rng.random_range(0..20);
                    let from_tag = if rng.random_range(0..8) == 0 {
                        "other"
                    } else {
                        "1928301774"
                    };
                    let raw = format!(
                        "{m} sip:gw@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK{round}x{seq}\r\nFrom: <sip:+15551234567@pbx.example.com>;tag={from_tag}\r\nTo: <sip:+447700900123@gw.example.com>;tag=uas\r\nCall-ID: a84b4c76e66710@gw.example.com\r\nCSeq: {seq} {m}\r\nContact: <sip:pbx@198.51.100.{seq}>\r\n\r\n"
                    );
                    let input = mutate(&mut rng, raw.as_bytes());
                    if let Ok(SipMessage::Request(r)) = SipMessage::parse(&input, &limits) {
                        let _ = d.handle_request(r, clock.now());
                    }
                }
                2 => {
                    let m = [Method::Bye, Method::Info, Method::Invite, Method::Update]
                        [rng.random_range(0..4)]
                    .clone();
                    let r = d.create_request(m, &via);
                    assert!(SipMessage::parse(&r.to_bytes(), &limits).is_ok());
                    let status = StatusCode::new(rng.random_range(100..700)).unwrap();
                    d.handle_response(&r.response(status, Some(&Tag::new("x"))));
                }
                _ => {
                    let _ = d.ack_for_retransmission(&ok);
                }
            }
            while d.poll_transmit().is_some() || d.poll_event().is_some() {}
            if was_terminated {
                assert!(d.is_terminated(), "a terminated dialog stays terminated");
            }
            was_terminated = d.is_terminated();
        }
    }
}
