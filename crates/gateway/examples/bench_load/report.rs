//! The run's report: per-call results, the gateway's milestone log, its /metrics, and the
//! JSON + table written at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::{Value, json};
use whatsip_media::phone::PhoneStatus;

use super::Options;
use super::outbound::{Watched, sipp_stat, user_number};

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

/// Fills the phone's final counters into `r`; a phone failure, a phone that never had ICE
/// and DTLS up, or a tone other than `tone_hz` is the call's failure or a missing tone.
pub(crate) fn phone_result(r: &mut CallResult, s: &PhoneStatus, connected: bool, tone_hz: f64) {
    r.phone_sent = s.stats.rtp_packets_sent;
    r.phone_received = s.audio.packets_received;
    r.phone_lost = s.audio.lost_packets;
    r.frames = s.audio.audio_frames;
    r.frames_with_signal = s.audio.frames_with_signal;
    r.longest_gap_ms = s.audio.longest_gap.as_secs_f64() * 1000.0;
    r.echoed = s.audio.echoed_frames;
    r.rtt_us.clone_from(&s.audio.rtt_us);
    r.tone_ok = s
        .audio
        .tone
        .as_ref()
        .is_some_and(|t| (t.freq_hz - tone_hz).abs() <= 50.0);
    if let Some(f) = &s.failure {
        r.failure = Some(format!("phone: {f}"));
    } else if !connected {
        r.failure = Some("phone: ICE/DTLS not connected at hang-up".into());
    }
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
    for line in text
        .lines()
        .filter(|l| l.contains("call milestone") && !l.contains("\"dir\":\"outbound\""))
    {
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

/// One business-initiated call as the gateway logged it (wall-clock µs of its milestones).
#[derive(Default, Debug, Clone)]
pub(crate) struct OutTimes {
    /// The WhatsApp user, digits only.
    pub(crate) customer: String,
    pub(crate) invite_us: Option<i64>,
    pub(crate) connect_sent_us: Option<i64>,
    pub(crate) user_accepted_us: Option<i64>,
    /// The 200 OK to the PBX (milestone `Accepted`).
    pub(crate) ok_sent_us: Option<i64>,
    pub(crate) ended_us: Option<i64>,
    pub(crate) ended: Option<String>,
    pub(crate) refused: Option<String>,
}

/// The gateway's business-initiated calls (`"dir":"outbound"` milestone lines), by user.
pub(crate) fn parse_outbound_log(text: &str) -> HashMap<String, OutTimes> {
    let mut by_sip: HashMap<String, OutTimes> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.contains("call milestone") && l.contains("\"dir\":\"outbound\""))
    {
        let (Some(sip), Some(ms)) = (field(line, "sip_call_id"), field(line, "milestone")) else {
            continue;
        };
        let us = num_field(line, "at_us").or_else(|| {
            field(line, "timestamp")
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_microsecond())
        });
        let Some(us) = us else { continue };
        let e = by_sip.entry(sip.to_owned()).or_default();
        if let Some(c) = ms.strip_prefix("INVITE from the PBX for ") {
            e.customer = c.trim_start_matches('+').to_owned();
            e.invite_us.get_or_insert(us);
        } else if ms == "connect sent" {
            e.connect_sent_us.get_or_insert(us);
        } else if ms.starts_with("ACCEPTED from Meta") {
            e.user_accepted_us.get_or_insert(us);
        } else if ms.starts_with("accept ok") {
            e.ok_sent_us.get_or_insert(us);
        } else if let Some(r) = ms.strip_prefix("refused by the dial plan: ") {
            e.refused.get_or_insert_with(|| r.to_owned());
        } else if let Some(r) = ms.strip_prefix("ended: ") {
            e.ended_us.get_or_insert(us);
            // "pbx hangup after 12.3 s" → "pbx hangup"
            let reason = r.split(" after ").next().unwrap_or(r);
            e.ended.get_or_insert_with(|| reason.to_owned());
        }
    }
    let mut out = HashMap::new();
    for t in by_sip.into_values().filter(|t| !t.customer.is_empty()) {
        out.entry(t.customer.clone()).or_insert(t);
    }
    out
}

