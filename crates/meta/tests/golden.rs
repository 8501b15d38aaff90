//! Golden tests: every JSON example of the Calling API reference (copied into
//! `tests/fixtures`, placeholders filled with realistic values) parses into typed events, and
//! every request we send serialises to the reference's body.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use whatsip_meta::graph::{
    self, CallAction, CallingSettings, GraphRequest, HttpMethod, PermissionStatus, Toggle,
};
use whatsip_meta::{
    AppSecret, CallDirection, CallStatusKind, Event, GraphError, MetaErrorCode, ParseNote,
    ParsedWebhook, PermissionResponse, PhoneNumberId, ReplyTo, ResponseSource, SdpType,
    TerminateStatus, VerifiedWebhook, WaCallId, WaId, webhook_sign,
};

const UI_ID: &str = "wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhggQUNEODk3OUQ3NzI4MjZBRTZFNEE2MzU3NDEzNDg4RUUcGAsxNTU1MTQ0MTkwNhUCABUKAA==";

fn fixture(rel: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    )
    .unwrap()
}

fn parse(name: &str) -> ParsedWebhook {
    let body = fixture(&format!("webhooks/{name}.json"));
    let secret = AppSecret::new("golden-app-secret");
    let sig = webhook_sign(&body, &secret);
    let parsed = VerifiedWebhook::from_parts(Some(sig.as_bytes()), body, &secret)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        parsed.notes.iter().all(|n| !matches!(
            n,
            ParseNote::InvalidItem { .. } | ParseNote::UnknownField { .. }
        )),
        "{name}: {:?}",
        parsed.notes
    );
    parsed
}

fn one(name: &str) -> Event {
    let parsed = parse(name);
    assert_eq!(parsed.events.len(), 1, "{name}: {:?}", parsed.events);
    let ev = parsed.events.into_iter().next().unwrap();
    ev.event
}

#[test]
fn every_webhook_fixture_parses_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let mut count = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let parsed = parse(name.trim_end_matches(".json"));
        assert!(!parsed.events.is_empty(), "{name}");
        count += 1;
    }
    assert_eq!(count, 16);
}

#[test]
fn user_initiated_connect_carries_offer_contact_and_context() {
    let parsed = parse("calls_connect_user_initiated");
    let ctx = &parsed.events[0].context;
    assert_eq!(
        ctx.phone_number_id.as_ref().unwrap().as_str(),
        "518638374672395"
    );
    assert_eq!(ctx.waba_id.as_ref().unwrap().as_str(), "102290129340398");
    assert_eq!(ctx.display_phone_number.as_deref(), Some("15551441906"));
    let Event::Connect(c) = &parsed.events[0].event else {
        panic!()
    };
    assert_eq!(c.call_id.as_str(), UI_ID);
    assert_eq!(c.direction, CallDirection::UserInitiated);
    assert_eq!(c.session.sdp_type, SdpType::Offer);
    assert_eq!(c.session.sdp.as_bytes(), &fixture("sdp_offer.sdp")[..]);
    assert!(c.session.sdp.contains("a=ice-lite\r\n"));
    assert_eq!(c.from.as_str(), "917358580180");
    assert_eq!(c.user().as_str(), "917358580180");
    assert_eq!(c.to.as_str(), "15551441906");
    assert_eq!(c.timestamp.as_secs(), 1_760_681_506);
    let contact = c.contact.as_ref().unwrap();
    assert_eq!(
        (contact.wa_id.as_str(), contact.name.as_deref()),
        ("917358580180", Some("Jane Doe"))
    );
}

#[test]
fn connect_without_direction_is_inferred_and_keeps_payloads() {
    let Event::Connect(c) = one("calls_connect_user_initiated_deeplink_no_direction") else {
        panic!()
    };
    assert_eq!(c.direction, CallDirection::UserInitiated);
    assert_eq!(c.deeplink_payload.as_deref(), Some("order-12853"));
    assert_eq!(c.cta_payload.as_deref(), Some("payload data"));
}

