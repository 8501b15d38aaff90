//! The run's report: per-call results, the gateway's milestone log, its /metrics, and the
//! JSON + table written at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Options;

/// What one call did, as seen by the driver and its phone.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallResult {
    pub(crate) wa_call_id: String,
    pub(crate) dial_wall_us: i64,
    pub(crate) answered: bool,
    pub(crate) failure: Option<String>,
    pub(crate) dial_to_active_ms: Option<f64>,
    pub(crate) talk_s: f64,
    pub(crate) phone_sent: u64,
    pub(crate) phone_received: u64,
    pub(crate) phone_lost: u64,
    pub(crate) frames: u64,
    pub(crate) frames_with_signal: u64,
    pub(crate) longest_gap_ms: f64,
    pub(crate) tone_ok: bool,
    pub(crate) echoed: u64,
    pub(crate) rtt_us: Vec<u32>,
    pub(crate) hangup_ok: bool,
}

/// Per call: wall time (µs) of the gateway milestones, from its JSON log.
#[derive(Default, Debug)]
pub(crate) struct GwTimes {
    offer_us: Option<i64>,
    pre_accept_sent_us: Option<i64>,
    pre_accepted_us: Option<i64>,
    invite_us: Option<i64>,
    answered_us: Option<i64>,
    accept_sent_us: Option<i64>,
    accepted_us: Option<i64>,
}

/// Value of `"key":"…"` in a JSON log line (first occurrence).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

/// Value of `"key":123` in a JSON log line (first occurrence).
fn num_field(line: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The gateway's `call milestone` lines: the milestone's own stamp (`at_us`, emitted where
/// it happened) or, from an older gateway, the log line's timestamp.
pub(crate) fn parse_gateway_log(text: &str) -> HashMap<String, GwTimes> {
    let mut out: HashMap<String, GwTimes> = HashMap::new();
    for line in text.lines().filter(|l| l.contains("call milestone")) {
        let (Some(id), Some(ms)) = (field(line, "wa_call_id"), field(line, "milestone")) else {
            continue;
        };
        let us = match num_field(line, "at_us") {
            Some(us) => us,
            None => {
                match field(line, "timestamp").and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
                    Some(t) => t.as_microsecond(),
                    None => continue,
                }
            }
        };
        let e = out.entry(id.to_owned()).or_default();
        let slot = if ms.starts_with("offer received") {
            &mut e.offer_us
        } else if ms.starts_with("pre_accept sent") {
            &mut e.pre_accept_sent_us
        } else if ms.starts_with("pre_accept ok") {
            &mut e.pre_accepted_us
        } else if ms.starts_with("INVITE sent") {
            &mut e.invite_us
        } else if ms.starts_with("200 OK from the PBX") {
            &mut e.answered_us
        } else if ms.starts_with("accept sent") {
            &mut e.accept_sent_us
        } else if ms.starts_with("accept ok") {
            &mut e.accepted_us
        } else {
            continue;
        };
        slot.get_or_insert(us);
    }
    out
}

/// One sample of an OpenMetrics text exposition.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

pub(crate) fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.trim_end_matches('}');
                let labels = body
                    .split("\",")
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once("=\"")?;
                        Some((k.trim().to_owned(), v.trim_end_matches('"').to_owned()))
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// Sum of a counter over the samples whose labels include `with`.
pub(crate) fn counter(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for s in samples.iter().filter(|s| s.name == name) {
        if with
            .iter()
            .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        {
            found = true;
            sum += s.value;
        }
    }
    found.then_some(sum)
}

/// Quantiles (p50/p90/p99, count) of a histogram `name` per value of `label`, by linear
/// interpolation inside the bucket (in the histogram's unit).
pub(crate) fn histogram_quantiles(samples: &[Sample], name: &str, label: &str) -> Value {
    let bucket = format!("{name}_bucket");
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == bucket) {
        let key = s.labels.get(label).cloned().unwrap_or_default();
        let le = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(x) => match x.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
            None => continue,
        };
        series.entry(key).or_default().push((le, s.value));
    }
    let mut out = serde_json::Map::new();
    for (key, mut b) in series {
        b.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = b.last().map_or(0.0, |x| x.1);
        let q = |p: f64| -> Value {
            if total <= 0.0 {
                return Value::Null;
            }
            let rank = p * total;
            let mut prev = (0.0, 0.0);
            for &(le, c) in &b {
                if c >= rank {
                    if le.is_infinite() {
                        return json!(prev.0);
                    }
                    let span = c - prev.1;
                    let frac = if span > 0.0 {
                        (rank - prev.1) / span
                    } else {
                        1.0
                    };
                    return json!(prev.0 + (le - prev.0) * frac);
                }
                prev = (le, c);
            }
            json!(prev.0)
        };
        out.insert(
            if key.is_empty() { "all".into() } else { key },
            json!({"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "count": total}),
        );
    }
    Value::Object(out)
}

pub(crate) fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| round3(v[((v.len() - 1) as f64 * q).round() as usize]);
    json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round3(v[v.len() - 1]), "n": v.len()})
}