/// The outbound direction's calls, joined from the gateway's log, the simulator and the
/// phones, plus SIPp's own counts.
pub(crate) struct OutboundRun {
    pub(crate) results: Vec<CallResult>,
    pub(crate) times: Vec<OutTimes>,
    /// SIPp UAC: (calls created, successful, failed), from its statistics file.
    pub(crate) sipp: (Option<u64>, Option<u64>, Option<u64>),
    /// First to last INVITE at the gateway, seconds.
    pub(crate) placing_s: f64,
    /// Packets in the pcap each call played (0: none).
    pub(crate) pcap_packets: u64,
    /// The tone the phones should hear (the PBX's), if any.
    pub(crate) tone_hz: Option<f64>,
}

/// Joins the views of each outbound call SIPp created (users in call order).
pub(crate) fn outbound_results(
    opts: &Options,
    times: &HashMap<String, OutTimes>,
    watched: &HashMap<String, Watched>,
    uac_stat: &str,
    tone_hz: Option<f64>,
    pcap_packets: u64,
) -> OutboundRun {
    let created = sipp_stat(uac_stat, "TotalCallCreated");
    let ok = sipp_stat(uac_stat, "SuccessfulCall(C)");
    let failed = sipp_stat(uac_stat, "FailedCall(C)");
    // SIPp takes the users file's lines in call order: its first `created` users were called.
    // Without a statistics file, count every user the gateway or the simulator saw.
    let attempted = match created {
        Some(c) => (c as usize).min(opts.total),
        None => (0..opts.total)
            .rposition(|i| {
                let u = user_number(i);
                times.contains_key(&u) || watched.contains_key(&u)
            })
            .map_or(0, |i| i + 1),
    };
    let mut results = Vec::with_capacity(attempted);
    let mut joined = Vec::with_capacity(attempted);
    for i in 0..attempted {
        let user = user_number(i);
        let t = times.get(&user).cloned().unwrap_or_default();
        let w = watched.get(&user);
        let mut r = CallResult {
            wa_call_id: w.map(|w| w.wa_call_id.clone()).unwrap_or_default(),
            dial_wall_us: t.invite_us.unwrap_or(0),
            ..CallResult::default()
        };
        let sim_active = w.is_some_and(|w| w.active);
        r.answered = t.ok_sent_us.is_some() && sim_active;
        if let (Some(a), Some(b)) = (t.invite_us, t.ok_sent_us) {
            r.dial_to_active_ms = Some((b - a) as f64 / 1000.0);
        }
        if let (Some(a), Some(b)) = (t.ok_sent_us, t.ended_us) {
            r.talk_s = (b - a) as f64 / 1e6;
        }
        r.hangup_ok = w.is_some_and(|w| w.terminated) && t.ended.is_some();
        r.failure = if t.invite_us.is_none() && w.is_none() {
            Some("no INVITE reached the gateway".into())
        } else if let Some(reason) = &t.refused {
            Some(format!("gateway refused: {reason}"))
        } else if !sim_active {
            Some(match w.and_then(|w| w.end.clone()) {
                Some(end) => format!("ended before answer: {end}"),
                None if w.is_some() => "not answered".into(),
                None => format!(
                    "no call at Meta (gateway: {})",
                    t.ended.as_deref().unwrap_or("no end logged")
                ),
            })
        } else if t.ok_sent_us.is_none() {
            Some("answered at Meta, no 200 OK to the PBX".into())
        } else {
            match t.ended.as_deref() {
                Some("pbx hangup") => None,
                Some(other) => Some(format!("ended early: {other}")),
                None => Some("no end logged by the gateway".into()),
            }
        };
        if r.answered {
            match w.and_then(|w| w.probe.as_ref().and_then(|p| p.status().map(|s| (s, w)))) {
                Some((s, w)) => {
                    let before = r.failure.clone();
                    phone_result(&mut r, &s, w.connected, tone_hz.unwrap_or(0.0));
                    if before.is_some() {
                        r.failure = before;
                    }
                }
                None => r.failure = r.failure.or(Some("no phone status".into())),
            }
        }
        results.push(r);
        joined.push(t);
    }
    let invites: Vec<i64> = joined.iter().filter_map(|t| t.invite_us).collect();
    let placing_s = match (invites.iter().min(), invites.iter().max()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => 0.0,
    };
    OutboundRun {
        results,
        times: joined,
        sipp: (created, ok, failed),
        placing_s,
        pcap_packets,
        tone_hz,
    }
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
    /// Seconds the driver spent placing the inbound calls.
    pub(crate) placing_s: f64,
    pub(crate) gw_cpu: f64,
    pub(crate) self_cpu: f64,
    pub(crate) sipp_cpu: f64,
    /// The SIPp UAC of the outbound direction.
    pub(crate) uac_cpu: Option<f64>,
    pub(crate) rss0: u64,
    pub(crate) peak_live: usize,
    pub(crate) rss_at_peak: u64,
    pub(crate) peak_rss: u64,
    /// Gateway and driver cores busy while at least 90 % of the peak concurrency was live,
    /// and the mean live calls then: (gateway cores, driver cores, live, seconds, live
    /// outbound).
    pub(crate) steady: Option<(f64, f64, f64, f64, f64)>,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    /// Kernel UDP receive drops: SIPp echo, whatsip WhatsApp sockets, whatsip PBX legs,
    /// others, SIPp's SIP, whatsip's SIP, the SIPp UAC's SIP, the SIPp UAC's unread media
    /// socket (the first call's RTP towards the PBX, expected).
    pub(crate) udp_drops: [u64; 8],
    pub(crate) gateway_cpus: String,
    pub(crate) driver_cpus: String,
    pub(crate) metrics: Vec<Sample>,
}