#[test]
fn business_initiated_connect_carries_answer_and_ignores_legacy_duplicate() {
    let Event::Connect(c) = one("calls_connect_business_initiated") else {
        panic!()
    };
    assert_eq!(c.direction, CallDirection::BusinessInitiated);
    assert_eq!(c.session.sdp_type, SdpType::Answer);
    assert!(c.session.sdp.starts_with("v=0\r\n") && c.session.sdp.contains("a=setup:active\r\n"));
    assert_eq!(
        c.biz_opaque_callback_data.as_deref(),
        Some("TRx334DUDFTI4Mj")
    );
    assert_eq!(c.from.as_str(), "13175551399");
    assert_eq!(c.user().as_str(), "12185552828");
    assert_eq!(c.contact.unwrap().name.as_deref(), Some("Sam"));

    // Only the legacy JSON-in-a-string form: still understood.
    let Event::Connect(legacy) = one("calls_connect_business_initiated_legacy_only") else {
        panic!()
    };
    assert_eq!(legacy.session.sdp_type, SdpType::Answer);
    assert!(legacy.session.sdp.contains("a=setup:active\r\n"));
}

#[test]
fn business_initiated_statuses() {
    for (name, want) in [
        ("calls_status_ringing", CallStatusKind::Ringing),
        ("calls_status_accepted", CallStatusKind::Accepted),
        ("calls_status_rejected", CallStatusKind::Rejected),
    ] {
        let Event::Status(s) = one(name) else {
            panic!("{name}")
        };
        assert_eq!(s.status, want);
        assert_eq!(s.call_id.as_str(), "wacid.ABGGFjFVU2AfAgo6V");
        assert_eq!(s.recipient_id.as_ref().unwrap().as_str(), "16315553602");
        assert_eq!(s.biz_opaque_callback_data.as_deref(), Some("random_string"));
    }
}

#[test]
fn terminate_live_capture_errors_in_both_places_are_merged() {
    let Event::Terminate(t) = one("calls_terminate_failed_live") else {
        panic!()
    };
    assert_eq!(t.status, Some(TerminateStatus::Failed));
    assert_eq!(t.duration, Some(Duration::from_secs(20)));
    assert_eq!(t.start_time.unwrap().as_secs(), 1_760_681_513);
    assert_eq!(t.end_time.unwrap().as_secs(), 1_760_681_533);
    assert_eq!(t.biz_opaque_callback_data.as_deref(), Some("optional"));
    assert_eq!(
        t.errors.len(),
        1,
        "same error in calls[0] and value must count once"
    );
    assert_eq!(t.errors[0].code, MetaErrorCode::MediaReceiveTimeout);
    assert!(
        t.errors[0]
            .details
            .as_deref()
            .unwrap()
            .contains("not receiving any media")
    );
}

#[test]
fn terminate_docs_variant_errors_only_in_value_and_mixed_case_status() {
    let Event::Terminate(t) = one("calls_terminate_docs_errors_in_value_only") else {
        panic!()
    };
    assert_eq!(t.status, Some(TerminateStatus::Failed));
    assert_eq!(t.errors.len(), 1);
    assert_eq!(t.errors[0].code, MetaErrorCode::MediaTransmitTimeout);
    assert!(t.errors[0].href.is_some());
    assert_eq!(t.duration, None);
}

#[test]
fn terminate_unanswered_has_no_times() {
    let Event::Terminate(t) = one("calls_terminate_completed_unanswered") else {
        panic!()
    };
    assert_eq!(t.status, Some(TerminateStatus::Completed));
    assert_eq!((t.start_time, t.end_time, t.duration), (None, None, None));
    assert_eq!(t.cta_payload.as_deref(), Some("payload data"));
}

#[test]
fn calls_value_errors_without_calls_become_an_errors_event() {
    let Event::Errors(e) = one("calls_errors_131044") else {
        panic!()
    };
    assert_eq!(e.field, "calls");
    assert_eq!(e.errors[0].code, MetaErrorCode::NoPaymentMethod);
}