fn round3(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// Everything measured outside the per-call results.
pub(crate) struct Measures {
    pub(crate) wall_s: f64,
    pub(crate) placing_s: f64,
    pub(crate) gw_cpu: f64,
    pub(crate) self_cpu: f64,
    pub(crate) sipp_cpu: f64,
    pub(crate) rss0: u64,
    pub(crate) peak_live: usize,
    pub(crate) rss_at_peak: u64,
    pub(crate) peak_rss: u64,
    /// Gateway and driver cores busy while at least 90 % of the peak concurrency was live,
    /// and the mean live calls then: (gateway cores, driver cores, live, seconds).
    pub(crate) steady: Option<(f64, f64, f64, f64)>,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    /// Kernel UDP receive drops: SIPp echo, whatsip WhatsApp sockets, whatsip PBX legs, others.
    pub(crate) udp_drops: [u64; 6],
    pub(crate) gateway_cpus: String,
    pub(crate) driver_cpus: String,
    pub(crate) metrics: Vec<Sample>,
}

/// (JSON, table)
pub(crate) fn build_report(
    opts: &Options,
    results: &[CallResult],
    gw: &HashMap<String, GwTimes>,
    m: &Measures,
) -> (String, String) {
    let attempted = results.len();
    let answered = results.iter().filter(|r| r.answered).count();
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        if let Some(f) = &r.failure {
            *causes.entry(f.clone()).or_default() += 1;
        }
    }
    let failed: usize = results.iter().filter(|r| r.failure.is_some()).count();
    let mut dial_to_invite = Vec::new();
    let mut offer_to_invite = Vec::new();
    let mut pre_accept_rtt = Vec::new();
    let mut ans_to_accept_sent = Vec::new();
    let mut ans_to_accept = Vec::new();
    for r in results.iter().filter(|r| r.answered) {
        let Some(t) = gw.get(&r.wa_call_id) else {
            continue;
        };
        let ms = |a: i64, b: i64| (b - a) as f64 / 1000.0;
        if let Some(inv) = t.invite_us {
            dial_to_invite.push(ms(r.dial_wall_us, inv));
            if let Some(o) = t.offer_us {
                // the gateway waits for Meta's pre_accept answer before it INVITEs: that
                // round trip (the simulator's time) is not the gateway's
                let graph = match (t.pre_accept_sent_us, t.pre_accepted_us) {
                    (Some(a), Some(b)) if b >= a => {
                        pre_accept_rtt.push(ms(a, b));
                        b - a
                    }
                    _ => 0,
                };
                offer_to_invite.push(ms(o, inv - graph));
            }
        }
        if let Some(a) = t.answered_us {
            if let Some(s) = t.accept_sent_us {
                ans_to_accept_sent.push(ms(a, s));
            }
            if let Some(acc) = t.accepted_us {
                ans_to_accept.push(ms(a, acc));
            }
        }
    }
    let dial_to_active: Vec<f64> = results.iter().filter_map(|r| r.dial_to_active_ms).collect();
    let talk: f64 = results.iter().map(|r| r.talk_s).sum();
    let sent: u64 = results.iter().map(|r| r.phone_sent).sum();
    let recv: u64 = results.iter().map(|r| r.phone_received).sum();
    let lost: u64 = results.iter().map(|r| r.phone_lost).sum();
    let echoed: u64 = results.iter().map(|r| r.echoed).sum();
    let frames: u64 = results.iter().map(|r| r.frames).sum();
    let frames_sig: u64 = results.iter().map(|r| r.frames_with_signal).sum();
    let media = opts.profile.has_media();
    let gaps_over_1s = results
        .iter()
        .filter(|r| r.answered && media && r.longest_gap_ms > 1000.0)
        .count();
    let tone_ok = results.iter().filter(|r| r.answered && r.tone_ok).count();
    let gaps: Vec<f64> = results
        .iter()
        .filter(|r| r.answered && media)
        .map(|r| r.longest_gap_ms)
        .collect();
    let rtt: Vec<f64> = results
        .iter()
        .flat_map(|r| r.rtt_us.iter().map(|u| f64::from(*u) / 1000.0))
        .collect();
    let ratio = |a: f64, b: f64| if b > 0.0 { round3(a / b) } else { Value::Null };
    let pct = |a: f64, b: f64| {
        if b > 0.0 {
            round3(a * 100.0 / b)
        } else {
            Value::Null
        }
    };
    // gateway-side RTP counters (added at call end): received from WhatsApp / from the PBX
    let gw_rx_wa = counter(
        &m.metrics,
        "whatsip_rtp_packets_total",
        &[("leg", "whatsapp")],
    );
    let gw_rx_pbx = counter(&m.metrics, "whatsip_rtp_packets_total", &[("leg", "pbx")]);
    let loss = |from: Option<f64>, to: Option<f64>| match (from, to) {
        (Some(f), Some(t)) if f > 0.0 => round3((1.0 - t / f) * 100.0),
        _ => Value::Null,
    };
    let per_direction = json!({
        "phone_to_gateway_loss_pct": loss(Some(sent as f64), gw_rx_wa),
        "gateway_via_pbx_echo_loss_pct": loss(gw_rx_wa, gw_rx_pbx),
        "gateway_to_phone_loss_pct": loss(gw_rx_pbx, Some(recv as f64)),
        "gateway_rtp_received_from_whatsapp": gw_rx_wa,
        "gateway_rtp_received_from_pbx": gw_rx_pbx,
    });
    let added_latency = histogram_quantiles(
        &m.metrics,
        "whatsip_media_added_latency_seconds",
        "direction",
    );
    let setup_hist_invite =
        histogram_quantiles(&m.metrics, "whatsip_setup_webhook_to_invite_seconds", "");
    let setup_hist_accept =
        histogram_quantiles(&m.metrics, "whatsip_setup_answer_to_accept_seconds", "");
    let cpu_per_call_s = if talk > 0.0 {
        m.gw_cpu / talk
    } else {
        f64::NAN
    };
    let rss_per_call = if m.peak_live > 0 {
        (m.rss_at_peak.saturating_sub(m.rss0)) as f64 / m.peak_live as f64
    } else {
        f64::NAN
    };
    let steady = m.steady.map(|(gw, drv, live, secs)| {
        json!({
            "seconds": round3(secs),
            "live_calls": round3(live),
            "gateway_cores": round3(gw),
            "driver_cores": round3(drv),
            "calls_per_gateway_core": if gw > 0.0 { round3(live / gw) } else { Value::Null },
            "calls_per_driver_core": if drv > 0.0 { round3(live / drv) } else { Value::Null },
        })
    });
    let report = json!({
        "profile": opts.profile.name(),
        "phones": opts.phones.name(),
        "decode_one_in": opts.decode_one_in,
        "rate": opts.rate,
        "concurrent": opts.concurrent,
        "hold_s": opts.hold.as_secs_f64(),
        "total": opts.total,
        "wall_s": round3(m.wall_s),
        "loadavg_start": m.load_start,
        "loadavg_end": m.load_end,
        "cpus": {"gateway": m.gateway_cpus, "driver_and_sipp": m.driver_cpus},
        "calls": {
            "attempted": attempted,
            "answered": answered,
            "failed": failed,
            "failed_by_cause": causes,
            "dial_rate_achieved": ratio(attempted as f64, m.placing_s),
            "answered_per_s": ratio(answered as f64, m.placing_s),
        },
        "setup_ms": {
            "dial_to_pbx_invite": percentiles(dial_to_invite),
            "gw_webhook_to_pbx_invite": percentiles(offer_to_invite),
            "pre_accept_round_trip": percentiles(pre_accept_rtt),
            "gw_pbx_200_to_accept_sent": percentiles(ans_to_accept_sent),
            "pbx_200_to_meta_accept": percentiles(ans_to_accept),
            "dial_to_active": percentiles(dial_to_active),
            "metrics_webhook_to_invite_s": setup_hist_invite,
            "metrics_answer_to_accept_s": setup_hist_accept,
        },
        "gateway": {
            "cpu_s": round3(m.gw_cpu),
            "call_s": round3(talk),
            "cpu_s_per_call_s": round3(cpu_per_call_s * 1000.0).as_f64().map_or(Value::Null, |x| json!(x / 1000.0)),
            "cores_busy_avg": round3(m.gw_cpu / m.wall_s),
            "rss_idle_kib": m.rss0,
            "rss_at_peak_kib": m.rss_at_peak,
            "rss_max_kib": m.peak_rss,
            "peak_concurrent": m.peak_live,
            "rss_per_call_kib": round3(rss_per_call),
            "steady_state": steady,
        },
        "media": {
            "phone_packets_sent": sent,
            "phone_packets_received": recv,
            "roundtrip_received_over_sent": ratio(recv as f64, sent as f64),
            "echoed_frames_matched": echoed,
            "gateway_to_phone_seq_loss_pct": pct(lost as f64, (recv + lost) as f64),
            "per_direction": per_direction,
            "roundtrip_ms": percentiles(rtt),
            "gateway_added_latency_s": added_latency,
            "frames_analysed": frames,
            "frames_with_tone_pct": pct(frames_sig as f64, frames as f64),
            "calls_with_tone": tone_ok,
            "calls_with_gap_over_1s": gaps_over_1s,
            "longest_gap_ms": percentiles(gaps),
        },
        "udp_receive_drops": {
            "sipp_echo": m.udp_drops[0],
            "whatsip_whatsapp_sockets": m.udp_drops[1],
            "whatsip_pbx_legs": m.udp_drops[2],
            "phones_and_others": m.udp_drops[3],
            "sipp_sip": m.udp_drops[4],
            "whatsip_sip": m.udp_drops[5],
        },
        "load_generators": {
            "driver_sim_phones_cpu_s": round3(m.self_cpu),
            "driver_cores_avg": round3(m.self_cpu / m.wall_s),
            "driver_cpu_s_per_call_s": if talk > 0.0 { json!(m.self_cpu / talk) } else { Value::Null },
            "sipp_cpu_s": round3(m.sipp_cpu),
        },
    });
    let json_text = format!("{report}\n");
    (json_text, table(&report))
}

