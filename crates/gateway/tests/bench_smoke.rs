//! Smoke run of the load harness (`examples/bench_load.rs`, `scripts/bench/run.sh`) so it
//! cannot rot: three transcoded calls held three seconds through a separate `whatsip`
//! process, SIPp echoing as the PBX and whatsip-sim's WebRTC phones as the users. Asserts
//! that the calls succeeded, the tone made the round trip and that every report field is
//! present with a value — never a speed.
//!
//! Needs SIPp (`scripts/setup.sh`): without it the test fails when `CI=true` and is skipped
//! loudly otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[path = "../examples/bench_load.rs"]
mod bench_load;

use std::path::{Path, PathBuf};
use std::time::Duration;

fn sipp() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("sipp"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "sipp not found on PATH (install with scripts/setup.sh)"
        );
        eprintln!(
            "\n!!!!!!!! SIPp NOT FOUND: SKIPPING BENCH SMOKE TEST (run scripts/setup.sh) !!!!!!!!\n"
        );
    }
    found
}

/// The raw JSON value after `"key":` (first occurrence), up to `,` or `}`.
fn value<'a>(json: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("`{key}` missing from the report: {json}"))
        + pat.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    &rest[..end]
}

fn number(json: &str, key: &str) -> f64 {
    let v = value(json, key);
    v.parse()
        .unwrap_or_else(|_| panic!("`{key}` is `{v}`, not a number: {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_harness_smoke_three_transcoded_calls() {
    let Some(sipp) = sipp() else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    let work = std::env::temp_dir().join(format!("whatsip-bench-smoke-{}", std::process::id()));
    let out = work.join("report.json");
    let opts = bench_load::Options {
        profile: bench_load::Profile::Transcode,
        rate: 2.0,
        concurrent: 3,
        hold: Duration::from_secs(3),
        total: 3,
        whatsip: PathBuf::from(env!("CARGO_BIN_EXE_whatsip")),
        sipp,
        repo,
        work_dir: work.clone(),
        out: out.clone(),
    };
    let json = bench_load::run(opts).await.expect("the load run completes");
    let written = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(json, written, "the report file holds the report");

    // every call went through and the tone came back through the PBX's echo
    assert_eq!(number(&json, "attempted"), 3.0, "{json}");
    assert_eq!(number(&json, "answered"), 3.0, "{json}");
    assert_eq!(number(&json, "failed"), 0.0, "{json}");
    assert_eq!(
        value(&json, "failed_by_cause"),
        "{",
        "no failure cause: {json}"
    );
    assert_eq!(number(&json, "calls_with_tone"), 3.0, "{json}");
    assert!(number(&json, "phone_packets_received") > 0.0, "{json}");

    // the report is complete: every measurement present and numeric
    for section in [
        "dial_to_pbx_invite",
        "pbx_200_to_meta_accept",
        "dial_to_active",
        "longest_gap_ms",
    ] {
        let start = json.find(&format!("\"{section}\":")).expect(section);
        let obj = &json[start..];
        let obj = &obj[..obj.find('}').unwrap()];
        for p in ["p50", "p90", "p99", "max"] {
            let v = number(obj, p);
            assert!(v >= 0.0, "{section}.{p} = {v}: {json}");
        }
        assert_eq!(
            number(obj, "n"),
            3.0,
            "{section}: one sample per call: {json}"
        );
    }
    for key in [
        "wall_s",
        "cpu_s",
        "call_s",
        "cpu_s_per_call_s",
        "cores_busy_avg",
        "rss_idle_kib",
        "rss_at_peak_kib",
        "rss_max_kib",
        "peak_concurrent",
        "rss_per_call_kib",
        "phone_packets_sent",
        "roundtrip_received_over_sent",
        "gateway_to_phone_loss_pct",
        "frames_with_tone_pct",
        "calls_with_gap_over_1s",
        "sipp_echo",
        "whatsip_whatsapp_socket",
        "whatsip_pbx_legs",
        "phones_and_others",
        "driver_sim_phones_cpu_s",
        "sipp_cpu_s",
    ] {
        let v = number(&json, key);
        assert!(v >= 0.0, "{key} = {v}: {json}");
    }
    assert!(number(&json, "rss_idle_kib") > 0.0, "{json}");
    assert!(number(&json, "call_s") >= 9.0, "3 calls held 3 s: {json}");
    assert!(!value(&json, "loadavg_start").is_empty(), "{json}");
}