#[test]
fn permission_reply_every_scenario_of_the_reference_table() {
    let parsed = parse("messages_call_permission_reply_all_scenarios");
    let replies: Vec<_> = parsed
        .events
        .iter()
        .map(|e| match &e.event {
            Event::PermissionReply(r) => r.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replies.len(), 6);
    use PermissionResponse::*;
    use ResponseSource::*;
    let wamid = |s: &str| Some(ReplyTo::Message(whatsip_meta::MessageId::parse(s).unwrap()));
    let request = "wamid.gBGGFlaCmZ9plHrf2Mh-o";
    // (response, is_permanent, expiration, source, context) per reference §3.4 table.
    let want = [
        (
            Accept,
            false,
            Some(1_768_550_400),
            UserAction,
            wamid(request),
        ),
        (Accept, true, None, UserAction, wamid(request)),
        (Accept, true, None, UserAction, None),
        (Reject, false, None, UserAction, wamid(request)),
        (
            Accept,
            false,
            Some(1_768_550_404),
            Automatic,
            Some(ReplyTo::Call(WaCallId::parse(UI_ID).unwrap())),
        ),
        (Reject, false, None, Automatic, None),
    ];
    for (r, (response, permanent, expiration, source, reply_to)) in replies.iter().zip(want) {
        assert_eq!(r.response, response);
        assert_eq!(r.is_permanent, permanent);
        assert_eq!(r.expiration.map(|t| t.as_secs()), expiration);
        assert_eq!(r.response_source, Some(source));
        assert_eq!(r.reply_to, reply_to);
        assert_eq!(r.from.as_str(), "14085551234");
        assert_eq!(r.contact.as_ref().unwrap().name.as_deref(), Some("Kim"));
    }
}

#[test]
fn message_error_webhook_131026() {
    let Event::MessageFailed(m) = one("messages_status_failed_131026") else {
        panic!()
    };
    assert_eq!(m.message_id.as_str(), "wamid.gBGGFlaCmZ9plHrf2Mh-o");
    assert_eq!(m.errors[0].code, MetaErrorCode::RecipientClientTooOld);
    assert_eq!(m.recipient_id.unwrap().as_str(), "14085551234");
}

#[test]
fn account_settings_update() {
    let parsed = parse("account_settings_update");
    assert_eq!(
        parsed.events[0]
            .context
            .phone_number_id
            .as_ref()
            .unwrap()
            .as_str(),
        "518638374672395"
    );
    let Event::AccountSettingsUpdate(u) = &parsed.events[0].event else {
        panic!()
    };
    assert_eq!(u.settings_type.as_deref(), Some("phone_number_settings"));
    let calling = u.calling.as_ref().unwrap();
    assert_eq!(calling.status, Some(Toggle::Enabled));
    let server = &calling.sip.as_ref().unwrap().servers.as_ref().unwrap()[0];
    assert_eq!(server.hostname, "sip.example.com");
    assert_eq!(
        server.sip_user_password.as_ref().unwrap().expose(),
        "meta-generated-secret"
    );
    assert!(
        !format!("{u:?}").contains("meta-generated-secret"),
        "sip password must not print"
    );
}

#[test]
fn account_update_violation_and_restriction() {
    let Event::AccountUpdate(v) = one("account_update_violation") else {
        panic!()
    };
    assert_eq!(v.kind, whatsip_meta::AccountUpdateKind::AccountViolation);
    assert_eq!(
        v.violation.unwrap().violation_type,
        "USER_INITIATED_CALLS_LOW_PICKUP_RATE"
    );
    let Event::AccountUpdate(r) = one("account_update_restriction") else {
        panic!()
    };
    assert_eq!(r.kind, whatsip_meta::AccountUpdateKind::AccountRestriction);
    assert_eq!(r.restrictions.len(), 2);
    assert_eq!(
        r.restrictions[0].expiration.unwrap().as_secs(),
        1_754_072_386
    );
    assert_eq!(
        r.restrictions[1].remediation.as_deref(),
        Some("Improve pickup rate")
    );
}

// ------------------------------------------------------------------ requests we send

fn json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).unwrap()
}