fn ratio(a: f64, b: f64) -> Value {
    if b > 0.0 { round3(a / b) } else { Value::Null }
}

fn pct(a: f64, b: f64) -> Value {
    if b > 0.0 {
        round3(a * 100.0 / b)
    } else {
        Value::Null
    }
}

/// Loss in percent from `from` packets to `to` packets.
fn loss(from: Option<f64>, to: Option<f64>) -> Value {
    match (from, to) {
        (Some(f), Some(t)) if f > 0.0 => round3((1.0 - t / f) * 100.0),
        _ => Value::Null,
    }
}

/// Attempted / answered / failed by cause; `dialled` calls were placed in `placing_s`.
fn calls_section(results: &[CallResult], placing_s: f64, dialled: f64) -> Value {
    let attempted = results.len();
    let answered = results.iter().filter(|r| r.answered).count();
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        if let Some(f) = &r.failure {
            *causes.entry(f.clone()).or_default() += 1;
        }
    }
    let failed: usize = results.iter().filter(|r| r.failure.is_some()).count();
    json!({
        "attempted": attempted,
        "answered": answered,
        "failed": failed,
        "failed_by_cause": causes,
        "dial_rate_achieved": ratio(dialled, placing_s),
        "answered_per_s": ratio(answered as f64, placing_s),
    })
}

/// What the phones sent and heard. `tone_hz`: the tone they should hear.
fn phone_media(results: &[CallResult], media: bool) -> Value {
    let sent: u64 = results.iter().map(|r| r.phone_sent).sum();
    let recv: u64 = results.iter().map(|r| r.phone_received).sum();
    let lost: u64 = results.iter().map(|r| r.phone_lost).sum();
    let frames: u64 = results.iter().map(|r| r.frames).sum();
    let frames_sig: u64 = results.iter().map(|r| r.frames_with_signal).sum();
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
    json!({
        "phone_packets_sent": sent,
        "phone_packets_received": recv,
        "gateway_to_phone_seq_loss_pct": pct(lost as f64, (recv + lost) as f64),
        "frames_analysed": frames,
        "frames_with_tone_pct": pct(frames_sig as f64, frames as f64),
        "calls_with_tone": tone_ok,
        "calls_with_gap_over_1s": gaps_over_1s,
        "longest_gap_ms": percentiles(gaps),
    })
}

/// Sets `v[key]` on a JSON object.
fn put(v: &mut Value, key: &str, x: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), x);
    }
}

