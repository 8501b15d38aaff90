//! Property tests: webhooks built the way Meta builds them (serde_json, any call id, numbers,
//! timestamps, SDP text, status casing) parse back to the same values; request bodies carry
//! the SDP byte for byte.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use proptest::prelude::*;
use serde_json::json;
use whatsip_meta::graph::{self, CallAction};
use whatsip_meta::{
    AppSecret, CallStatusKind, E164, Event, PhoneNumberId, TerminateStatus, VerifiedWebhook,
    WaCallId, WaId, webhook_sign,
};

fn parse(value: &serde_json::Value) -> Vec<Event> {
    let body = serde_json::to_vec(value).unwrap();
    let secret = AppSecret::new("prop");
    let sig = webhook_sign(&body, &secret);
    let parsed = VerifiedWebhook::from_parts(Some(sig.as_bytes()), body, &secret)
        .unwrap()
        .parse()
        .unwrap();
    assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
    parsed.events.into_iter().map(|e| e.event).collect()
}

fn envelope(field: &str, value: serde_json::Value) -> serde_json::Value {
    json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":field,"value":value}]}]})
}

fn call_id() -> impl Strategy<Value = String> {
    "wacid\\.[A-Za-z0-9+/]{20,120}={0,2}"
}

fn digits() -> impl Strategy<Value = String> {
    "[1-9][0-9]{6,14}"
}

/// SDP-like text: printable lines joined with CRLF, including quotes and backslashes that
/// must survive JSON escaping.
fn sdp() -> impl Strategy<Value = String> {
    prop::collection::vec("[ -~]{0,80}", 1..30)
        .prop_map(|lines| format!("v=0\r\n{}\r\n", lines.join("\r\n")))
}

