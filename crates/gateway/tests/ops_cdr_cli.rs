//! `whatsip cdr` as a process: list, show and export on a store filled here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use whatsip_cdr::{CallRecord, CdrStore, Direction, Outcome, StoreOptions, UnixMillis};

fn whatsip(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .args(args)
        .output()
        .expect("run whatsip");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cdr_subcommands_read_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.db");
    {
        let mut store = CdrStore::open(&db, StoreOptions::default()).unwrap();
        let t0 = 1_767_607_200_000; // 2026-01-05T10:00:00Z
        let mut a = CallRecord::new(
            "wacid.A",
            Direction::Inbound,
            "4930901820",
            "4915112345678",
            UnixMillis(t0),
        );
        a.answer_at = Some(UnixMillis(t0 + 1_000));
        a.end_at = Some(UnixMillis(t0 + 31_000));
        a.outcome = Outcome::Answered;
        store.finish(&a).unwrap();
        let mut b = CallRecord::new(
            "wacid.B",
            Direction::Inbound,
            "4930901820",
            "4915187654321",
            UnixMillis(t0 + 60_000),
        );
        b.end_at = Some(UnixMillis(t0 + 62_000));
        b.outcome = Outcome::Rejected;
        store.finish(&b).unwrap();
    }
    let db = db.to_str().unwrap();

    let (code, out, err) = whatsip(&["cdr", "--db", db, "list", "--outcome", "answered"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(
        rows[0].contains("answered") && rows[0].ends_with("wacid.A"),
        "{out}"
    );

    let (code, out, err) = whatsip(&["cdr", "--db", db, "show", "wacid.B"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "rejected");

    let (code, out, err) = whatsip(&[
        "cdr",
        "--db",
        db,
        "export",
        "--format",
        "csv",
        "--since",
        "2026-01-05T10:00:30Z",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("wacid.B,"), "{out}");

    let (code, _, err) = whatsip(&["cdr", "--db", db, "list", "--direction", "sideways"]);
    assert_eq!(code, 1);
    assert!(err.contains("--direction"), "{err}");
}
