//! Smoke runs of the load harness (`examples/bench_load.rs`, `scripts/bench/run.sh`) so it
//! cannot rot: three transcoded calls held three seconds through a separate `whatsip`
//! process, SIPp echoing as the PBX and whatsip-sim's light WebRTC phones as the users;
//! three signalling-only calls; three outbound calls (SIPp as a UAC playing a generated
//! pcap, the users picking up); and a mixed run of three calls each way. Asserts that the
//! calls succeeded, the tones arrived and that every report field is present with a value —
//! never a speed.
//!
//! SIPp plays the pcap through a raw socket: without root or `CAP_NET_RAW` the outbound and
//! mixed runs use the signalling profile instead (no RTP from the PBX), and say so.
//!
//! Needs SIPp (`scripts/setup.sh`): without it the tests fail when `CI=true` and are skipped
//! loudly otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[path = "../examples/bench_load.rs"]
mod bench_load;
#[allow(dead_code)] // the smoke uses only `sipp()` of the shared harness
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::sipp;
use serde_json::Value;

/// `report[a][b]…` as a number, or a panic naming the path.
fn number(report: &Value, path: &[&str]) -> f64 {
    let mut v = report;
    for k in path {
        v = v
            .get(k)
            .unwrap_or_else(|| panic!("{path:?} missing from the report: {report}"));
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is {v}, not a number: {report}"))
}

async fn run(profile: bench_load::Profile, hold: Duration, name: &str) -> Option<Value> {
    run_dir(profile, bench_load::Direction::Inbound, hold, name).await
}

async fn run_dir(
    profile: bench_load::Profile,
    direction: bench_load::Direction,
    hold: Duration,
    name: &str,
) -> Option<Value> {
    let sipp = sipp()?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    let mut opts = bench_load::Options::new(
        profile,
        PathBuf::from(env!("CARGO_BIN_EXE_whatsip")),
        sipp,
        repo,
    );
    let work =
        std::env::temp_dir().join(format!("whatsip-bench-smoke-{name}-{}", std::process::id()));
    opts.direction = direction;
    opts.rate = 2.0;
    opts.concurrent = 3;
    opts.hold = hold;
    opts.total = 3;
    opts.decode_one_in = 5;
    opts.work_dir = work.clone();
    opts.out = work.join("report.json");
    let json = bench_load::run(opts).await.expect("the load run completes");
    let written = std::fs::read_to_string(work.join("report.json")).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(json, written, "the report file holds the report");
    Some(serde_json::from_str(&json).expect("the report is JSON"))
}

/// Every call answered, none failed, and the common report fields present.
fn assert_complete(r: &Value, setup_sections: &[&str]) {
    assert_eq!(number(r, &["calls", "attempted"]), 3.0, "{r}");
    assert_eq!(number(r, &["calls", "answered"]), 3.0, "{r}");
    assert_eq!(number(r, &["calls", "failed"]), 0.0, "{r}");
    assert_eq!(
        r["calls"]["failed_by_cause"],
        serde_json::json!({}),
        "no failure cause: {r}"
    );
    for section in setup_sections {
        for p in ["p50", "p90", "p99", "max"] {
            let v = number(r, &["setup_ms", section, p]);
            assert!(v >= 0.0, "{section}.{p} = {v}: {r}");
        }
        assert_eq!(
            number(r, &["setup_ms", section, "n"]),
            3.0,
            "{section}: one sample per call: {r}"
        );
    }
    for path in [
        ["gateway", "cpu_s"],
        ["gateway", "call_s"],
        ["gateway", "cpu_s_per_call_s"],
        ["gateway", "cores_busy_avg"],
        ["gateway", "rss_idle_kib"],
        ["gateway", "rss_at_peak_kib"],
        ["gateway", "rss_max_kib"],
        ["gateway", "peak_concurrent"],
        ["gateway", "rss_per_call_kib"],
        ["udp_receive_drops", "sipp_echo"],
        ["udp_receive_drops", "whatsip_whatsapp_sockets"],
        ["udp_receive_drops", "whatsip_pbx_legs"],
        ["udp_receive_drops", "phones_and_others"],
        ["load_generators", "driver_sim_phones_cpu_s"],
        ["load_generators", "driver_cores_avg"],
        ["load_generators", "sipp_cpu_s"],
        ["calls", "dial_rate_achieved"],
    ] {
        let v = number(r, &path);
        assert!(v >= 0.0, "{path:?} = {v}: {r}");
    }
    assert!(number(r, &["wall_s"]) > 0.0, "{r}");
    assert!(number(r, &["gateway", "rss_idle_kib"]) > 0.0, "{r}");
    assert!(!r["loadavg_start"].as_str().unwrap_or("").is_empty(), "{r}");
    assert!(
        !r["cpus"]["gateway"].as_str().unwrap_or("").is_empty(),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_harness_smoke_three_transcoded_calls() {
    let Some(r) = run(
        bench_load::Profile::Transcode,
        Duration::from_secs(3),
        "transcode",
    )
    .await
    else {
        return;
    };
    assert_eq!(r["phones"], "light", "{r}");
    assert_complete(
        &r,
        &[
            "dial_to_pbx_invite",
            "gw_webhook_to_pbx_invite",
            "gw_pbx_200_to_accept_sent",
            "pbx_200_to_meta_accept",
            "dial_to_active",
        ],
    );
    // every call's tone came back through the PBX's echo and the transcoder
    assert_eq!(number(&r, &["media", "calls_with_tone"]), 3.0, "{r}");
    assert!(
        number(&r, &["media", "phone_packets_received"]) > 0.0,
        "{r}"
    );
    assert!(number(&r, &["media", "frames_analysed"]) > 0.0, "{r}");
    for p in ["p50", "p99", "max"] {
        assert!(number(&r, &["media", "longest_gap_ms", p]) >= 0.0, "{r}");
    }
    for key in [
        "phone_packets_sent",
        "roundtrip_received_over_sent",
        "gateway_to_phone_seq_loss_pct",
        "frames_with_tone_pct",
        "calls_with_gap_over_1s",
    ] {
        assert!(number(&r, &["media", key]) >= 0.0, "{key}: {r}");
    }
    // the gateway's /metrics was scraped: its RTP counters per leg
    assert!(
        number(
            &r,
            &[
                "media",
                "per_direction",
                "gateway_rtp_received_from_whatsapp"
            ]
        ) > 0.0,
        "{r}"
    );
    assert!(
        number(&r, &["media", "per_direction", "phone_to_gateway_loss_pct"]).is_finite(),
        "{r}"
    );
    assert!(
        number(&r, &["gateway", "call_s"]) >= 9.0,
        "3 calls held 3 s: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_harness_smoke_three_signalling_only_calls() {
    let Some(r) = run(
        bench_load::Profile::Signalling,
        Duration::from_millis(500),
        "signalling",
    )
    .await
    else {
        return;
    };
    assert_complete(
        &r,
        &[
            "dial_to_pbx_invite",
            "gw_webhook_to_pbx_invite",
            "gw_pbx_200_to_accept_sent",
            "dial_to_active",
        ],
    );
    // no audio in this profile: the phones sent nothing and no gap is judged
    assert_eq!(number(&r, &["media", "phone_packets_sent"]), 0.0, "{r}");
    assert_eq!(number(&r, &["media", "calls_with_gap_over_1s"]), 0.0, "{r}");
}

/// Whether this process may open raw sockets (root or `CAP_NET_RAW` in its effective set),
/// which SIPp's pcap play needs.
fn can_play_pcap() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    cap_eff & (1 << 13) != 0
}

/// The profile of the outbound smoke runs: Opus pass-through with the PBX's pcap, or
/// signalling only where SIPp cannot play a pcap.
fn outbound_profile() -> bench_load::Profile {
    if can_play_pcap() {
        bench_load::Profile::Passthrough
    } else {
        eprintln!(
            "bench_smoke: no CAP_NET_RAW, SIPp cannot play the PBX's pcap: outbound smoke runs signalling only"
        );
        bench_load::Profile::Signalling
    }
}

/// The outbound section: three business-initiated calls answered and ended by the PBX's BYE,
/// the gateway's own setup times for each, and (with media) the PBX's tone heard.
fn assert_outbound_complete(r: &Value, media: bool) {
    let o = &r["outbound"];
    assert!(o.is_object(), "outbound section: {r}");
    assert_eq!(number(o, &["calls", "attempted"]), 3.0, "{r}");
    assert_eq!(number(o, &["calls", "answered"]), 3.0, "{r}");
    assert_eq!(number(o, &["calls", "failed"]), 0.0, "{r}");
    assert_eq!(o["calls"]["failed_by_cause"], serde_json::json!({}), "{r}");
    assert_eq!(number(o, &["calls", "sipp_uac", "created"]), 3.0, "{r}");
    assert_eq!(number(o, &["calls", "sipp_uac", "successful"]), 3.0, "{r}");
    for section in [
        "gw_pbx_invite_to_connect_sent",
        "gw_meta_accepted_to_pbx_200",
        "connect_sent_to_meta_accepted",
        "pbx_invite_to_pbx_200",
    ] {
        for p in ["p50", "p90", "p99", "max"] {
            let v = number(o, &["setup_ms", section, p]);
            assert!(v >= 0.0, "{section}.{p} = {v}: {r}");
        }
        assert_eq!(
            number(o, &["setup_ms", section, "n"]),
            3.0,
            "{section}: one sample per call: {r}"
        );
    }
    // each call is held 3 s after SIPp's ACK: at least that between 200 OK and the end
    assert!(number(o, &["call_s"]) >= 8.9, "3 calls held 3 s: {r}");
    for key in [
        "phone_packets_sent",
        "phone_packets_received",
        "calls_with_gap_over_1s",
        "calls_with_tone",
        "pbx_packets_expected",
    ] {
        assert!(number(o, &["media", key]) >= 0.0, "{key}: {r}");
    }
    if media {
        // the PBX's 600 Hz tone crossed the gateway to every phone, without a long gap
        assert_eq!(number(o, &["media", "calls_with_tone"]), 3.0, "{r}");
        assert_eq!(number(o, &["media", "tone_hz_expected"]), 600.0, "{r}");
        assert_eq!(number(o, &["media", "calls_with_gap_over_1s"]), 0.0, "{r}");
        assert!(number(o, &["media", "phone_packets_received"]) > 0.0, "{r}");
        assert!(number(o, &["media", "phone_packets_sent"]) > 0.0, "{r}");
        assert!(
            number(&r["gateway_media"], &["gateway_rtp_received_from_pbx"]) > 0.0,
            "{r}"
        );
        assert!(
            number(&r["gateway_media"], &["gateway_rtp_received_from_whatsapp"]) > 0.0,
            "{r}"
        );
    }
    assert!(
        number(r, &["load_generators", "sipp_uac_cpu_s"]) >= 0.0,
        "{r}"
    );
    assert!(
        number(r, &["udp_receive_drops", "sipp_uac_sip"]) >= 0.0,
        "{r}"
    );
    for path in [
        ["gateway", "cpu_s"],
        ["gateway", "call_s"],
        ["gateway", "cpu_s_per_call_s"],
        ["gateway", "rss_idle_kib"],
        ["gateway", "rss_at_peak_kib"],
        ["gateway", "peak_concurrent"],
        ["gateway", "rss_per_call_kib"],
        ["load_generators", "driver_sim_phones_cpu_s"],
    ] {
        let v = number(r, &path);
        assert!(v >= 0.0, "{path:?} = {v}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_harness_smoke_three_outbound_calls() {
    let profile = outbound_profile();
    let Some(r) = run_dir(
        profile,
        bench_load::Direction::Outbound,
        Duration::from_secs(3),
        "outbound",
    )
    .await
    else {
        return;
    };
    assert_eq!(r["direction"], "outbound", "{r}");
    assert!(r.get("calls").is_none(), "no inbound section: {r}");
    assert_outbound_complete(&r, profile.has_media());
    assert_eq!(r["gateway_media"]["scope"], "outbound calls", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_harness_smoke_mixed_three_calls_each_way() {
    let profile = outbound_profile();
    let Some(r) = run_dir(
        profile,
        bench_load::Direction::Mixed,
        Duration::from_secs(3),
        "mixed",
    )
    .await
    else {
        return;
    };
    assert_eq!(r["direction"], "mixed", "{r}");
    assert_complete(
        &r,
        &[
            "dial_to_pbx_invite",
            "gw_webhook_to_pbx_invite",
            "gw_pbx_200_to_accept_sent",
            "dial_to_active",
        ],
    );
    assert_outbound_complete(&r, profile.has_media());
    if profile.has_media() {
        // the inbound phones heard their own 1 kHz tone back through the PBX's echo
        assert_eq!(number(&r, &["media", "calls_with_tone"]), 3.0, "{r}");
    }
    // both directions were live at once at some point
    assert!(number(&r, &["gateway", "peak_concurrent"]) >= 4.0, "{r}");
    assert!(
        number(&r, &["gateway", "call_s_outbound"]) >= 8.9
            && number(&r, &["gateway", "call_s_inbound"]) >= 8.9,
        "{r}"
    );
}