/// The outbound direction's section.
fn outbound_section(
    out: &OutboundRun,
    hold_s: f64,
    media: bool,
    alone: bool,
    m: &Measures,
) -> Value {
    let ms = |a: i64, b: i64| (b - a) as f64 / 1000.0;
    let mut invite_to_connect = Vec::new();
    let mut connect_to_accepted = Vec::new();
    let mut accepted_to_200 = Vec::new();
    for (r, t) in out.results.iter().zip(&out.times) {
        if let (Some(a), Some(b)) = (t.invite_us, t.connect_sent_us) {
            invite_to_connect.push(ms(a, b));
        }
        if !r.answered {
            continue;
        }
        if let (Some(a), Some(b)) = (t.connect_sent_us, t.user_accepted_us) {
            connect_to_accepted.push(ms(a, b));
        }
        if let (Some(a), Some(b)) = (t.user_accepted_us, t.ok_sent_us) {
            accepted_to_200.push(ms(a, b));
        }
    }
    let invite_to_200: Vec<f64> = out
        .results
        .iter()
        .filter(|r| r.answered)
        .filter_map(|r| r.dial_to_active_ms)
        .collect();
    let talk: f64 = out.results.iter().map(|r| r.talk_s).sum();
    let answered = out.results.iter().filter(|r| r.answered).count();
    // the span from the first to the last INVITE holds one call fewer than were placed
    let dialled = out.results.len().saturating_sub(1) as f64;
    let mut calls = calls_section(&out.results, out.placing_s, dialled);
    put(
        &mut calls,
        "sipp_uac",
        json!({"created": out.sipp.0, "successful": out.sipp.1, "failed": out.sipp.2}),
    );
    let mut media_v = phone_media(&out.results, media);
    put(&mut media_v, "tone_hz_expected", json!(out.tone_hz));
    // SIPp plays the pcap from the ACK until its BYE, about `hold` seconds per call
    let expected = if media {
        out.results
            .iter()
            .filter(|r| r.answered)
            .map(|_| (hold_s * super::pcap::PACKETS_PER_S).min(out.pcap_packets as f64))
            .sum::<f64>()
    } else {
        0.0
    };
    put(
        &mut media_v,
        "pbx_packets_expected",
        json!(expected.round()),
    );
    if alone {
        // the gateway's counters are this direction's only
        let gw_rx_wa = counter(
            &m.metrics,
            "whatsip_rtp_packets_total",
            &[("leg", "whatsapp")],
        );
        let gw_rx_pbx = counter(&m.metrics, "whatsip_rtp_packets_total", &[("leg", "pbx")]);
        let sent: u64 = out.results.iter().map(|r| r.phone_sent).sum();
        let recv: u64 = out.results.iter().map(|r| r.phone_received).sum();
        put(
            &mut media_v,
            "per_direction",
            json!({
                "pbx_to_gateway_loss_pct_vs_expected": if expected > 0.0 { loss(Some(expected), gw_rx_pbx) } else { Value::Null },
                "gateway_to_phone_loss_pct": loss(gw_rx_pbx, Some(recv as f64)),
                "phone_to_gateway_loss_pct": loss(Some(sent as f64), gw_rx_wa),
                "gateway_rtp_received_from_whatsapp": gw_rx_wa,
                "gateway_rtp_received_from_pbx": gw_rx_pbx,
            }),
        );
    } else {
        put(
            &mut media_v,
            "per_direction",
            json!("the gateway's counters are combined with the inbound calls: see gateway_media"),
        );
    }
    json!({
        "calls": calls,
        "call_s": round3(talk),
        "answered_call_s_mean": if answered > 0 { round3(talk / answered as f64) } else { Value::Null },
        "setup_ms": {
            "gw_pbx_invite_to_connect_sent": percentiles(invite_to_connect),
            "connect_sent_to_meta_accepted": percentiles(connect_to_accepted),
            "gw_meta_accepted_to_pbx_200": percentiles(accepted_to_200),
            "pbx_invite_to_pbx_200": percentiles(invite_to_200),
        },
        "steady_state_live_calls": m.steady.map(|s| round3(s.4)),
        "media": media_v,
    })
}