fn pnid() -> PhoneNumberId {
    PhoneNumberId::parse("106540352242922").unwrap()
}

fn check_post(req: &GraphRequest, path: &str, golden: &str) {
    assert_eq!(req.method, HttpMethod::Post);
    assert_eq!(req.path, path);
    assert_eq!(req.body.as_ref().unwrap(), &json(golden), "{golden}");
}

#[test]
fn calls_request_bodies_match_the_reference() {
    let call_id = WaCallId::parse(UI_ID).unwrap();
    let cases = [
        (
            CallAction::Connect {
                to: WaId::parse("14085551234").unwrap(),
                offer_sdp: "<business SDP offer>".into(),
                biz_opaque_callback_data: Some("0fS5cePMok".into()),
            },
            "graph/request_connect.json",
        ),
        (
            CallAction::PreAccept {
                call_id: call_id.clone(),
                answer_sdp: "<SDP answer>".into(),
            },
            "graph/request_pre_accept.json",
        ),
        (
            CallAction::Accept {
                call_id: call_id.clone(),
                answer_sdp: "<SDP answer>".into(),
                biz_opaque_callback_data: Some("abc".into()),
            },
            "graph/request_accept.json",
        ),
        (
            CallAction::Reject {
                call_id: call_id.clone(),
            },
            "graph/request_reject.json",
        ),
        (
            CallAction::Terminate { call_id },
            "graph/request_terminate.json",
        ),
    ];
    for (action, golden) in cases {
        let req = graph::call_action_request(&pnid(), &action).unwrap();
        check_post(&req, "/106540352242922/calls", golden);
        assert!(
            !req.idempotent,
            "{golden}: call actions are never blindly retried"
        );
        assert_eq!(
            req.url("https://graph.facebook.com/", &Default::default()),
            "https://graph.facebook.com/v23.0/106540352242922/calls"
        );
    }
}