fn table(r: &Value) -> String {
    let p = |v: &Value| {
        let g = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        if v.get("n").and_then(Value::as_u64) == Some(0) {
            return "n/a".to_owned();
        }
        format!(
            "p50 {:.2} / p90 {:.2} / p99 {:.2} / max {:.2} ms (n {})",
            g("p50"),
            g("p90"),
            g("p99"),
            g("max"),
            g("n")
        )
    };
    let s = &r["setup_ms"];
    let g = &r["gateway"];
    let md = &r["media"];
    let lg = &r["load_generators"];
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| {} ({} phones) | rate {}/s | concurrent {} | hold {} s | total {} | wall {} s | load {} → {} | cpus gw {} / driver {} |",
        r["profile"].as_str().unwrap_or(""),
        r["phones"].as_str().unwrap_or(""),
        r["rate"],
        r["concurrent"],
        r["hold_s"],
        r["total"],
        r["wall_s"],
        r["loadavg_start"].as_str().unwrap_or(""),
        r["loadavg_end"].as_str().unwrap_or(""),
        r["cpus"]["gateway"].as_str().unwrap_or(""),
        r["cpus"]["driver_and_sipp"].as_str().unwrap_or(""),
    );
    let _ = writeln!(t, "|---|---|");
    let c = &r["calls"];
    let _ = writeln!(
        t,
        "| calls attempted / answered / failed | {} / {} / {} {} (dialled {}/s, answered {}/s) |",
        c["attempted"],
        c["answered"],
        c["failed"],
        c["failed_by_cause"],
        c["dial_rate_achieved"],
        c["answered_per_s"]
    );
    let _ = writeln!(
        t,
        "| gateway: webhook → PBX INVITE, less the pre_accept round trip | {} |",
        p(&s["gw_webhook_to_pbx_invite"])
    );
    let _ = writeln!(
        t,
        "| pre_accept round trip (simulator; excluded above) | {} |",
        p(&s["pre_accept_round_trip"])
    );
    let _ = writeln!(
        t,
        "| gateway: PBX 200 → accept sent | {} |",
        p(&s["gw_pbx_200_to_accept_sent"])
    );
    let _ = writeln!(
        t,
        "| dial → PBX INVITE (incl. simulator) | {} |",
        p(&s["dial_to_pbx_invite"])
    );
    let _ = writeln!(
        t,
        "| PBX 200 → Meta accept ok (incl. Graph round trip) | {} |",
        p(&s["pbx_200_to_meta_accept"])
    );
    let _ = writeln!(
        t,
        "| dial → call active (sim) | {} |",
        p(&s["dial_to_active"])
    );
    let _ = writeln!(
        t,
        "| whatsip CPU | {} s for {} call-s = {} CPU-s per call-s ({} cores avg); steady state {} |",
        g["cpu_s"], g["call_s"], g["cpu_s_per_call_s"], g["cores_busy_avg"], g["steady_state"]
    );
    let _ = writeln!(
        t,
        "| whatsip RSS | idle {} KiB, {} KiB at {} concurrent ({} KiB/call), max {} KiB |",
        g["rss_idle_kib"],
        g["rss_at_peak_kib"],
        g["peak_concurrent"],
        g["rss_per_call_kib"],
        g["rss_max_kib"]
    );
    let _ = writeln!(
        t,
        "| media | phones sent {}, received {} (ratio {}), echoed frames matched {}; gw→phone seq loss {} %; per direction {} |",
        md["phone_packets_sent"],
        md["phone_packets_received"],
        md["roundtrip_received_over_sent"],
        md["echoed_frames_matched"],
        md["gateway_to_phone_seq_loss_pct"],
        md["per_direction"]
    );
    let _ = writeln!(
        t,
        "| round trip phone → gw → PBX echo → gw → phone | {} |",
        p(&md["roundtrip_ms"])
    );
    let _ = writeln!(
        t,
        "| gateway added latency (/metrics) | {} |",
        md["gateway_added_latency_s"]
    );
    let _ = writeln!(
        t,
        "| audio | frames analysed {}, with tone {} %; tone ok {}; calls with gap > 1 s: {}; longest gap {} |",
        md["frames_analysed"],
        md["frames_with_tone_pct"],
        md["calls_with_tone"],
        md["calls_with_gap_over_1s"],
        p(&md["longest_gap_ms"])
    );
    let _ = writeln!(
        t,
        "| kernel UDP receive drops | {} |",
        r["udp_receive_drops"]
    );
    let _ = writeln!(
        t,
        "| load generators CPU | driver (sim + phones) {} s ({} cores avg, {} CPU-s per call-s), SIPp {} s |",
        lg["driver_sim_phones_cpu_s"],
        lg["driver_cores_avg"],
        lg["driver_cpu_s_per_call_s"],
        lg["sipp_cpu_s"]
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_interpolate_inside_buckets() {
        let text = "# TYPE x histogram\n\
            x_bucket{direction=\"up\",le=\"0.001\"} 50\n\
            x_bucket{direction=\"up\",le=\"0.002\"} 100\n\
            x_bucket{direction=\"up\",le=\"+Inf\"} 100\n\
            x_count{direction=\"up\"} 100\n";
        let s = parse_metrics(text);
        let q = histogram_quantiles(&s, "x", "direction");
        assert_eq!(q["up"]["p50"].as_f64(), Some(0.001));
        let p99 = q["up"]["p99"].as_f64().unwrap();
        assert!((p99 - 0.00198).abs() < 1e-9, "{q}");
        assert_eq!(counter(&s, "x_count", &[("direction", "up")]), Some(100.0));
    }

    #[test]
    fn milestone_lines_give_gateway_times() {
        let log = r#"{"timestamp":"2026-11-25T10:00:00.000000Z","fields":{"message":"call milestone","wa_call_id":"w1","milestone":"offer received","at_us":1000}}
{"timestamp":"2026-11-25T10:00:00.000000Z","fields":{"message":"call milestone","milestone":"INVITE sent to sip:a (attempt 0)","at_us":3500},"span":{"wa_call_id":"w1"}}"#;
        let t = parse_gateway_log(log);
        let w = &t["w1"];
        assert_eq!((w.offer_us, w.invite_us), (Some(1000), Some(3500)));
    }
}