/// (JSON, table)
pub(crate) fn build_report(
    opts: &Options,
    results: &[CallResult],
    gw: &HashMap<String, GwTimes>,
    out: Option<&OutboundRun>,
    m: &Measures,
) -> (String, String) {
    let dir = opts.direction;
    let media = opts.profile.has_media();
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
    let talk_in: f64 = results.iter().map(|r| r.talk_s).sum();
    let talk_out: f64 = out.map_or(0.0, |o| o.results.iter().map(|r| r.talk_s).sum());
    let talk = talk_in + talk_out;
    let sent: u64 = results.iter().map(|r| r.phone_sent).sum();
    let recv: u64 = results.iter().map(|r| r.phone_received).sum();
    let echoed: u64 = results.iter().map(|r| r.echoed).sum();
    let rtt: Vec<f64> = results
        .iter()
        .flat_map(|r| r.rtt_us.iter().map(|u| f64::from(*u) / 1000.0))
        .collect();
    // gateway-side RTP counters (added at call end): received from WhatsApp / from the PBX
    let gw_rx_wa = counter(
        &m.metrics,
        "whatsip_rtp_packets_total",
        &[("leg", "whatsapp")],
    );
    let gw_rx_pbx = counter(&m.metrics, "whatsip_rtp_packets_total", &[("leg", "pbx")]);
    let added_latency = histogram_quantiles(
        &m.metrics,
        "whatsip_media_added_latency_seconds",
        "direction",
    );
    // every phone of both directions against the gateway's counters
    let all_sent = sent + out.map_or(0, |o| o.results.iter().map(|r| r.phone_sent).sum());
    let all_recv = recv + out.map_or(0, |o| o.results.iter().map(|r| r.phone_received).sum());
    let gateway_media = json!({
        "scope": match dir {
            super::Direction::Inbound => "inbound calls",
            super::Direction::Outbound => "outbound calls",
            super::Direction::Mixed => "inbound and outbound calls combined (the gateway's counters do not split them)",
        },
        "phone_to_gateway_loss_pct": loss(Some(all_sent as f64), gw_rx_wa),
        "gateway_to_phone_loss_pct": loss(gw_rx_pbx, Some(all_recv as f64)),
        "gateway_rtp_received_from_whatsapp": gw_rx_wa,
        "gateway_rtp_received_from_pbx": gw_rx_pbx,
        "gateway_added_latency_s": added_latency.clone(),
    });
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
    let steady = m.steady.map(|(gw, drv, live, secs, live_out)| {
        json!({
            "seconds": round3(secs),
            "live_calls": round3(live),
            "live_inbound": round3(live - live_out),
            "live_outbound": round3(live_out),
            "gateway_cores": round3(gw),
            "driver_cores": round3(drv),
            "calls_per_gateway_core": if gw > 0.0 { round3(live / gw) } else { Value::Null },
            "calls_per_driver_core": if drv > 0.0 { round3(live / drv) } else { Value::Null },
        })
    });
    let mut report = json!({
        "direction": dir.name(),
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
        "gateway": {
            "scope": if dir == super::Direction::Mixed { "both directions combined" } else { dir.name() },
            "cpu_s": round3(m.gw_cpu),
            "call_s": round3(talk),
            "call_s_inbound": round3(talk_in),
            "call_s_outbound": round3(talk_out),
            "cpu_s_per_call_s": round3(cpu_per_call_s * 1000.0).as_f64().map_or(Value::Null, |x| json!(x / 1000.0)),
            "cores_busy_avg": round3(m.gw_cpu / m.wall_s),
            "rss_idle_kib": m.rss0,
            "rss_at_peak_kib": m.rss_at_peak,
            "rss_max_kib": m.peak_rss,
            "peak_concurrent": m.peak_live,
            "rss_per_call_kib": round3(rss_per_call),
            "steady_state": steady,
        },
        "gateway_media": gateway_media,
        "udp_receive_drops": {
            "sipp_echo": m.udp_drops[0],
            "whatsip_whatsapp_sockets": m.udp_drops[1],
            "whatsip_pbx_legs": m.udp_drops[2],
            "phones_and_others": m.udp_drops[3],
            "sipp_sip": m.udp_drops[4],
            "whatsip_sip": m.udp_drops[5],
            "sipp_uac_sip": m.udp_drops[6],
            "sipp_uac_media_unread": m.udp_drops[7],
        },
        "load_generators": {
            "driver_sim_phones_cpu_s": round3(m.self_cpu),
            "driver_cores_avg": round3(m.self_cpu / m.wall_s),
            "driver_cpu_s_per_call_s": if talk > 0.0 { json!(m.self_cpu / talk) } else { Value::Null },
            "sipp_cpu_s": if dir.inbound() { round3(m.sipp_cpu) } else { Value::Null },
            "sipp_uac_cpu_s": m.uac_cpu.map(round3),
        },
    });
    if dir.inbound() {
        let mut media_v = phone_media(results, media);
        put(
            &mut media_v,
            "roundtrip_received_over_sent",
            ratio(recv as f64, sent as f64),
        );
        put(&mut media_v, "echoed_frames_matched", json!(echoed));
        put(&mut media_v, "roundtrip_ms", percentiles(rtt));
        if dir == super::Direction::Inbound {
            put(
                &mut media_v,
                "per_direction",
                json!({
                    "phone_to_gateway_loss_pct": loss(Some(sent as f64), gw_rx_wa),
                    "gateway_via_pbx_echo_loss_pct": loss(gw_rx_wa, gw_rx_pbx),
                    "gateway_to_phone_loss_pct": loss(gw_rx_pbx, Some(recv as f64)),
                    "gateway_rtp_received_from_whatsapp": gw_rx_wa,
                    "gateway_rtp_received_from_pbx": gw_rx_pbx,
                }),
            );
            put(&mut media_v, "gateway_added_latency_s", added_latency);
        } else {
            let note = json!("combined with the outbound calls: see gateway_media");
            put(&mut media_v, "per_direction", note.clone());
            put(&mut media_v, "gateway_added_latency_s", note);
        }
        put(
            &mut report,
            "calls",
            calls_section(results, m.placing_s, results.len() as f64),
        );
        put(
            &mut report,
            "setup_ms",
            json!({
                "dial_to_pbx_invite": percentiles(dial_to_invite),
                "gw_webhook_to_pbx_invite": percentiles(offer_to_invite),
                "pre_accept_round_trip": percentiles(pre_accept_rtt),
                "gw_pbx_200_to_accept_sent": percentiles(ans_to_accept_sent),
                "pbx_200_to_meta_accept": percentiles(ans_to_accept),
                "dial_to_active": percentiles(dial_to_active),
                "metrics_webhook_to_invite_s": setup_hist_invite,
                "metrics_answer_to_accept_s": setup_hist_accept,
            }),
        );
        put(&mut report, "media", media_v);
    }
    if let Some(o) = out {
        put(
            &mut report,
            "outbound",
            outbound_section(o, opts.hold.as_secs_f64(), media, !dir.inbound(), m),
        );
    }
    let json_text = format!("{report}\n");
    (json_text, table(&report))
}