#[test]
fn sdp_goes_as_a_plain_string_with_crlf() {
    let sdp = String::from_utf8(fixture("sdp_answer.sdp")).unwrap();
    let action = CallAction::PreAccept {
        call_id: WaCallId::parse(UI_ID).unwrap(),
        answer_sdp: sdp.clone(),
    };
    let req = graph::call_action_request(&pnid(), &action).unwrap();
    let text = serde_json::to_string(req.body.as_ref().unwrap()).unwrap();
    assert!(
        text.contains(r#""sdp":"v=0\r\no=- 2822644248144643933"#),
        "{text}"
    );
    assert_eq!(req.body.unwrap()["session"]["sdp"], Value::String(sdp));
}

#[test]
fn biz_opaque_callback_data_over_512_is_refused() {
    let action = CallAction::Accept {
        call_id: WaCallId::parse(UI_ID).unwrap(),
        answer_sdp: "v=0".into(),
        biz_opaque_callback_data: Some("x".repeat(513)),
    };
    assert!(matches!(
        graph::call_action_request(&pnid(), &action),
        Err(GraphError::InvalidRequest { .. })
    ));
}

#[test]
fn permission_request_message_and_query() {
    let req = graph::call_permission_request_message(
        &pnid(),
        &WaId::parse("14085551234").unwrap(),
        Some("We would like to call you about order ON-12853."),
    );
    check_post(
        &req,
        "/106540352242922/messages",
        "graph/request_call_permission_request.json",
    );
    let no_body =
        graph::call_permission_request_message(&pnid(), &WaId::parse("14085551234").unwrap(), None);
    assert!(no_body.body.unwrap()["interactive"].get("body").is_none());

    let q = graph::call_permissions_request(&pnid(), &WaId::parse("14085551234").unwrap());
    assert_eq!(q.method, HttpMethod::Get);
    assert!(q.idempotent);
    assert_eq!(
        q.url(
            "http://127.0.0.1:9",
            &graph::ApiVersion::parse("v21.0").unwrap()
        ),
        "http://127.0.0.1:9/v21.0/106540352242922/call_permissions?user_wa_id=14085551234"
    );
}

#[test]
fn settings_post_round_trips_the_reference_body() {
    let golden = json("graph/request_settings.json");
    let calling: CallingSettings = serde_json::from_value(golden["calling"].clone()).unwrap();
    let req = graph::update_settings_request(&pnid(), &calling).unwrap();
    check_post(
        &req,
        "/106540352242922/settings",
        "graph/request_settings.json",
    );
    let get = graph::settings_request(&pnid(), true);
    assert_eq!(
        get.url("https://g", &Default::default()),
        "https://g/v23.0/106540352242922/settings?include_sip_credentials=true"
    );
}

// ------------------------------------------------------------------ replies we parse

#[test]
fn replies_parse() {
    let id = graph::parse_connect_reply(200, &fixture("graph/reply_connect.json")).unwrap();
    assert_eq!(id.as_str(), "wacid.ABGGFjFVU2AfAgo6V");
    graph::parse_success_reply(200, &fixture("graph/reply_success.json")).unwrap();
    graph::parse_success_reply(200, &fixture("graph/reply_success_short.json")).unwrap();
    assert!(matches!(
        graph::parse_success_reply(200, b"{\"success\":false}"),
        Err(GraphError::InvalidReply { .. })
    ));
    assert!(matches!(
        graph::parse_connect_reply(200, b"not json"),
        Err(GraphError::InvalidReply { .. })
    ));

    let p = graph::parse_call_permissions_reply(200, &fixture("graph/reply_call_permissions.json"))
        .unwrap();
    assert_eq!(p.status, PermissionStatus::Temporary);
    assert_eq!(p.expiration, Some(1_745_343_479));
    assert!(p.can_request_permission());
    assert!(!p.can_start_call());
    assert_eq!(
        p.actions[1].limits[0].limit_expiration_time,
        Some(1_745_622_600)
    );
    let alt = br#"{"permission":{"status":"permanent","expiration":"12"}}"#;
    let p = graph::parse_call_permissions_reply(200, alt).unwrap();
    assert_eq!(
        (p.status, p.expiration),
        (PermissionStatus::Permanent, Some(12))
    );

    let m = graph::parse_message_reply(200, &fixture("graph/reply_message.json")).unwrap();
    assert_eq!(m.message_id.as_str(), "wamid.HBgLMTQwODU1NTEyMzQVAgARGBI");
    assert_eq!(m.wa_id.unwrap().as_str(), "14085551234");

    let s = graph::parse_settings_reply(200, &fixture("graph/reply_settings.json")).unwrap();
    assert_eq!(
        s.calling.unwrap().callback_permission_status,
        Some(Toggle::Enabled)
    );
    assert!(s.extra.contains_key("id"));
}

#[test]
fn meta_error_body_maps_to_typed_error() {
    let err = graph::parse_error_reply(401, &fixture("graph/reply_error_138006.json"));
    let GraphError::Meta(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, MetaErrorCode::NoCallPermission);
    assert_eq!(e.http_status, 401);
    assert_eq!(e.error_type.as_deref(), Some("OAuthException"));
    assert_eq!(
        e.details.as_deref(),
        Some("No approved call permission from the recipient")
    );
    assert_eq!(e.fbtrace_id.as_deref(), Some("AbCdEf123"));
    assert!(!err.is_retry_safe(true));
    // Not Meta's shape: kept as the status with a short excerpt.
    let odd = graph::parse_error_reply(502, b"<html>bad gateway</html>");
    assert!(matches!(
        odd,
        GraphError::UnexpectedStatus {
            http_status: 502,
            ..
        }
    ));
    assert!(odd.is_retry_safe(true) && !odd.is_retry_safe(false));
}

/// Reference §8 and §2.4, written out independently of the crate's table.
const TABLE: [(i64, Option<u16>); 28] = [
    (100, Some(400)),
    (613, Some(429)),
    (131009, Some(400)),
    (131026, None),
    (131030, Some(400)),
    (131044, Some(400)),
    (131055, Some(400)),
    (138000, Some(401)),
    (138001, Some(400)),
    (138002, Some(429)),
    (138003, Some(400)),
    (138004, Some(500)),
    (138005, Some(429)),
    (138006, Some(401)),
    (138007, Some(500)),
    (138009, Some(400)),
    (138011, None),
    (138012, Some(400)),
    (138013, Some(400)),
    (138014, Some(400)),
    (138015, Some(400)),
    (138017, Some(400)),
    (138018, Some(400)),
    (138019, Some(400)),
    (138020, Some(400)),
    (138021, Some(400)),
    (138022, Some(400)),
    (138023, Some(400)),
];

#[test]
fn graph_error_mapping_for_every_code() {
    for (code, status) in TABLE {
        let http = status.unwrap_or(400);
        let body = format!(
            r#"{{"error":{{"message":"(#{code}) x","type":"OAuthException","code":{code},"error_data":{{"details":"d"}},"fbtrace_id":"t"}}}}"#
        );
        let err = graph::parse_error_reply(http, body.as_bytes());
        let typed = err.meta_code().unwrap();
        assert!(!matches!(typed, MetaErrorCode::Unknown(_)), "{code}");
        assert_eq!(typed.code(), code);
        assert_eq!(typed.http_status(), status, "{code}");
        assert_eq!(err.http_status(), Some(http));
        // Rate limits and Meta-side connection trouble are transient; nothing else is.
        let transient = matches!(code, 613 | 138002 | 138004 | 138005 | 138007);
        assert_eq!(typed.is_transient(), transient, "{code}");
        // A non-idempotent call action is never retried on a Meta error.
        assert!(!err.is_retry_safe(false), "{code}");
        assert_eq!(err.is_retry_safe(true), transient, "{code}");
        assert!(err.to_string().contains(&code.to_string()));
    }
    for undocumented in [138008, 138010, 138016, 1] {
        let body = format!(r#"{{"error":{{"message":"m","code":{undocumented}}}}}"#);
        assert_eq!(
            graph::parse_error_reply(400, body.as_bytes()).meta_code(),
            Some(MetaErrorCode::Unknown(undocumented))
        );
    }
    assert_eq!(graph::DOCUMENTED_CODES.len(), TABLE.len());
}

#[test]
fn transport_errors_retry_rules() {
    let connect = GraphError::Connect {
        reason: "refused".into(),
    };
    assert!(connect.is_retry_safe(false) && connect.is_retry_safe(true));
    let timeout = GraphError::Timeout { timeout_ms: 1 };
    assert!(!timeout.is_retry_safe(false) && timeout.is_retry_safe(true));
    let _ = TerminateStatus::from_wire("completed");
}

#[test]
fn every_fixture_event_encodes_back_to_meta_json_and_parses_identically() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let secret = AppSecret::new("golden-app-secret");
    let mut events = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        for event in parse(name.trim_end_matches(".json")).events {
            let body = serde_json::to_vec(&event.to_envelope()).unwrap();
            let sig = webhook_sign(&body, &secret);
            let again = VerifiedWebhook::from_parts(Some(sig.as_bytes()), body, &secret)
                .unwrap()
                .parse()
                .unwrap();
            assert!(again.notes.is_empty(), "{name}: {:?}", again.notes);
            assert_eq!(again.events, vec![event], "{name}");
            events += 1;
        }
    }
    assert!(events >= 21, "{events}");
}

#[test]
fn encoded_terminate_keeps_meta_types() {
    let Event::Terminate(_) = one("calls_terminate_failed_live") else {
        panic!()
    };
    let parsed = parse("calls_terminate_failed_live");
    let v = parsed.events[0].to_envelope();
    let call = &v["entry"][0]["changes"][0]["value"]["calls"][0];
    assert_eq!(call["timestamp"], Value::String("1760681533".into()));
    assert_eq!(call["start_time"], Value::String("1760681513".into()));
    assert_eq!(call["duration"], Value::from(20));
    assert_eq!(call["errors"][0]["code"], Value::from(138021));
    assert_eq!(v["entry"][0]["id"], Value::String("102290129340398".into()));
}
