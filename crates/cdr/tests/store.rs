//! The CDR store against real SQLite files in a temporary directory.

use whatsip_cdr::{
    CallRecord, CdrError, CdrFilter, CdrStore, Direction, HangupSide, MediaQuality, Outcome,
    RateCard, StoreOptions, UnixMillis, billable_pulses, write_csv,
};

fn record(id: &str, dir: Direction, customer: &str, offer_s: i64) -> CallRecord {
    CallRecord::new(id, dir, "15551441906", customer, UnixMillis(offer_s * 1000))
}

fn answered(mut r: CallRecord, talk_s: i64) -> CallRecord {
    r.answer_at = Some(UnixMillis(r.offer_at.0 + 5_000));
    r.end_at = Some(UnixMillis(r.offer_at.0 + 5_000 + talk_s * 1000));
    r.outcome = Outcome::Answered;
    r.ending.hangup_by = Some(HangupSide::WhatsApp);
    r.ending.meta_status = Some("COMPLETED".into());
    r
}

#[test]
fn final_record_survives_reopen_and_live_row_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.sqlite");
    {
        let mut store = CdrStore::open(&db, StoreOptions::default()).unwrap();
        let r = record("wacid.A", Direction::Inbound, "917358580180", 1_000);
        store.upsert_live(&r, UnixMillis(1_000_000)).unwrap();
        let mut done = answered(r, 20);
        done.media_wa_to_pbx = Some(MediaQuality {
            packets: 1000,
            lost: 3,
            jitter_ms: 1.5,
            longest_gap_ms: 60,
        });
        done.dtmf_digits = 2;
        assert!(store.finish(&done).unwrap());
    }
    let store = CdrStore::open(&db, StoreOptions::default()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
    assert!(store.live_calls().unwrap().is_empty());
    let got = store.get("wacid.A").unwrap().unwrap();
    assert_eq!(got.outcome, Outcome::Answered);
    assert_eq!(got.talk_time().as_secs(), 20);
    assert_eq!(got.media_wa_to_pbx.unwrap().lost, 3);
    assert_eq!(got.dtmf_digits, 2);
}

#[test]
fn finishing_twice_keeps_the_first_record() {
    let mut store = CdrStore::open_in_memory(StoreOptions::default()).unwrap();
    let r = answered(record("wacid.B", Direction::Inbound, "1", 10), 5);
    assert!(store.finish(&r).unwrap());
    let mut again = r.clone();
    again.outcome = Outcome::Failed;
    assert!(!store.finish(&again).unwrap());
    assert_eq!(
        store.get("wacid.B").unwrap().unwrap().outcome,
        Outcome::Answered
    );
}

#[test]
fn live_calls_left_by_a_crash_become_interrupted_records_at_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.sqlite");
    {
        let mut store = CdrStore::open(&db, StoreOptions::default()).unwrap();
        let mut r = record("wacid.C", Direction::Outbound, "447700900001", 2_000);
        store.upsert_live(&r, UnixMillis(2_000_000)).unwrap();
        r.answer_at = Some(UnixMillis(2_004_000));
        store.upsert_live(&r, UnixMillis(2_030_000)).unwrap();
        // Dropped without finish: as if the process was killed here.
    }
    let mut store = CdrStore::open(&db, StoreOptions::default()).unwrap();
    let recovered = store.recover_interrupted().unwrap();
    assert_eq!(recovered.len(), 1);
    let got = store.get("wacid.C").unwrap().unwrap();
    assert_eq!(got.outcome, Outcome::Interrupted);
    assert_eq!(got.end_at, Some(UnixMillis(2_030_000)), "last known alive");
    assert_eq!(got.answer_at, Some(UnixMillis(2_004_000)));
    assert_eq!(got.ending.hangup_by, Some(HangupSide::Gateway));
    assert!(store.live_calls().unwrap().is_empty());
    // A second recovery finds nothing more.
    assert!(store.recover_interrupted().unwrap().is_empty());
}

