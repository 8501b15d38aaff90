//! The CDR writer: one dedicated thread owns the [`CdrStore`] (SQLite is blocking), call
//! tasks talk to it over a bounded channel.
//!
//! - At start the store is opened and calls a previous run left live are turned into
//!   `interrupted` records ([`CdrStore::recover_interrupted`]).
//! - A call task keeps a [`CallCdr`] that follows the call's milestones; at offer, ring and
//!   answer it sends a live snapshot (best effort: a full channel drops the snapshot, never
//!   the call), and at the end it sends the final record and waits (bounded) until SQLite
//!   committed it, before the call leaves the registry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use whatsip_cdr::{
    CallRecord, CdrStore, Direction, HangupSide, MediaQuality, Outcome, RateCard, StoreOptions,
    UnixMillis,
};
use whatsip_media::{LegStats, MediaStats};

use super::RuntimeError;
use super::clock::SystemClock;
use super::milestone::MilestoneKind;
use crate::call::{InboundEnd, OutboundEnd, OutboundFailure};
use crate::config::CdrConfig;
use crate::ops::metrics::{CallDirection, LegLabels, MediaLeg, Metrics};

/// How many CDR jobs may queue for the writer thread.
const QUEUE: usize = 1024;
/// How long a call task waits for its final record to be committed.
const FINISH_WAIT: Duration = Duration::from_secs(10);

enum Job {
    Live(Box<CallRecord>, UnixMillis),
    Finish(Box<CallRecord>, oneshot::Sender<bool>),
}

/// Handle to the CDR writer thread (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct CdrWriter {
    tx: mpsc::Sender<Job>,
    rate_card: Option<Arc<RateCard>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Live(r, _) => write!(f, "Live({})", r.wa_call_id),
            Job::Finish(r, _) => write!(f, "Finish({})", r.wa_call_id),
        }
    }
}

/// Wall-clock now as CDR time.
pub(crate) fn wall_now() -> UnixMillis {
    UnixMillis::from_system_time(SystemClock::wall())
}

