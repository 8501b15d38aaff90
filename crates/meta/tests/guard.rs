//! CallEventGuard: deduplication, terminate-before-connect, staleness, bounded memory.
//! Time is hand-set: `now` from one base `Instant`, wall time from fixed Unix seconds.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use whatsip_meta::{
    AppSecret, CallEventGuard, Event, GuardConfig, Verdict, VerifiedWebhook, WaCallId, webhook_sign,
};

fn events(calls: &str, statuses: &str) -> Vec<Event> {
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"calls","value":{{"calls":[{calls}],"statuses":[{statuses}]}}}}]}}]}}"#
    );
    let secret = AppSecret::new("s");
    let sig = webhook_sign(body.as_bytes(), &secret);
    let parsed = VerifiedWebhook::from_parts(Some(sig.as_bytes()), body.into_bytes(), &secret)
        .unwrap()
        .parse()
        .unwrap();
    assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
    parsed.events.into_iter().map(|e| e.event).collect()
}

fn connect(id: &str, ts: u64) -> Event {
    let c = format!(
        r#"{{"id":"{id}","from":"14085551234","to":"15551441906","event":"connect","timestamp":"{ts}","direction":"USER_INITIATED","session":{{"sdp_type":"offer","sdp":"v=0\r\n"}}}}"#
    );
    events(&c, "").remove(0)
}

fn terminate(id: &str, ts: u64) -> Event {
    let c = format!(
        r#"{{"id":"{id}","from":"14085551234","to":"15551441906","event":"terminate","timestamp":"{ts}","status":"COMPLETED"}}"#
    );
    events(&c, "").remove(0)
}

fn status(id: &str, s: &str, ts: u64) -> Event {
    let st = format!(r#"{{"id":"{id}","timestamp":"{ts}","type":"call","status":"{s}"}}"#);
    events("", &st).remove(0)
}

fn wall(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[allow(clippy::disallowed_methods)] // the tests' single clock read, the base of hand-set time
fn base() -> Instant {
    Instant::now()
}

#[test]
fn duplicate_connect_is_dropped_even_with_another_timestamp() {
    let t0 = base();
    let mut g = CallEventGuard::new(GuardConfig::default());
    assert_eq!(
        g.handle_event(&connect("wacid.A", 1000), t0, wall(1001)),
        Verdict::Fresh
    );
    assert_eq!(
        g.handle_event(
            &connect("wacid.A", 1000),
            t0 + Duration::from_secs(21),
            wall(1022)
        ),
        Verdict::Duplicate
    );
    assert_eq!(
        g.handle_event(
            &connect("wacid.A", 1003),
            t0 + Duration::from_secs(22),
            wall(1023)
        ),
        Verdict::Duplicate
    );
    assert_eq!(
        g.handle_event(&connect("wacid.B", 1000), t0, wall(1001)),
        Verdict::Fresh
    );
}

#[test]
fn terminate_before_connect_never_starts_the_call() {
    let t0 = base();
    let mut g = CallEventGuard::new(GuardConfig::default());
    assert_eq!(
        g.handle_event(&terminate("wacid.A", 1002), t0, wall(1002)),
        Verdict::Fresh
    );
    assert!(g.has_ended(&WaCallId::parse("wacid.A").unwrap()));
    assert_eq!(
        g.handle_event(
            &connect("wacid.A", 1000),
            t0 + Duration::from_secs(1),
            wall(1003)
        ),
        Verdict::ConnectAfterTerminate
    );
    // Another connect of it (other timestamp) is not passed on again.
    assert_eq!(
        g.handle_event(
            &connect("wacid.A", 1001),
            t0 + Duration::from_secs(1),
            wall(1003)
        ),
        Verdict::AlreadyEnded
    );
    // Its re-delivery is still refused (as a duplicate now).
    assert_eq!(
        g.handle_event(
            &connect("wacid.A", 1000),
            t0 + Duration::from_secs(2),
            wall(1004)
        ),
        Verdict::Duplicate
    );
    // Late statuses of the ended call are dropped too.
    assert_eq!(
        g.handle_event(&status("wacid.A", "RINGING", 1001), t0, wall(1004)),
        Verdict::AlreadyEnded
    );
    // A second terminate (Meta re-sent, or another timestamp) is a duplicate.
    assert_eq!(
        g.handle_event(&terminate("wacid.A", 1002), t0, wall(1005)),
        Verdict::Duplicate
    );
    assert_eq!(
        g.handle_event(&terminate("wacid.A", 1009), t0, wall(1010)),
        Verdict::Duplicate
    );
}

#[test]
fn statuses_dedup_by_status_and_timestamp() {
    let t0 = base();
    let mut g = CallEventGuard::new(GuardConfig::default());
    assert_eq!(
        g.handle_event(&status("wacid.A", "RINGING", 10), t0, wall(11)),
        Verdict::Fresh
    );
    assert_eq!(
        g.handle_event(&status("wacid.A", "RINGING", 10), t0, wall(11)),
        Verdict::Duplicate
    );
    assert_eq!(
        g.handle_event(&status("wacid.A", "ACCEPTED", 12), t0, wall(13)),
        Verdict::Fresh
    );
}

#[test]
fn stale_connect_by_timestamp_against_wall_time() {
    let t0 = base();
    let mut g = CallEventGuard::new(GuardConfig::default());
    assert_eq!(
        g.handle_event(&connect("wacid.A", 1000), t0, wall(1060)),
        Verdict::Fresh,
        "60 s is still answerable"
    );
    assert_eq!(
        g.handle_event(&connect("wacid.B", 1000), t0, wall(1061)),
        Verdict::Stale {
            age: Duration::from_secs(61)
        }
    );
    // A timestamp in the future (clock skew) is not stale.
    assert_eq!(
        g.handle_event(&connect("wacid.C", 2000), t0, wall(1000)),
        Verdict::Fresh
    );
    // Terminates are never aged: a late one must still end the call.
    assert_eq!(
        g.handle_event(&terminate("wacid.A", 1000), t0, wall(9000)),
        Verdict::Fresh
    );
}

#[test]
fn memory_expires_after_ttl_and_is_bounded() {
    let t0 = base();
    let config = GuardConfig {
        dedup_ttl: Duration::from_secs(60),
        ended_ttl: Duration::from_secs(60),
        max_connect_age: Duration::from_secs(3600),
        max_entries: 3,
    };
    let mut g = CallEventGuard::new(config);
    assert_eq!(
        g.handle_event(&terminate("wacid.A", 1000), t0, wall(1000)),
        Verdict::Fresh
    );
    assert_eq!(g.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    g.handle_timeout(t0 + Duration::from_secs(59));
    assert!(g.has_ended(&WaCallId::parse("wacid.A").unwrap()));
    g.handle_timeout(t0 + Duration::from_secs(60));
    assert!(g.is_empty());
    assert_eq!(
        g.handle_event(
            &connect("wacid.A", 1000),
            t0 + Duration::from_secs(61),
            wall(1061)
        ),
        Verdict::Fresh
    );

    let mut g = CallEventGuard::new(GuardConfig {
        max_entries: 3,
        ..GuardConfig::default()
    });
    for i in 0..1000 {
        g.handle_event(&terminate(&format!("wacid.{i}"), 1000 + i), t0, wall(1000));
        assert!(g.len() <= 6, "two tables of at most 3");
    }
    // The newest are remembered, the oldest evicted.
    assert!(g.has_ended(&WaCallId::parse("wacid.999").unwrap()));
    assert!(!g.has_ended(&WaCallId::parse("wacid.0").unwrap()));
}