#[test]
fn jsonl_export_catches_up_on_records_written_before_it_was_configured() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.sqlite");
    let jsonl = dir.path().join("cdr.jsonl");
    {
        let mut store = CdrStore::open(&db, StoreOptions::default()).unwrap();
        store
            .finish(&answered(record("wacid.D1", Direction::Inbound, "1", 1), 1))
            .unwrap();
    }
    {
        let mut store = CdrStore::open(
            &db,
            StoreOptions {
                jsonl_path: Some(jsonl.clone()),
            },
        )
        .unwrap();
        store
            .finish(&answered(record("wacid.D2", Direction::Inbound, "2", 2), 1))
            .unwrap();
    }
    // Reopening exports nothing twice.
    drop(
        CdrStore::open(
            &db,
            StoreOptions {
                jsonl_path: Some(jsonl.clone()),
            },
        )
        .unwrap(),
    );
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<CallRecord>(l)
                .unwrap()
                .wa_call_id
                .clone()
        })
        .collect();
    assert_eq!(ids, ["wacid.D1", "wacid.D2"]);
}

#[test]
fn list_filters_by_time_number_direction_and_outcome() {
    let mut store = CdrStore::open_in_memory(StoreOptions::default()).unwrap();
    store
        .finish(&answered(
            record("wacid.1", Direction::Inbound, "111", 100),
            10,
        ))
        .unwrap();
    let mut rej = record("wacid.2", Direction::Outbound, "222", 200);
    rej.outcome = Outcome::Rejected;
    store.finish(&rej).unwrap();
    store
        .finish(&answered(
            record("wacid.3", Direction::Outbound, "111", 300),
            10,
        ))
        .unwrap();

    let ids = |f: CdrFilter| -> Vec<String> {
        store
            .list(&f)
            .unwrap()
            .into_iter()
            .map(|r| r.wa_call_id)
            .collect()
    };
    assert_eq!(ids(CdrFilter::default()), ["wacid.3", "wacid.2", "wacid.1"]);
    assert_eq!(
        ids(CdrFilter {
            number: Some("+111".into()),
            ..Default::default()
        }),
        ["wacid.3", "wacid.1"]
    );
    assert_eq!(
        ids(CdrFilter {
            direction: Some(Direction::Outbound),
            ..Default::default()
        }),
        ["wacid.3", "wacid.2"]
    );
    assert_eq!(
        ids(CdrFilter {
            outcome: Some(Outcome::Rejected),
            ..Default::default()
        }),
        ["wacid.2"]
    );
    assert_eq!(
        ids(CdrFilter {
            since: Some(UnixMillis(150_000)),
            until: Some(UnixMillis(300_000)),
            ..Default::default()
        }),
        ["wacid.2"]
    );
    assert_eq!(
        ids(CdrFilter {
            limit: Some(1),
            ..Default::default()
        }),
        ["wacid.3"]
    );
}

#[test]
fn a_database_from_a_newer_whatsip_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.sqlite");
    drop(CdrStore::open(&db, StoreOptions::default()).unwrap());
    set_user_version_99(&db);
    let err = CdrStore::open(&db, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, CdrError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

/// Sets `user_version` to 99 through the sqlite3 file format: the header field at offset 60.
fn set_user_version_99(path: &std::path::Path) {
    // Checkpointed at close, so the main file holds the header. Offset 60 is user_version (BE).
    let mut bytes = std::fs::read(path).expect("read db file");
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(path, bytes).expect("write db file");
}

#[test]
fn billed_outbound_record_exports_pulses_and_cost_to_csv() {
    let card = RateCard::new("USD", [("44", "0.0600")]).unwrap();
    let mut r = answered(
        record("wacid.E", Direction::Outbound, "447700900001", 50),
        56,
    );
    let pulses = billable_pulses(r.talk_time());
    r.billable_pulses = Some(pulses);
    r.estimated_cost = card.cost(&r.customer_number, pulses);
    assert_eq!(pulses, 10);
    let mut buf = Vec::new();
    write_csv(&[r], &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let row = text.lines().nth(1).unwrap();
    assert!(row.ends_with(",10,0.060000,USD"), "{row}");
}