fn mixed_case(s: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), s.len()).prop_map(move |upper| {
        s.chars()
            .zip(upper)
            .map(|(c, u)| {
                if u {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn connect_round_trips(id in call_id(), from in digits(), to in digits(), ts in 1u64..=4_000_000_000, sdp in sdp(),
                           payload in proptest::option::of("[ -~]{0,512}")) {
        let mut call = json!({"id": id, "from": from, "to": to, "event": "connect", "timestamp": ts.to_string(),
            "direction": "USER_INITIATED", "session": {"sdp_type": "offer", "sdp": sdp}});
        if let Some(p) = &payload {
            call["deeplink_payload"] = json!(p);
        }
        let events = parse(&envelope("calls", json!({"calls": [call]})));
        let Event::Connect(c) = &events[0] else { panic!() };
        prop_assert_eq!(c.call_id.as_str(), id.as_str());
        prop_assert_eq!(c.from.as_str(), from.as_str());
        prop_assert_eq!(c.to.as_str(), to.as_str());
        prop_assert_eq!(c.timestamp.as_secs(), ts);
        prop_assert_eq!(&c.session.sdp, &sdp);
        prop_assert_eq!(&c.deeplink_payload, &payload);
    }

    #[test]
    fn terminate_status_and_duration_round_trip(id in call_id(), status in prop_oneof![mixed_case("completed"), mixed_case("failed")],
                                                duration in proptest::option::of(0u64..100_000), as_string in any::<bool>()) {
        let mut call = json!({"id": id, "event": "terminate", "timestamp": "1760681533", "status": status});
        if let Some(d) = duration {
            // Meta sends an integer; tolerate a numeric string as well.
            call["duration"] = if as_string { json!(d.to_string()) } else { json!(d) };
        }
        let events = parse(&envelope("calls", json!({"calls": [call]})));
        let Event::Terminate(t) = &events[0] else { panic!() };
        let want = if status.eq_ignore_ascii_case("completed") { TerminateStatus::Completed } else { TerminateStatus::Failed };
        prop_assert_eq!(t.status.clone(), Some(want));
        prop_assert_eq!(t.duration.map(|d| d.as_secs()), duration);
    }

    #[test]
    fn status_kinds_parse_in_any_case(id in call_id(), s in prop_oneof![mixed_case("ringing"), mixed_case("accepted"), mixed_case("rejected")]) {
        let events = parse(&envelope("calls", json!({"statuses": [{"id": id, "timestamp": "1", "type": "call", "status": s}]})));
        let Event::Status(st) = &events[0] else { panic!() };
        let want = CallStatusKind::from_wire(&s.to_ascii_uppercase());
        prop_assert!(!matches!(want, CallStatusKind::Other(_)));
        prop_assert_eq!(st.status.clone(), want);
    }

    #[test]
    fn request_bodies_carry_the_sdp_verbatim(id in call_id(), sdp in sdp()) {
        let call_id = WaCallId::parse(id).unwrap();
        for action in [
            CallAction::PreAccept { call_id: call_id.clone(), answer_sdp: sdp.clone() },
            CallAction::Accept { call_id: call_id.clone(), answer_sdp: sdp.clone(), biz_opaque_callback_data: None },
        ] {
            let req = graph::call_action_request(&PhoneNumberId::parse("1").unwrap(), &action).unwrap();
            let text = serde_json::to_vec(req.body.as_ref().unwrap()).unwrap();
            let back: serde_json::Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(back["session"]["sdp"].as_str(), Some(sdp.as_str()));
            prop_assert_eq!(back["call_id"].as_str(), Some(call_id.as_str()));
        }
    }

    #[test]
    fn numbers_convert_between_wa_id_and_e164(d in digits()) {
        let wa = WaId::parse(d.clone()).unwrap();
        let e = wa.to_e164();
        prop_assert_eq!(e.as_str(), format!("+{d}"));
        prop_assert_eq!(E164::parse(e.as_str()).unwrap().to_wa_id(), wa);
    }
}

#[allow(clippy::disallowed_methods)] // base of hand-set time
fn base() -> std::time::Instant {
    std::time::Instant::now()
}

/// One delivery: (call index, 0 connect / 1 terminate / 2 RINGING, timestamp offset).
fn deliveries() -> impl Strategy<Value = Vec<(usize, u8, u64)>> {
    prop::collection::vec((0usize..4, 0u8..3, 0u64..3), 0..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Whatever the order and duplication of deliveries: at most one connect per call is
    /// fresh, no connect or status is fresh after that call's terminate was, and every
    /// (event, call, timestamp) is fresh at most once.
    #[test]
    fn guard_invariants_under_reordering_and_duplication(seq in deliveries()) {
        use std::collections::HashSet;
        use std::time::{Duration, UNIX_EPOCH};
        use whatsip_meta::{CallEventGuard, GuardConfig, Verdict};
        let mut guard = CallEventGuard::new(GuardConfig::default());
        let now = base();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let (mut connected, mut ended, mut fresh_keys) = (HashSet::new(), HashSet::new(), HashSet::new());
        for (i, (call, kind, dt)) in seq.into_iter().enumerate() {
            let id = format!("wacid.P{call}");
            let ts = 990 + dt;
            let item = match kind {
                0 => json!({"id": id, "from": "111111", "to": "222222", "event": "connect", "timestamp": ts.to_string(),
                            "session": {"sdp_type": "offer", "sdp": "v=0\r\n"}}),
                1 => json!({"id": id, "event": "terminate", "timestamp": ts.to_string()}),
                _ => json!(null),
            };
            let events = if kind == 2 {
                parse(&envelope("calls", json!({"statuses": [{"id": id, "timestamp": ts.to_string(), "status": "RINGING"}]})))
            } else {
                parse(&envelope("calls", json!({"calls": [item]})))
            };
            let verdict = guard.handle_event(&events[0], now + Duration::from_millis(i as u64), wall);
            if verdict == Verdict::Fresh {
                prop_assert!(fresh_keys.insert((kind, call, ts)), "fresh twice");
                match kind {
                    0 => {
                        prop_assert!(!ended.contains(&call), "connect after terminate");
                        prop_assert!(connected.insert(call), "second connect");
                    }
                    1 => prop_assert!(ended.insert(call), "second terminate"),
                    _ => prop_assert!(!ended.contains(&call), "status after terminate"),
                }
            }
        }
    }
}
