//! Webhook hot path: signature check + parse of a user-initiated `connect` (with Meta's live
//! SDP offer), the guard's verdict, and building an `accept` request.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use whatsip_meta::graph::{self, CallAction};
use whatsip_meta::{
    AppSecret, CallEventGuard, GuardConfig, PhoneNumberId, VerifiedWebhook, WaCallId, webhook_sign,
};

fn bench(c: &mut Criterion) {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/webhooks/calls_connect_user_initiated.json"
    ))
    .unwrap();
    let secret = AppSecret::new("bench-secret");
    let sig = webhook_sign(&body, &secret);
    c.bench_function("verify_and_parse_connect", |b| {
        b.iter(|| {
            let v =
                VerifiedWebhook::from_parts(Some(sig.as_bytes()), body.clone(), &secret).unwrap();
            black_box(v.parse().unwrap())
        })
    });
    let parsed = VerifiedWebhook::from_parts(Some(sig.as_bytes()), body.clone(), &secret)
        .unwrap()
        .parse()
        .unwrap();
    #[allow(clippy::disallowed_methods)] // benchmark base time
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_760_681_510);
    c.bench_function("guard_duplicate_verdict", |b| {
        let mut guard = CallEventGuard::new(GuardConfig::default());
        guard.handle_event(&parsed.events[0].event, now, wall);
        b.iter(|| black_box(guard.handle_event(&parsed.events[0].event, now, wall)))
    });
    let pnid = PhoneNumberId::parse("106540352242922").unwrap();
    let action = CallAction::Accept {
        call_id: WaCallId::parse("wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhggQUNEODk3OUQ3NzI4MjZBRTZFNEE2MzU3NDEzNDg4RUUcGAsxNTU1MTQ0MTkwNhUCABUKAA==").unwrap(),
        answer_sdp: String::from_utf8(std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sdp_answer.sdp")).unwrap()).unwrap(),
        biz_opaque_callback_data: None,
    };
    c.bench_function("build_accept_request", |b| {
        b.iter(|| black_box(graph::call_action_request(&pnid, &action).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