impl CdrWriter {
    /// Opens the store named by `config` (`None` when CDRs are disabled), recovers the
    /// calls a previous run left live, and starts the writer thread.
    pub(crate) fn start(config: &CdrConfig) -> Result<Option<Self>, RuntimeError> {
        let Some(path) = &config.path else {
            return Ok(None);
        };
        let options = StoreOptions {
            jsonl_path: config.jsonl_path.clone(),
        };
        let opened = if path.as_os_str() == ":memory:" {
            CdrStore::open_in_memory(options)
        } else {
            CdrStore::open(path, options)
        };
        let mut store = opened.map_err(|e| RuntimeError::Config {
            key: "cdr.path",
            reason: e.to_string(),
        })?;
        match store.recover_interrupted() {
            Ok(recovered) => {
                for r in &recovered {
                    warn!(wa_call_id = %r.wa_call_id, "call was live when whatsip stopped; cdr marked interrupted");
                }
            }
            Err(e) => error!(error = %e, "cdr: recovering interrupted calls failed"),
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let name = display_path(path);
        std::thread::Builder::new()
            .name("whatsip-cdr".into())
            .spawn(move || writer_loop(store, rx, name))
            .map_err(|e| RuntimeError::Bind {
                what: "cdr writer thread",
                reason: e.to_string(),
            })?;
        Ok(Some(Self {
            tx,
            rate_card: config.rate_card.clone().map(Arc::new),
        }))
    }

    fn live(&self, record: &CallRecord) {
        let job = Job::Live(Box::new(record.clone()), wall_now());
        if self.tx.try_send(job).is_err() {
            warn!(wa_call_id = %record.wa_call_id, "cdr writer busy; live snapshot skipped");
        }
    }

    /// Sends the final record and waits until it is committed (bounded by [`FINISH_WAIT`]).
    /// Business-initiated calls get their billable pulses and, with a rate card, the
    /// estimated cost.
    pub(crate) async fn finish(&self, mut record: CallRecord) -> bool {
        if record.direction == Direction::Outbound && record.billable_pulses.is_none() {
            let pulses = whatsip_cdr::billable_pulses(record.talk_time());
            record.billable_pulses = Some(pulses);
            record.estimated_cost = self
                .rate_card
                .as_deref()
                .and_then(|c| c.cost(&record.customer_number, pulses));
        }
        let (done, rx) = oneshot::channel();
        let id = record.wa_call_id.clone();
        let sent = tokio::time::timeout(
            FINISH_WAIT,
            self.tx.send(Job::Finish(Box::new(record), done)),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            error!(wa_call_id = %id, "cdr writer unavailable; final record not written");
            return false;
        }
        match tokio::time::timeout(FINISH_WAIT, rx).await {
            Ok(Ok(ok)) => ok,
            _ => {
                error!(wa_call_id = %id, "cdr writer did not confirm the final record");
                false
            }
        }
    }
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

fn writer_loop(mut store: CdrStore, mut rx: mpsc::Receiver<Job>, path: String) {
    debug!(path, "cdr writer started");
    while let Some(job) = rx.blocking_recv() {
        match job {
            Job::Live(record, now) => {
                if let Err(e) = store.upsert_live(&record, now) {
                    error!(error = %e, wa_call_id = %record.wa_call_id, "cdr live upsert failed");
                }
            }
            Job::Finish(record, done) => {
                let ok = match store.finish(&record) {
                    Ok(_) => true,
                    Err(e) => {
                        error!(error = %e, wa_call_id = %record.wa_call_id, "cdr final write failed");
                        false
                    }
                };
                let _ = done.send(ok);
            }
        }
    }
    debug!(path, "cdr writer stopped");
}

/// Writes the record of an inbound call refused before it got a call task (dial plan
/// refusal, unusable caller number, draining) and counts it.
pub(crate) async fn write_refused(
    writer: Option<CdrWriter>,
    metrics: &Metrics,
    wa_call_id: &str,
    business_number: &str,
    customer_number: &str,
    offer_at: UnixMillis,
    reason: &str,
) {
    let numbers = (business_number, customer_number);
    let end = (Outcome::Refused, HangupSide::Gateway, reason);
    write_without_task(writer, metrics, wa_call_id, numbers, offer_at, end).await;
}

/// Writes the record of a user-initiated call Meta ended before its `connect` webhook
/// reached whatsip (the `terminate` overtook it): cancelled by the caller, nothing sent
/// to the PBX.
pub(crate) async fn write_terminated_before_connect(
    writer: Option<CdrWriter>,
    metrics: &Metrics,
    wa_call_id: &str,
    (business_number, customer_number): (&str, &str),
    offer_at: UnixMillis,
) {
    let end = (
        Outcome::Cancelled,
        HangupSide::WhatsApp,
        "terminated by Meta before the connect webhook arrived",
    );
    let numbers = (business_number, customer_number);
    write_without_task(writer, metrics, wa_call_id, numbers, offer_at, end).await;
}

async fn write_without_task(
    writer: Option<CdrWriter>,
    metrics: &Metrics,
    wa_call_id: &str,
    (business_number, customer_number): (&str, &str),
    offer_at: UnixMillis,
    (outcome, hangup_by, reason): (Outcome, HangupSide, &str),
) {
    let digits = |n: &'_ str| n.strip_prefix('+').unwrap_or(n).to_owned();
    let mut record = CallRecord::new(
        wa_call_id,
        Direction::Inbound,
        digits(business_number),
        digits(customer_number),
        offer_at,
    );
    record.end_at = Some(wall_now());
    record.outcome = outcome;
    record.ending.hangup_by = Some(hangup_by);
    record.ending.reason = Some(reason.to_owned());
    metrics.call_started(CallDirection::inbound);
    metrics.call_ended(
        CallDirection::inbound,
        outcome.as_str(),
        &cause(reason),
        None,
    );
    if let Some(w) = writer {
        w.finish(record).await;
    }
}

/// Writes the record of a business-initiated call refused before it got a call task (dial
/// plan refusal, no such business number), keyed `sip:<Call-ID>`, and counts it.
#[allow(clippy::too_many_arguments)] // one record's fields, each named by the caller
pub(crate) async fn write_refused_outbound(
    writer: Option<CdrWriter>,
    metrics: &Metrics,
    pbx_call_id: &str,
    business_number: &str,
    customer_number: &str,
    rule: Option<&str>,
    sip_status: u16,
    reason: &str,
) {
    let digits = |n: &'_ str| n.strip_prefix('+').unwrap_or(n).to_owned();
    let mut record = CallRecord::new(
        format!("sip:{pbx_call_id}"),
        Direction::Outbound,
        digits(business_number),
        digits(customer_number),
        wall_now(),
    );
    record.pbx_call_id = Some(pbx_call_id.to_owned());
    record.wa_codec = Some("opus".into());
    record.dialplan_rule = rule.map(str::to_owned);
    record.end_at = Some(wall_now());
    record.outcome = Outcome::Refused;
    record.ending.hangup_by = Some(HangupSide::Gateway);
    record.ending.sip_status = Some(sip_status);
    record.ending.reason = Some(reason.to_owned());
    metrics.call_started(CallDirection::outbound);
    metrics.call_ended(
        CallDirection::outbound,
        Outcome::Refused.as_str(),
        &cause(reason),
        None,
    );
    if let Some(w) = writer {
        w.finish(record).await;
    }
}

/// What one call task knows for its CDR, filled from its milestones and its end.
#[derive(Debug)]
pub(crate) struct CallCdr {
    writer: Option<CdrWriter>,
    metrics: Option<Arc<Metrics>>,
    record: CallRecord,
    last_pbx_status: Option<u16>,
    graph_failed: Option<&'static str>,
    pbx_answered: Option<std::time::Instant>,
    offered: std::time::Instant,
}

impl CallCdr {
    /// A record for an inbound call just offered.
    pub(crate) fn inbound(
        writer: Option<CdrWriter>,
        metrics: Option<Arc<Metrics>>,
        wa_call_id: &str,
        business_number: &str,
        customer_number: &str,
        customer_name: Option<&str>,
        route: &crate::dialplan::InboundRoute,
    ) -> Self {
        // the CDR store keeps numbers as E.164 digits without the `+`
        let digits = |n: &'_ str| n.strip_prefix('+').unwrap_or(n).to_owned();
        let mut record = CallRecord::new(
            wa_call_id,
            Direction::Inbound,
            digits(business_number),
            digits(customer_number),
            wall_now(),
        );
        record.customer_name = customer_name.map(str::to_owned);
        record.wa_codec = Some("opus".into());
        record.dialplan_rule = Some(route.rule.clone());
        record.pbx_target = Some(route.primary.uri.clone());
        if let Some(m) = &metrics {
            m.call_started(CallDirection::inbound);
        }
        Self {
            writer,
            metrics,
            record,
            last_pbx_status: None,
            graph_failed: None,
            pbx_answered: None,
            offered: SystemClock::now(),
        }
    }

    /// A record for a business-initiated call whose INVITE just arrived from the PBX. Until
    /// Meta gives a call id the record is keyed `sip:<Call-ID>`, so refused calls are kept too.
    pub(crate) fn outbound(
        writer: Option<CdrWriter>,
        metrics: Option<Arc<Metrics>>,
        business_number: &str,
        customer_number: &str,
        rule: &str,
        pbx_call_id: &str,
    ) -> Self {
        let digits = |n: &'_ str| n.strip_prefix('+').unwrap_or(n).to_owned();
        let mut record = CallRecord::new(
            format!("sip:{pbx_call_id}"),
            Direction::Outbound,
            digits(business_number),
            digits(customer_number),
            wall_now(),
        );
        record.wa_codec = Some("opus".into());
        record.dialplan_rule = Some(rule.to_owned());
        record.pbx_call_id = Some(pbx_call_id.to_owned());
        if let Some(m) = &metrics {
            m.call_started(CallDirection::outbound);
        }
        if let Some(w) = &writer {
            w.live(&record);
        }
        Self {
            writer,
            metrics,
            record,
            last_pbx_status: None,
            graph_failed: None,
            pbx_answered: None,
            offered: SystemClock::now(),
        }
    }

    /// A Graph request of the call failed with Meta error `code` (the first one is kept).
    pub(crate) fn graph_error_code(&mut self, code: Option<i64>) {
        if self.record.ending.meta_error_code.is_none() {
            self.record.ending.meta_error_code = code;
        }
    }

    /// The gateway refused a business-initiated call toward the PBX with final `status`.
    pub(crate) fn final_sip_status(&mut self, status: u16) {
        self.record.ending.sip_status = Some(status);
    }

    /// Meta gave the business-initiated call its id: the record is keyed by it from now on.
    pub(crate) fn set_wa_call_id(&mut self, id: &str) {
        self.record.wa_call_id = id.to_owned();
    }

    /// Completes a business-initiated call's record (billing is added by the writer).
    pub(crate) fn complete_outbound(
        &mut self,
        end: Option<&OutboundEnd>,
        shutdown: bool,
        reason: &str,
    ) -> Option<(CdrWriter, CallRecord)> {
        let r = &mut self.record;
        r.end_at = Some(wall_now());
        let answered = r.answer_at.is_some();
        let (outcome, side) = classify_outbound(end, shutdown, answered);
        r.outcome = outcome;
        r.ending.hangup_by = side;
        if r.ending.reason.is_none() {
            r.ending.reason = Some(reason.to_owned());
        }
        if let Some(OutboundEnd::Failed(OutboundFailure::Graph { code, .. })) = end {
            r.ending.meta_status = Some("connect failed".to_owned());
            r.ending.meta_error_code = code.map(i64::from);
        }
        if let Some(m) = &self.metrics {
            let talk = answered.then(|| r.talk_time().as_secs_f64());
            m.call_ended(
                CallDirection::outbound,
                outcome.as_str(),
                &cause(reason),
                talk,
            );
        }
        info!(
            outcome = outcome.as_str(),
            talk_s = r.talk_time().as_secs(),
            "call detail record"
        );
        self.writer.clone().map(|w| (w, self.record.clone()))
    }

    /// Follows one milestone of the call.
    pub(crate) fn observe(&mut self, kind: &MilestoneKind, sip_call_id: Option<&str>) {
        if let Some(id) = sip_call_id {
            self.record.pbx_call_id = Some(id.to_owned());
        }
        let mut snapshot = false;
        match kind {
            MilestoneKind::OfferReceived => snapshot = true,
            MilestoneKind::Routed { rule, target } => {
                self.record.dialplan_rule = Some(rule.clone());
                self.record.pbx_target = Some(target.clone());
            }
            MilestoneKind::InviteSent { uri, attempt } => {
                self.record.pbx_target = Some(uri.clone());
                if *attempt == 0
                    && let Some(m) = &self.metrics
                {
                    m.setup_webhook_to_invite_seconds.observe(
                        SystemClock::now()
                            .saturating_duration_since(self.offered)
                            .as_secs_f64(),
                    );
                }
            }
            MilestoneKind::Provisional { status }
                if self.record.ring_at.is_none() && (*status == 180 || *status == 183) =>
            {
                self.record.ring_at = Some(wall_now());
                snapshot = true;
            }
            MilestoneKind::Answered { codec } => {
                self.record.pbx_codec = Some(codec.clone());
                self.pbx_answered = Some(SystemClock::now());
                // business-initiated: the user picked up; no `accept` follows
                if self.record.direction == Direction::Outbound && self.record.answer_at.is_none() {
                    self.record.answer_at = Some(wall_now());
                    snapshot = true;
                }
            }
            MilestoneKind::Accepted => {
                self.record.answer_at = Some(wall_now());
                snapshot = true;
                // inbound only: a business-initiated call has no `accept` (the milestone
                // marks the 200 OK to the PBX, in the same turn as its answer)
                if let (Some(m), Some(t), Direction::Inbound) =
                    (&self.metrics, self.pbx_answered, self.record.direction)
                {
                    m.setup_answer_to_accept_seconds.observe(
                        SystemClock::now()
                            .saturating_duration_since(t)
                            .as_secs_f64(),
                    );
                }
            }
            MilestoneKind::PbxFailed { status, .. } => self.last_pbx_status = Some(*status),
            MilestoneKind::GraphFailed { action } => self.graph_failed = Some(action),
            MilestoneKind::Dtmf { .. } => {
                self.record.dtmf_digits = self.record.dtmf_digits.saturating_add(1);
            }
            MilestoneKind::Refused { reason } => {
                self.record.ending.reason = Some(reason.clone());
            }
            _ => {}
        }
        if snapshot && let Some(w) = &self.writer {
            w.live(&self.record);
        }
    }

    /// Takes in the PBX media task's final statistics.
    pub(crate) fn media_stats(&mut self, stats: &MediaStats) {
        self.record.pbx_codec = Some(stats.pbx_codec.to_string());
        self.record.media_wa_to_pbx = Some(quality(&stats.wa));
        self.record.media_pbx_to_wa = Some(quality(&stats.pbx));
        if let Some(m) = &self.metrics {
            for (leg, s) in [(MediaLeg::whatsapp, &stats.wa), (MediaLeg::pbx, &stats.pbx)] {
                let l = LegLabels { leg };
                m.rtp_packets.get_or_create(&l).inc_by(s.packets_received);
                let lost = u64::try_from(s.packets_lost).unwrap_or(0);
                m.rtp_lost.get_or_create(&l).inc_by(lost);
                m.rtp_jitter_seconds
                    .get_or_create(&l)
                    .observe(s.jitter.as_secs_f64());
                let expected = s.packets_received.saturating_add(lost);
                if expected > 0 {
                    // packet counts stay far below 2^53
                    #[allow(clippy::cast_precision_loss)]
                    let ratio = lost as f64 / expected as f64;
                    m.rtp_loss_ratio.get_or_create(&l).observe(ratio);
                }
            }
        }
    }

    /// Completes the record from how the call ended; returns what to hand the writer
    /// (`None` when CDRs are disabled).
    pub(crate) fn complete(
        &mut self,
        end: Option<&InboundEnd>,
        shutdown: bool,
        reason: &str,
    ) -> Option<(CdrWriter, CallRecord)> {
        let r = &mut self.record;
        r.end_at = Some(wall_now());
        let (outcome, side) = classify(end, shutdown, r.answer_at.is_some());
        r.outcome = outcome;
        r.ending.hangup_by = side;
        r.ending.sip_status = match end {
            Some(InboundEnd::PbxRejected(s)) => Some(s.code()),
            _ => self.last_pbx_status.filter(|_| r.answer_at.is_none()),
        };
        if r.ending.reason.is_none() {
            r.ending.reason = Some(reason.to_owned());
        }
        if let Some(a) = self.graph_failed {
            r.ending.meta_status = Some(format!("{a} failed"));
        }
        if let Some(m) = &self.metrics {
            let talk = r.answer_at.map(|_| r.talk_time().as_secs_f64());
            m.call_ended(
                CallDirection::inbound,
                outcome.as_str(),
                &cause(reason),
                talk,
            );
        }
        info!(
            outcome = outcome.as_str(),
            talk_s = r.talk_time().as_secs(),
            "call detail record"
        );
        self.writer.clone().map(|w| (w, self.record.clone()))
    }
}

/// A metrics label from the end reason (`pbx rejected 486` → `pbx_rejected_486`).
fn cause(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn quality(s: &LegStats) -> MediaQuality {
    MediaQuality {
        packets: s.packets_received,
        lost: u64::try_from(s.packets_lost).unwrap_or(0),
        jitter_ms: s.jitter.as_secs_f64() * 1000.0,
        longest_gap_ms: u64::try_from(s.longest_gap.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A call whatsip ended because it was stopping (drain over, shutdown).
fn ended_by_shutdown(answered: bool) -> (Outcome, Option<HangupSide>) {
    let o = if answered {
        Outcome::Answered
    } else {
        Outcome::Failed
    };
    (o, Some(HangupSide::Gateway))
}

/// The outcome and who hung up, from the core's end cause.
fn classify(
    end: Option<&InboundEnd>,
    shutdown: bool,
    answered: bool,
) -> (Outcome, Option<HangupSide>) {
    if shutdown {
        return ended_by_shutdown(answered);
    }
    match end {
        Some(InboundEnd::WaHangup) if answered => (Outcome::Answered, Some(HangupSide::WhatsApp)),
        Some(InboundEnd::WaHangup) => (Outcome::Cancelled, Some(HangupSide::WhatsApp)),
        Some(InboundEnd::PbxHangup) if answered => (Outcome::Answered, Some(HangupSide::Pbx)),
        Some(InboundEnd::PbxHangup) => (Outcome::Failed, Some(HangupSide::Pbx)),
        Some(InboundEnd::PbxRejected(s)) => {
            let o = if matches!(s.code(), 486 | 600 | 603) {
                Outcome::Rejected
            } else {
                Outcome::Failed
            };
            (o, Some(HangupSide::Pbx))
        }
        Some(InboundEnd::NoAnswer) => (Outcome::NoAnswer, Some(HangupSide::Gateway)),
        Some(InboundEnd::NoRoute) => (Outcome::Refused, Some(HangupSide::Gateway)),
        Some(InboundEnd::MediaFailed | InboundEnd::GraphFailed(_)) if answered => {
            (Outcome::Answered, Some(HangupSide::Gateway))
        }
        Some(InboundEnd::MediaFailed | InboundEnd::GraphFailed(_)) | None => {
            (Outcome::Failed, Some(HangupSide::Gateway))
        }
        #[allow(unreachable_patterns)]
        Some(_) => (Outcome::Failed, Some(HangupSide::Gateway)),
    }
}

fn classify_outbound(
    end: Option<&OutboundEnd>,
    shutdown: bool,
    answered: bool,
) -> (Outcome, Option<HangupSide>) {
    if shutdown {
        return ended_by_shutdown(answered);
    }
    match end {
        Some(OutboundEnd::WaHangup) => (Outcome::Answered, Some(HangupSide::WhatsApp)),
        Some(OutboundEnd::PbxHangup) => (Outcome::Answered, Some(HangupSide::Pbx)),
        Some(OutboundEnd::PbxCancelled) => (Outcome::Cancelled, Some(HangupSide::Pbx)),
        Some(OutboundEnd::MediaFailed) if answered => {
            (Outcome::Answered, Some(HangupSide::Gateway))
        }
        Some(OutboundEnd::Failed(f)) => match f {
            OutboundFailure::Rejected => (Outcome::Rejected, Some(HangupSide::WhatsApp)),
            OutboundFailure::NoAnswer => (Outcome::NoAnswer, Some(HangupSide::Gateway)),
            OutboundFailure::Terminated { .. } => (Outcome::Failed, Some(HangupSide::WhatsApp)),
            OutboundFailure::CountryBlocked
            | OutboundFailure::NoPermission
            | OutboundFailure::ConsentGuard { .. }
            | OutboundFailure::DailyCap { .. }
            | OutboundFailure::DialPlan(_) => (Outcome::Refused, Some(HangupSide::Gateway)),
            _ => (Outcome::Failed, Some(HangupSide::Gateway)),
        },
        Some(OutboundEnd::MediaFailed) | None => (Outcome::Failed, Some(HangupSide::Gateway)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SipStatus;

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn a_business_initiated_call_feeds_outbound_metrics_and_no_accept_latency() {
        let m = Arc::new(Metrics::new());
        let mut cdr = CallCdr::outbound(
            None,
            Some(m.clone()),
            "+4930901820",
            "+4915112345678",
            "agents-out",
            "abc@pbx",
        );
        cdr.observe(
            &MilestoneKind::Answered {
                codec: "PCMA".into(),
            },
            None,
        );
        cdr.observe(&MilestoneKind::Accepted, None);
        let leg = |packets| LegStats {
            packets_received: packets,
            packets_lost: 2,
            jitter: Duration::from_millis(3),
            ..LegStats::default()
        };
        cdr.media_stats(&MediaStats {
            wa: leg(98),
            pbx: leg(48),
            pbx_codec: whatsip_media::Codec::Pcma,
            passthrough: false,
            comfort_noise_runs: 0,
            media_timeouts: 0,
            path: whatsip_media::MediaPathStats::default(),
        });
        cdr.complete_outbound(Some(&OutboundEnd::PbxHangup), false, "pbx hangup");
        let text = m.encode();
        let get = |p: &str| sample(&text, p).unwrap_or_else(|| panic!("{p} missing in\n{text}"));
        assert_eq!(
            get("whatsip_call_attempts_total{direction=\"outbound\"}"),
            1.0
        );
        assert_eq!(
            get("whatsip_calls_in_progress{direction=\"outbound\"}"),
            0.0
        );
        assert_eq!(
            get("whatsip_calls_answered_total{direction=\"outbound\"}"),
            1.0
        );
        assert_eq!(
            get("whatsip_answer_seizure_ratio{direction=\"outbound\"}"),
            1.0
        );
        assert_eq!(
            get("whatsip_call_duration_seconds_count{direction=\"outbound\"}"),
            1.0
        );
        assert_eq!(get("whatsip_rtp_packets_total{leg=\"whatsapp\"}"), 98.0);
        assert_eq!(get("whatsip_rtp_lost_total{leg=\"pbx\"}"), 2.0);
        assert_eq!(get("whatsip_rtp_jitter_seconds_count{leg=\"pbx\"}"), 1.0);
        assert_eq!(get("whatsip_rtp_loss_ratio_count{leg=\"whatsapp\"}"), 1.0);
        // the inbound-only set-up histograms stay empty
        assert_eq!(get("whatsip_setup_answer_to_accept_seconds_count"), 0.0);
        assert_eq!(get("whatsip_setup_webhook_to_invite_seconds_count"), 0.0);
    }

    #[test]
    fn refusal_causes_are_label_safe() {
        assert_eq!(cause("pbx rejected 486"), "pbx_rejected_486");
        assert_eq!(cause("rule `x`: Closed"), "rule__x___Closed");
    }

    #[test]
    fn busy_is_rejected_by_the_pbx() {
        let busy = InboundEnd::PbxRejected(SipStatus::new(486).unwrap());
        assert_eq!(
            classify(Some(&busy), false, false),
            (Outcome::Rejected, Some(HangupSide::Pbx))
        );
        let err = InboundEnd::PbxRejected(SipStatus::new(500).unwrap());
        assert_eq!(classify(Some(&err), false, false).0, Outcome::Failed);
    }

    #[test]
    fn hangups_after_answer_are_answered_calls() {
        assert_eq!(
            classify(Some(&InboundEnd::WaHangup), false, true),
            (Outcome::Answered, Some(HangupSide::WhatsApp))
        );
        assert_eq!(
            classify(Some(&InboundEnd::WaHangup), false, false).0,
            Outcome::Cancelled
        );
        assert_eq!(
            classify(Some(&InboundEnd::NoAnswer), false, false).0,
            Outcome::NoAnswer
        );
        assert_eq!(
            classify(Some(&InboundEnd::PbxHangup), true, true),
            (Outcome::Answered, Some(HangupSide::Gateway))
        );
    }
}
