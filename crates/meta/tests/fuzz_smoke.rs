//! Stable fuzz smoke test (the cargo-fuzz targets live in `crates/meta/fuzz`): seeded
//! mutations of every golden webhook and Graph reply, fed through signature check, parser and
//! guard. Asserts no panic, and that every refusal is a clear, non-empty error.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use whatsip_meta::{
    AppSecret, CallEventGuard, GuardConfig, VerifiedWebhook, WebhookError, graph, webhook_sign,
};

/// xorshift64*: a deterministic generator so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"\"\"",
    b"{}",
    b"[]",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"wacid.\"",
    b"\"connect\"",
    b"\"terminate\"",
    b"\"\\u0000\"",
    b"[[[[[[[[",
    b"}}}}",
    b"\"\xff\xfe\"",
    b",",
    b":",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => data.truncate(rng.below(len)),
            2 => {
                let i = rng.below(len + 1);
                let tok = TOKENS[rng.below(TOKENS.len())];
                data.splice(i..i, tok.iter().copied());
            }
            3 if len > 1 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                data.drain(a..b);
            }
            4 if len > 1 => {
                let a = rng.below(len);
                let b = (a + rng.below(256)).min(len);
                let chunk = data[a..b].to_vec();
                let i = rng.below(len);
                data.splice(i..i, chunk);
            }
            5 => {
                // Replace a JSON string value with a number or the other way round.
                if let Some(pos) = data.windows(3).position(|w| w == b"\":\"") {
                    data.splice(pos + 2..pos + 3, b"1234,\"x\":\"".iter().copied());
                }
            }
            _ => {
                let depth = rng.below(300);
                let mut nested = vec![b'['; depth];
                nested.extend(std::iter::repeat_n(b']', depth));
                let i = rng.below(len + 1);
                data.splice(i..i, nested);
            }
        }
    }
    data
}

fn seeds(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut out: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

#[allow(clippy::disallowed_methods)] // the base of hand-set time for the guard
fn base() -> Instant {
    Instant::now()
}

#[test]
fn mutated_webhooks_never_panic_and_errors_are_clear() {
    let secret = AppSecret::new("fuzz-secret");
    let seeds = seeds("webhooks");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut guard = CallEventGuard::new(GuardConfig::default());
    let now = base();
    let wall = UNIX_EPOCH + Duration::from_secs(1_760_681_510);
    let (mut parsed_ok, mut refused, mut events) = (0, 0, 0);
    for i in 0..6000 {
        let body = mutate(&mut rng, &seeds[i % seeds.len()]);
        let sig = webhook_sign(&body, &secret);
        let verified =
            VerifiedWebhook::from_parts(Some(sig.as_bytes()), body.clone(), &secret).unwrap();
        match verified.parse() {
            Ok(parsed) => {
                parsed_ok += 1;
                for e in &parsed.events {
                    events += 1;
                    let _ = guard.handle_event(&e.event, now, wall);
                }
                for note in &parsed.notes {
                    assert!(!format!("{note:?}").is_empty());
                }
            }
            Err(e) => {
                refused += 1;
                let text = e.to_string();
                assert!(!text.is_empty() && text.len() < 400, "{text}");
                assert!(
                    matches!(
                        e,
                        WebhookError::InvalidJson { .. }
                            | WebhookError::NotAnObject
                            | WebhookError::InvalidEnvelope { .. }
                    ),
                    "{e:?}"
                );
            }
        }
        // The signature over the mutated body must not verify the original, and vice versa.
        if body != seeds[i % seeds.len()] {
            assert_eq!(
                VerifiedWebhook::from_parts(
                    Some(sig.as_bytes()),
                    seeds[i % seeds.len()].clone(),
                    &secret
                ),
                Err(WebhookError::SignatureMismatch)
            );
        }
    }
    // The corpus really exercised both paths.
    assert!(
        parsed_ok > 500 && refused > 500 && events > 500,
        "{parsed_ok} {refused} {events}"
    );
}

#[test]
fn random_signature_headers_never_panic() {
    let secret = AppSecret::new("fuzz-secret");
    let mut rng = Rng(42);
    for _ in 0..5000 {
        let len = rng.below(100);
        let mut header: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 {
            header.splice(0..0, b"sha256=".iter().copied());
        }
        let r = VerifiedWebhook::from_parts(Some(&header), b"{}".to_vec(), &secret);
        assert!(matches!(
            r,
            Err(WebhookError::MalformedSignature { .. } | WebhookError::SignatureMismatch)
        ));
    }
}

#[test]
fn mutated_graph_replies_never_panic() {
    let seeds = seeds("graph");
    let mut rng = Rng(7);
    for i in 0..4000 {
        let body = mutate(&mut rng, &seeds[i % seeds.len()]);
        let status = [200, 400, 401, 429, 500, 503][rng.below(6)];
        let _ = graph::parse_success_reply(status, &body);
        let _ = graph::parse_connect_reply(status, &body);
        let _ = graph::parse_call_permissions_reply(status, &body);
        let _ = graph::parse_message_reply(status, &body);
        let _ = graph::parse_settings_reply(status, &body);
        let err = graph::parse_error_reply(status, &body);
        assert!(err.to_string().len() < 1200);
    }
}