fn table(r: &Value) -> String {
    let p = |v: &Value| {
        let g = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        if v.get("n").and_then(Value::as_u64).unwrap_or(0) == 0 {
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
    let g = &r["gateway"];
    let lg = &r["load_generators"];
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| {} {} ({} phones) | rate {}/s | concurrent {} | hold {} s | total {} | wall {} s | load {} → {} | cpus gw {} / driver {} |",
        r["direction"].as_str().unwrap_or(""),
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
    if let Some(c) = r.get("calls") {
        let s = &r["setup_ms"];
        let md = &r["media"];
        let _ = writeln!(
            t,
            "| inbound calls attempted / answered / failed | {} / {} / {} {} (dialled {}/s, answered {}/s) |",
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
            "| inbound media | phones sent {}, received {} (ratio {}), echoed frames matched {}; gw→phone seq loss {} %; per direction {} |",
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
            "| inbound audio | frames analysed {}, with tone {} %; tone ok {}; calls with gap > 1 s: {}; longest gap {} |",
            md["frames_analysed"],
            md["frames_with_tone_pct"],
            md["calls_with_tone"],
            md["calls_with_gap_over_1s"],
            p(&md["longest_gap_ms"])
        );
    }
    if let Some(o) = r.get("outbound") {
        let c = &o["calls"];
        let s = &o["setup_ms"];
        let md = &o["media"];
        let _ = writeln!(
            t,
            "| outbound calls attempted / answered / failed | {} / {} / {} {} (INVITEs {}/s, answered {}/s; SIPp {}) |",
            c["attempted"],
            c["answered"],
            c["failed"],
            c["failed_by_cause"],
            c["dial_rate_achieved"],
            c["answered_per_s"],
            c["sipp_uac"]
        );
        let _ = writeln!(
            t,
            "| gateway: PBX INVITE → connect sent | {} |",
            p(&s["gw_pbx_invite_to_connect_sent"])
        );
        let _ = writeln!(
            t,
            "| gateway: Meta ACCEPTED → 200 OK to the PBX | {} |",
            p(&s["gw_meta_accepted_to_pbx_200"])
        );
        let _ = writeln!(
            t,
            "| connect sent → Meta ACCEPTED (simulator + phone; excluded) | {} |",
            p(&s["connect_sent_to_meta_accepted"])
        );
        let _ = writeln!(
            t,
            "| PBX INVITE → 200 OK (incl. simulator) | {} |",
            p(&s["pbx_invite_to_pbx_200"])
        );
        let _ = writeln!(
            t,
            "| outbound media | phones sent {}, received {} of ~{} the PBX played; gw→phone seq loss {} %; per direction {} |",
            md["phone_packets_sent"],
            md["phone_packets_received"],
            md["pbx_packets_expected"],
            md["gateway_to_phone_seq_loss_pct"],
            md["per_direction"]
        );
        let _ = writeln!(
            t,
            "| outbound audio | frames analysed {}, with tone {} %; PBX tone ({} Hz) heard in {} calls; calls with gap > 1 s: {}; longest gap {} |",
            md["frames_analysed"],
            md["frames_with_tone_pct"],
            md["tone_hz_expected"],
            md["calls_with_tone"],
            md["calls_with_gap_over_1s"],
            p(&md["longest_gap_ms"])
        );
    }
    let gm = &r["gateway_media"];
    let _ = writeln!(
        t,
        "| gateway media ({}) | phone → gw loss {} %, gw → phone loss {} %; added latency {} |",
        gm["scope"].as_str().unwrap_or(""),
        gm["phone_to_gateway_loss_pct"],
        gm["gateway_to_phone_loss_pct"],
        gm["gateway_added_latency_s"]
    );
    let _ = writeln!(
        t,
        "| whatsip CPU ({}) | {} s for {} call-s = {} CPU-s per call-s ({} cores avg); steady state {} |",
        g["scope"].as_str().unwrap_or(""),
        g["cpu_s"],
        g["call_s"],
        g["cpu_s_per_call_s"],
        g["cores_busy_avg"],
        g["steady_state"]
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
        "| kernel UDP receive drops | {} |",
        r["udp_receive_drops"]
    );
    let _ = writeln!(
        t,
        "| load generators CPU | driver (sim + phones) {} s ({} cores avg, {} CPU-s per call-s), SIPp UAS {} s, SIPp UAC {} s |",
        lg["driver_sim_phones_cpu_s"],
        lg["driver_cores_avg"],
        lg["driver_cpu_s_per_call_s"],
        lg["sipp_cpu_s"],
        lg["sipp_uac_cpu_s"]
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
    fn outbound_milestone_lines_are_keyed_by_the_user() {
        let span = r#""span":{"dir":"outbound","sip_call_id":"7-1@127.0.0.1","name":"call"}"#;
        let span_wa = r#""span":{"dir":"outbound","sip_call_id":"7-1@127.0.0.1","wa_call_id":"wacid.X","name":"call"}"#;
        let line = |ms: &str, at: i64, span: &str| {
            format!(
                r#"{{"timestamp":"2026-11-25T10:00:00.000000Z","fields":{{"message":"call milestone","milestone":"{ms}","at_us":{at}}},{span}}}"#
            )
        };
        let log = [
            line("INVITE from the PBX for +4917200000001", 1_000, span),
            line("connect sent", 2_500, span),
            line("ACCEPTED from Meta (the user picked up)", 9_000, span_wa),
            line("200 OK from the PBX, ACK sent (opus)", 9_100, span_wa),
            line("accept ok, media gate open", 9_200, span_wa),
            line("ended: pbx hangup after 3.1 s", 3_009_200, span_wa),
            // an inbound call's line is not an outbound call's
            r#"{"fields":{"message":"call milestone","milestone":"offer received","at_us":5},"span":{"dir":"inbound","wa_call_id":"w1"}}"#.to_owned(),
        ]
        .join("\n");
        let t = parse_outbound_log(&log);
        assert_eq!(t.len(), 1, "{t:?}");
        let c = &t["4917200000001"];
        assert_eq!(
            (
                c.invite_us,
                c.connect_sent_us,
                c.user_accepted_us,
                c.ok_sent_us,
                c.ended_us
            ),
            (
                Some(1_000),
                Some(2_500),
                Some(9_000),
                Some(9_200),
                Some(3_009_200)
            )
        );
        assert_eq!(c.ended.as_deref(), Some("pbx hangup"));
        assert_eq!(c.refused, None);
        // and the inbound parser leaves the outbound lines alone
        assert!(!parse_gateway_log(&log).contains_key("wacid.X"));
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
