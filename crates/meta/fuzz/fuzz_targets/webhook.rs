//! Webhook body and signature: arbitrary bytes must never panic the verifier, the parser or
//! the guard. The first input byte picks how the body is signed so the parser is reached.
#![no_main]

use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use whatsip_meta::{AppSecret, CallEventGuard, GuardConfig, VerifiedWebhook, webhook_sign};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    let secret = AppSecret::new("fuzz-secret");
    let signature = match mode % 3 {
        0 => Some(webhook_sign(body, &secret).into_bytes()),
        1 => Some(body.iter().take(80).copied().collect()),
        _ => None,
    };
    let Ok(verified) = VerifiedWebhook::from_parts(signature.as_deref(), body.to_vec(), &secret) else { return };
    let Ok(parsed) = verified.parse() else { return };
    let mut guard = CallEventGuard::new(GuardConfig::default());
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    for e in &parsed.events {
        let _ = guard.handle_event(&e.event, now, UNIX_EPOCH + Duration::from_secs(1_760_000_000));
    }
});
