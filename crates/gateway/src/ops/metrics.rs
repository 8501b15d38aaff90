//! Prometheus metrics of the gateway, exposed on `/metrics` in the OpenMetrics text format.
//!
//! One [`Metrics`] value is created at start and shared (it is internally atomic); drivers
//! record into it. Names follow Prometheus conventions: `whatsip_` prefix, base units
//! (seconds), counters end in `_total` on the wire.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use whatsip_media::driver::MediaCounters;
use whatsip_media::{Flow, LatencyObserver};
use whatsip_meta::GraphError;
use whatsip_sip::endpoint::SipMessageCount;

/// Call direction label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CallDirection {
    /// User-initiated (WhatsApp → PBX).
    inbound,
    /// Business-initiated (PBX → WhatsApp).
    outbound,
}

/// Which media leg a media metric is about.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum MediaLeg {
    /// The WhatsApp (WebRTC) leg.
    whatsapp,
    /// The PBX (RTP) leg.
    pbx,
}

/// Labels of per-direction metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// Call direction.
    pub direction: CallDirection,
}

/// Labels of call outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Call direction.
    pub direction: CallDirection,
    /// Outcome (`answered`, `rejected`, `no_answer`, …; the CDR's outcome names).
    pub outcome: String,
    /// Finer cause (`pbx_486`, `meta_138006`, `ring_timeout`, …).
    pub cause: String,
}

/// Labels of Graph API metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraphLabels {
    /// The Graph action or endpoint (`pre_accept`, `accept`, `call_permissions`, …).
    pub action: String,
}

/// Labels of Graph API errors.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraphErrorLabels {
    /// The Graph action or endpoint.
    pub action: String,
    /// Meta's error code, or `http_<status>` / `transport` when there was none.
    pub code: String,
}

/// Labels of SIP message counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SipLabels {
    /// `in` or `out`.
    pub flow: String,
    /// Request method, or the CSeq method of a response.
    pub method: String,
    /// Response status code (`100`..`699`, only codes that occurred), empty for requests.
    pub status: String,
}

/// Labels of transport errors.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportErrorLabels {
    /// `udp`, `tcp`, `tls`, `http`.
    pub transport: String,
    /// `parse`, `too_large`, `io`, `tls_handshake`, …
    pub kind: String,
}

/// Labels of per-leg media metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabels {
    /// The media leg that received the packets.
    pub leg: MediaLeg,
}

/// Labels of watchdog interventions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchdogLabels {
    /// `comfort_noise` (kept WhatsApp's no-media timer from firing), `media_timeout` (ended a
    /// call whose leg went silent).
    pub kind: String,
}

/// Labels of transcoder sessions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodecLabels {
    /// The PBX-side codec (`PCMU`, `PCMA`, `G722`, `opus_passthrough`).
    pub codec: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// All gateway metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Calls in progress by direction.
    pub calls_in_progress: Family<DirectionLabels, Gauge>,
    /// Call attempts by direction.
    pub call_attempts: Family<DirectionLabels, Counter>,
    /// Call outcomes by direction, outcome and cause.
    pub call_outcomes: Family<OutcomeLabels, Counter>,
    /// Answered calls by direction (numerator of the answer-seizure ratio).
    pub calls_answered: Family<DirectionLabels, Counter>,
    answer_seizure_ratio: Family<DirectionLabels, Gauge<f64, AtomicU64>>,
    /// Talk time of answered calls, seconds (its sum/count is the average call duration).
    pub call_duration_seconds: HistogramFamily<DirectionLabels>,
    /// Inbound: from the `connect` webhook to the INVITE sent to the PBX, seconds.
    pub setup_webhook_to_invite_seconds: Histogram,
    /// Inbound: from the PBX's 200 OK to Meta's `accept` reply, seconds.
    pub setup_answer_to_accept_seconds: Histogram,
    /// Graph API request latency by action, seconds.
    pub graph_latency_seconds: HistogramFamily<GraphLabels>,
    /// Graph API errors by action and code.
    pub graph_errors: Family<GraphErrorLabels, Counter>,
    /// Webhook POSTs refused for a missing or wrong signature.
    pub webhook_signature_failures: Counter,
    /// Config reloads (SIGHUP) by result: `applied` or `refused` (the old config stays).
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// SIP messages by flow, method and status.
    pub sip_messages: Family<SipLabels, Counter>,
    /// Transport errors by transport and kind.
    pub transport_errors: Family<TransportErrorLabels, Counter>,
    /// RTP packets received by leg.
    pub rtp_packets: Family<LegLabels, Counter>,
    /// RTP packets lost by leg.
    pub rtp_lost: Family<LegLabels, Counter>,
    /// Per-call interarrival jitter at call end by leg, seconds.
    pub rtp_jitter_seconds: HistogramFamily<LegLabels>,
    /// Per-call loss fraction at call end by leg.
    pub rtp_loss_ratio: HistogramFamily<LegLabels>,
    /// Media watchdog interventions by kind.
    pub watchdog_interventions: Family<WatchdogLabels, Counter>,
    /// Media sessions in progress by PBX codec (transcoding or pass-through).
    pub transcoder_sessions: Family<CodecLabels, Gauge>,
    /// Time a media packet spent inside the gateway, from its receipt on one leg to the
    /// send of the packet it became on the other (jitter buffer and transcoding included),
    /// by direction (`wa_to_pbx`, `pbx_to_wa`), seconds.
    pub media_added_latency_seconds: HistogramFamily<MediaFlowLabels>,
    /// The two series of `media_added_latency_seconds`, resolved once: media tasks observe
    /// into them per packet without a label lookup.
    media_added_latency: [Histogram; 2],
    /// The media tasks' own counters (sessions by codec, watchdog interventions), copied
    /// into `transcoder_sessions` and `watchdog_interventions` at scrape time. Every PBX
    /// media task of the process counts into this one set.
    pub media: Arc<MediaCounters>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn duration_histogram() -> Histogram {
    // 1 s … ~4.5 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

fn jitter_histogram() -> Histogram {
    // 0.25 ms … ~0.5 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 12))
}

fn ratio_histogram() -> Histogram {
    Histogram::new([0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
}

/// Labels of config reloads.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `refused`.
    pub result: &'static str,
}

/// Labels of the media added-latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MediaFlowLabels {
    /// `wa_to_pbx` or `pbx_to_wa`.
    pub direction: String,
}

fn added_latency_histogram() -> Histogram {
    // 50 µs … 200 ms (the media crate's per-call buckets).
    Histogram::new(whatsip_media::path::LATENCY_BUCKETS_S)
}

/// Every call's media path reports its added latency here.
impl LatencyObserver for Metrics {
    fn observe(&self, flow: Flow, latency: std::time::Duration) {
        let i = match flow {
            Flow::WaToPbx => 0,
            Flow::PbxToWa => 1,
        };
        self.media_added_latency[i].observe(latency.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("whatsip");
        let m = Self {
            calls_in_progress: Family::default(),
            call_attempts: Family::default(),
            call_outcomes: Family::default(),
            calls_answered: Family::default(),
            answer_seizure_ratio: Family::default(),
            call_duration_seconds: Family::new_with_constructor(duration_histogram),
            setup_webhook_to_invite_seconds: latency_histogram(),
            setup_answer_to_accept_seconds: latency_histogram(),
            graph_latency_seconds: Family::new_with_constructor(latency_histogram),
            graph_errors: Family::default(),
            webhook_signature_failures: Counter::default(),
            config_reloads: Family::default(),
            sip_messages: Family::default(),
            transport_errors: Family::default(),
            rtp_packets: Family::default(),
            rtp_lost: Family::default(),
            rtp_jitter_seconds: Family::new_with_constructor(jitter_histogram),
            rtp_loss_ratio: Family::new_with_constructor(ratio_histogram),
            watchdog_interventions: Family::default(),
            transcoder_sessions: Family::default(),
            media_added_latency_seconds: Family::new_with_constructor(added_latency_histogram),
            media_added_latency: [added_latency_histogram(), added_latency_histogram()],
            media: MediaCounters::new(),
            registry: Registry::default(),
        };
        registry.register(
            "calls_in_progress",
            "Calls in progress",
            m.calls_in_progress.clone(),
        );
        registry.register("call_attempts", "Call attempts", m.call_attempts.clone());
        registry.register(
            "call_outcomes",
            "Call outcomes by cause",
            m.call_outcomes.clone(),
        );
        registry.register("calls_answered", "Answered calls", m.calls_answered.clone());
        registry.register(
            "answer_seizure_ratio",
            "Answered calls divided by attempts since start",
            m.answer_seizure_ratio.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "Talk time of answered calls",
            m.call_duration_seconds.clone(),
        );
        registry.register(
            "setup_webhook_to_invite_seconds",
            "Inbound set-up: connect webhook received to INVITE sent to the PBX",
            m.setup_webhook_to_invite_seconds.clone(),
        );
        registry.register(
            "setup_answer_to_accept_seconds",
            "Inbound set-up: PBX 200 OK to Meta accept confirmed",
            m.setup_answer_to_accept_seconds.clone(),
        );
        registry.register(
            "graph_latency_seconds",
            "Graph API request latency",
            m.graph_latency_seconds.clone(),
        );
        registry.register(
            "graph_errors",
            "Graph API errors by code",
            m.graph_errors.clone(),
        );
        registry.register(
            "webhook_signature_failures",
            "Webhook POSTs refused for a missing or wrong X-Hub-Signature-256",
            m.webhook_signature_failures.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP) by result: applied, or refused (the old config stays)",
            m.config_reloads.clone(),
        );
        registry.register(
            "sip_messages",
            "SIP messages by flow, method and status",
            m.sip_messages.clone(),
        );
        registry.register(
            "transport_errors",
            "Transport errors by transport and kind",
            m.transport_errors.clone(),
        );
        registry.register("rtp_packets", "RTP packets received", m.rtp_packets.clone());
        registry.register("rtp_lost", "RTP packets lost", m.rtp_lost.clone());
        registry.register(
            "rtp_jitter_seconds",
            "Per-call interarrival jitter at call end",
            m.rtp_jitter_seconds.clone(),
        );
        registry.register(
            "rtp_loss_ratio",
            "Per-call packet loss fraction at call end",
            m.rtp_loss_ratio.clone(),
        );
        registry.register(
            "watchdog_interventions",
            "Media watchdog interventions",
            m.watchdog_interventions.clone(),
        );
        registry.register(
            "transcoder_sessions",
            "Media sessions in progress by PBX codec",
            m.transcoder_sessions.clone(),
        );
        registry.register(
            "media_added_latency_seconds",
            "Media packet time inside the gateway, receipt on one leg to send on the other",
            m.media_added_latency_seconds.clone(),
        );
        let media_added_latency = [Flow::WaToPbx, Flow::PbxToWa].map(|f| {
            m.media_added_latency_seconds
                .get_or_create(&MediaFlowLabels {
                    direction: f.as_str().to_owned(),
                })
                .clone()
        });
        Self {
            registry,
            media_added_latency,
            ..m
        }
    }

    /// Counts an attempt and marks the call in progress.
    pub fn call_started(&self, direction: CallDirection) {
        let l = DirectionLabels { direction };
        self.call_attempts.get_or_create(&l).inc();
        self.calls_in_progress.get_or_create(&l).inc();
    }

    /// Records a call's end: outcome and cause, talk time when answered.
    pub fn call_ended(
        &self,
        direction: CallDirection,
        outcome: &str,
        cause: &str,
        talk_seconds: Option<f64>,
    ) {
        let l = DirectionLabels { direction };
        self.calls_in_progress.get_or_create(&l).dec();
        self.call_outcomes
            .get_or_create(&OutcomeLabels {
                direction,
                outcome: outcome.to_owned(),
                cause: cause.to_owned(),
            })
            .inc();
        if let Some(secs) = talk_seconds {
            self.calls_answered.get_or_create(&l).inc();
            self.call_duration_seconds.get_or_create(&l).observe(secs);
        }
    }

    /// Records one Graph API request: latency by action, and on failure an error labelled
    /// with [`graph_error_code`].
    pub fn graph_request(
        &self,
        action: &str,
        took: std::time::Duration,
        error: Option<&(dyn std::error::Error + 'static)>,
    ) {
        self.graph_latency_seconds
            .get_or_create(&GraphLabels {
                action: action.to_owned(),
            })
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.graph_errors
                .get_or_create(&GraphErrorLabels {
                    action: action.to_owned(),
                    code: graph_error_code(e),
                })
                .inc();
        }
    }

    /// Copies the SIP endpoint's per-method/status counters into `sip_messages` (the
    /// source is monotonic; requests get an empty `status`).
    pub fn sample_sip(&self, counts: &[SipMessageCount]) {
        for c in counts {
            let l = SipLabels {
                flow: c.flow.as_str().to_owned(),
                method: c.method.to_owned(),
                status: c.status.map(|s| s.to_string()).unwrap_or_default(),
            };
            catch_up(&self.sip_messages.get_or_create(&l), c.count);
        }
    }

    /// Copies the media tasks' counters into `transcoder_sessions` (set) and
    /// `watchdog_interventions` (monotonic).
    pub fn sample_media(&self) {
        let m = self.media.snapshot();
        for (codec, n) in &m.sessions {
            let l = CodecLabels {
                codec: (*codec).to_owned(),
            };
            self.transcoder_sessions
                .get_or_create(&l)
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        for (kind, n) in [
            ("comfort_noise", m.comfort_noise),
            ("media_timeout", m.media_timeouts),
        ] {
            let l = WatchdogLabels { kind: kind.into() };
            catch_up(&self.watchdog_interventions.get_or_create(&l), n);
        }
    }

    /// Renders every metric in the OpenMetrics text format (content type
    /// `application/openmetrics-text; version=1.0.0; charset=utf-8`).
    pub fn encode(&self) -> String {
        for direction in [CallDirection::inbound, CallDirection::outbound] {
            let l = DirectionLabels { direction };
            let attempts = self.call_attempts.get(&l).map(|c| c.get()).unwrap_or(0);
            let answered = self.calls_answered.get(&l).map(|c| c.get()).unwrap_or(0);
            if attempts > 0 {
                // Counts stay far below 2^53, so the f64 conversion is exact.
                #[allow(clippy::cast_precision_loss)]
                let ratio = answered as f64 / attempts as f64;
                self.answer_seizure_ratio.get_or_create(&l).set(ratio);
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            // Writing into a String cannot fail; keep the scrape alive regardless.
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

/// Raises `counter` to `value` (the source is itself monotonic).
pub(crate) fn catch_up(counter: &Counter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

/// The `code` label of a failed Graph request: Meta's error code (`138006`), else
/// `http_<status>` for a non-2xx reply without Meta's error body, `transport` when no reply
/// came (connection refused, timeout, broken connection), `invalid_reply` for a 2xx whose
/// body was not understood, `invalid_request` for a request that could not be built, and
/// `other` for an error that is not a [`GraphError`].
pub fn graph_error_code(error: &(dyn std::error::Error + 'static)) -> String {
    let Some(e) = error.downcast_ref::<GraphError>() else {
        return "other".into();
    };
    if let Some(code) = e.meta_code() {
        return code.code().to_string();
    }
    match e {
        GraphError::Connect { .. } | GraphError::Timeout { .. } | GraphError::Transport { .. } => {
            "transport".into()
        }
        GraphError::InvalidReply { .. } => "invalid_reply".into(),
        GraphError::InvalidRequest { .. } => "invalid_request".into(),
        other => match other.http_status() {
            Some(status) => format!("http_{status}"),
            None => "other".into(),
        },
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use whatsip_meta::MetaErrorCode;
    use whatsip_meta::graph::MetaError;
    use whatsip_sip::endpoint::SipFlow;

    #[test]
    fn sip_counts_become_flow_method_status_lines() {
        let m = Metrics::new();
        let count = |flow, method, status, count| SipMessageCount {
            flow,
            method,
            status,
            count,
        };
        m.sample_sip(&[
            count(SipFlow::Out, "INVITE", None, 1),
            count(SipFlow::In, "INVITE", Some(180), 1),
            count(SipFlow::In, "INVITE", Some(200), 2),
        ]);
        // a later scrape catches up, never double counts
        m.sample_sip(&[count(SipFlow::In, "INVITE", Some(200), 3)]);
        let text = m.encode();
        for (line, want) in [
            (
                "whatsip_sip_messages_total{flow=\"out\",method=\"INVITE\",status=\"\"}",
                1.0,
            ),
            (
                "whatsip_sip_messages_total{flow=\"in\",method=\"INVITE\",status=\"180\"}",
                1.0,
            ),
            (
                "whatsip_sip_messages_total{flow=\"in\",method=\"INVITE\",status=\"200\"}",
                3.0,
            ),
        ] {
            assert_eq!(sample(&text, line), Some(want), "{line}\n{text}");
        }
    }

    #[test]
    fn media_counters_feed_sessions_and_watchdog_at_scrape() {
        let m = Metrics::new();
        m.sample_media();
        let text = m.encode();
        for codec in ["PCMU", "PCMA", "G722", "opus_passthrough"] {
            let line = format!("whatsip_transcoder_sessions{{codec=\"{codec}\"}}");
            assert_eq!(sample(&text, &line), Some(0.0), "{line}\n{text}");
        }
        for kind in ["comfort_noise", "media_timeout"] {
            let line = format!("whatsip_watchdog_interventions_total{{kind=\"{kind}\"}}");
            assert_eq!(sample(&text, &line), Some(0.0), "{line}\n{text}");
        }
    }

    #[test]
    fn graph_errors_are_labelled_by_meta_code_http_status_or_transport() {
        let meta = GraphError::Meta(Box::new(MetaError {
            http_status: 403,
            code: MetaErrorCode::from_code(138_006),
            subcode: None,
            message: "no permission".into(),
            error_type: None,
            details: None,
            fbtrace_id: None,
        }));
        let bare = GraphError::UnexpectedStatus {
            http_status: 502,
            body: "<html>".into(),
        };
        let refused = GraphError::Connect {
            reason: "refused".into(),
        };
        let slow = GraphError::Timeout { timeout_ms: 15_000 };
        assert_eq!(graph_error_code(&meta), "138006");
        assert_eq!(graph_error_code(&bare), "http_502");
        assert_eq!(graph_error_code(&refused), "transport");
        assert_eq!(graph_error_code(&slow), "transport");
        assert_eq!(graph_error_code(&std::fmt::Error), "other");

        let m = Metrics::new();
        let took = std::time::Duration::from_millis(20);
        m.graph_request("pre_accept", took, None);
        m.graph_request("connect", took, Some(&meta));
        m.graph_request("accept", took, Some(&refused));
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "whatsip_graph_errors_total{action=\"connect\",code=\"138006\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "whatsip_graph_errors_total{action=\"accept\",code=\"transport\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "whatsip_graph_latency_seconds_count{action=\"pre_accept\"}"
            ),
            Some(1.0)
        );
        assert!(!text.contains("action=\"pre_accept\",code="), "{text}");
    }

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn calls_feed_attempts_outcomes_progress_and_asr() {
        let m = Metrics::new();
        m.call_started(CallDirection::inbound);
        m.call_started(CallDirection::inbound);
        m.call_started(CallDirection::outbound);
        m.call_ended(
            CallDirection::inbound,
            "answered",
            "whatsapp_hangup",
            Some(20.0),
        );
        m.call_ended(CallDirection::inbound, "rejected", "pbx_486", None);
        let text = m.encode();
        assert_eq!(
            sample(&text, "whatsip_call_attempts_total{direction=\"inbound\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "whatsip_calls_in_progress{direction=\"inbound\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "whatsip_calls_in_progress{direction=\"outbound\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "whatsip_call_outcomes_total{direction=\"inbound\",outcome=\"rejected\",cause=\"pbx_486\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "whatsip_answer_seizure_ratio{direction=\"inbound\"}"),
            Some(0.5)
        );
        assert_eq!(
            sample(
                &text,
                "whatsip_call_duration_seconds_sum{direction=\"inbound\"}"
            ),
            Some(20.0)
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn unlabelled_metrics_are_described_before_use_and_families_after() {
        let m = Metrics::new();
        let text = m.encode();
        for name in [
            "whatsip_webhook_signature_failures",
            "whatsip_setup_webhook_to_invite_seconds",
            "whatsip_setup_answer_to_accept_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        m.graph_latency_seconds
            .get_or_create(&GraphLabels {
                action: "accept".into(),
            })
            .observe(0.003);
        m.graph_errors
            .get_or_create(&GraphErrorLabels {
                action: "connect".into(),
                code: "138006".into(),
            })
            .inc();
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "whatsip_graph_latency_seconds_count{action=\"accept\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "whatsip_graph_errors_total{action=\"connect\",code=\"138006\"}"
            ),
            Some(1.0)
        );
    }
}

#[cfg(test)]
mod added_latency_tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use whatsip_media::{Flow, MediaPath};

    use super::Metrics;

    #[test]
    fn media_path_latency_reaches_the_prometheus_histogram_by_direction() {
        let metrics = Arc::new(Metrics::new());
        let text = metrics.encode();
        // both series exist before the first call
        assert!(
            text.contains("whatsip_media_added_latency_seconds_count{direction=\"wa_to_pbx\"} 0")
        );
        let path = MediaPath::new();
        path.set_observer(metrics.clone());
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        path.record_latency(Flow::WaToPbx, t0, t0 + Duration::from_micros(80));
        path.record_latency(Flow::PbxToWa, t0, t0 + Duration::from_millis(30));
        path.record_latency(Flow::PbxToWa, t0, t0 + Duration::from_millis(30));
        let text = metrics.encode();
        for line in [
            "whatsip_media_added_latency_seconds_count{direction=\"wa_to_pbx\"} 1",
            "whatsip_media_added_latency_seconds_bucket{le=\"0.0001\",direction=\"wa_to_pbx\"} 1",
            "whatsip_media_added_latency_seconds_bucket{le=\"0.00005\",direction=\"wa_to_pbx\"} 0",
            "whatsip_media_added_latency_seconds_count{direction=\"pbx_to_wa\"} 2",
            "whatsip_media_added_latency_seconds_bucket{le=\"0.02\",direction=\"pbx_to_wa\"} 0",
            "whatsip_media_added_latency_seconds_bucket{le=\"0.05\",direction=\"pbx_to_wa\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
