//! Webhook delivery: Meta's envelope, `X-Hub-Signature-256`, bounded retries, and fault
//! injection (duplicate, delay, hold-until-next for reordering, wrong secret, drop, batch).
//!
//! Changes of one call go through the same lane, so without faults they arrive in the
//! order Meta emitted them; a retrying lane delays only its own calls.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;
use tracing::{debug, warn};

use crate::core::config::{opt_secs, secs};
use crate::core::{MetaOrder, Webhook, envelope};
use crate::driver::clock::tokio_now;
use crate::driver::recorder::{DeliveryOutcome, Recorder, WebhookRecord};
use crate::ids::WaCallId;

/// Where and how webhooks are delivered.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Callback URL; `None` records webhooks without sending them.
    pub url: Option<String>,
    /// App secret for `X-Hub-Signature-256`.
    #[serde(skip_serializing)]
    pub app_secret: String,
    /// Per-attempt timeout (Meta: about 20 s, §1.1).
    #[serde(rename = "timeout_s", with = "secs")]
    pub timeout: Duration,
    /// Attempts per delivery, first included (bounded; Meta's calling retry policy is
    /// undocumented, §10.4).
    pub max_attempts: u32,
    /// Retry delay base: the 2nd attempt is immediate, then base, 2×base, 4×base …
    /// capped at 60 s ("retried immediately, then with decreasing frequency", §1.1).
    #[serde(rename = "retry_backoff_s", with = "secs")]
    pub retry_backoff: Duration,
    /// Parallel delivery lanes (a call always uses the same lane).
    pub lanes: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("app_secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("lanes", &self.lanes)
            .finish()
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: None,
            app_secret: String::new(),
            timeout: Duration::from_secs(20),
            max_attempts: 5,
            retry_backoff: Duration::from_secs(1),
            lanes: 8,
        }
    }
}

/// Fault injection applied to webhooks as they leave the simulator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Rules, checked in order; every matching rule applies.
    pub rules: Vec<FaultRule>,
    /// Batch several changes into one POST.
    pub batch: Option<Batching>,
    /// Faults on Graph API responses (slow, failing or silent Graph).
    pub graph: Vec<GraphFaultRule>,
}

/// A fault applied to Graph API requests as they arrive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFaultRule {
    /// Last path segment to match (`calls`, `messages`, `settings`, `call_permissions`);
    /// `None` matches all.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Body `action` (calls) or `type` (messages) to match; `None` matches all.
    #[serde(default)]
    pub action: Option<String>,
    /// What to do.
    pub fault: GraphFault,
    /// Apply to this many matching requests, then stop (`None`: always).
    #[serde(default)]
    pub times: Option<u32>,
}

/// A Graph API fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GraphFault {
    /// Process the request, then answer after a delay (a slow Meta: the action took
    /// effect even if the client timed out).
    Delay {
        /// Delay.
        #[serde(rename = "delay_s", with = "secs")]
        delay: Duration,
    },
    /// Do not process; answer with Meta's error body for `code` (e.g. 138004 / HTTP 500,
    /// 138002 / 429).
    Error {
        /// Meta error code.
        code: u32,
    },
    /// Do not process and never answer (the connection is held for up to an hour or
    /// until the client gives up).
    NoResponse,
}

impl Faults {
    /// Finds the first Graph fault for a request (decrementing its `times`).
    pub(crate) fn take_graph_fault(
        &mut self,
        endpoint: &str,
        action: Option<&str>,
    ) -> Option<GraphFault> {
        for rule in &mut self.graph {
            if rule.times == Some(0) {
                continue;
            }
            if rule.endpoint.as_deref().is_some_and(|e| e != endpoint) {
                continue;
            }
            if rule.action.is_some() && rule.action.as_deref() != action {
                continue;
            }
            if let Some(t) = &mut rule.times {
                *t -= 1;
            }
            return Some(rule.fault.clone());
        }
        None
    }
}

/// One fault rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Which webhooks it applies to.
    #[serde(default)]
    pub matches: WebhookMatch,
    /// What to do.
    pub action: FaultAction,
    /// Apply to this many matching webhooks, then stop (`None`: always).
    #[serde(default)]
    pub times: Option<u32>,
}

/// Selects webhooks by label or field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookMatch {
    /// Every webhook.
    #[default]
    Any,
    /// `connect`, `terminate`, `RINGING`, `ACCEPTED`, `REJECTED`, `call_permission_reply`,
    /// `message_status`, `account_settings_update`.
    Label(String),
    /// `calls`, `messages`, `account_settings_update`.
    Field(String),
}

/// A fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Deliver twice (the second after the first completed).
    Duplicate,
    /// Deliver after a delay (later webhooks of the call may overtake it).
    Delay {
        /// Delay.
        #[serde(rename = "delay_s", with = "secs")]
        delay: Duration,
    },
    /// Hold until the next webhook of the same call was delivered, then deliver it:
    /// e.g. `terminate` before `connect` (§1.1). Released after `max_s` at the latest.
    HoldUntilNext {
        /// Longest hold.
        #[serde(rename = "max_s", with = "opt_secs", default)]
        max: Option<Duration>,
    },
    /// Sign with a wrong secret.
    WrongSecret,
    /// Never deliver.
    Drop,
    /// Add an unknown `whatsip_padding` field of this many bytes to the change value (tests
    /// receivers' body size limits and tolerance of unknown fields; capped at 16 MiB).
    Pad {
        /// Padding size.
        bytes: usize,
    },
}

/// Batching of changes into one POST (Meta may batch up to 1000, §1.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Flush when this many changes are pending.
    pub max_changes: usize,
    /// Flush this long after the first pending change.
    #[serde(rename = "window_s", with = "secs")]
    pub window: Duration,
}

impl WebhookMatch {
    fn matches(&self, w: &Webhook) -> bool {
        match self {
            Self::Any => true,
            Self::Label(l) => *l == w.label,
            Self::Field(f) => *f == w.field,
        }
    }
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>` (§1.1).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC accepts keys of any length; keep a total function anyway.
        Err(_) => String::from("sha256="),
    }
}

struct Unit {
    changes: Vec<Webhook>,
    wrong_secret: bool,
    duplicate: bool,
    dropped: bool,
}

const MAX_HELD: usize = 10_000;
const DEFAULT_HOLD: Duration = Duration::from_secs(10);

/// Runs the intake: faults, batching, lane dispatch. Ends when `rx` closes.
pub(crate) async fn run(
    cfg: WebhookConfig,
    faults: Arc<Mutex<Faults>>,
    recorder: Arc<Recorder>,
    mut rx: mpsc::Receiver<Webhook>,
) {
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .no_proxy()
        .user_agent("facebookexternalua")
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let lanes_n = cfg.lanes.clamp(1, 64);
    let cfg = Arc::new(cfg);
    let mut lanes = Vec::with_capacity(lanes_n);
    let mut workers = JoinSet::new();
    for _ in 0..lanes_n {
        let (tx, lane_rx) = mpsc::channel::<Unit>(1024);
        lanes.push(tx);
        workers.spawn(lane(cfg.clone(), client.clone(), recorder.clone(), lane_rx));
    }
    let lanes = Arc::new(lanes);
    let mut held: HashMap<WaCallId, Vec<(Unit, TokioInstant)>> = HashMap::new();
    let mut batch: Vec<Webhook> = Vec::new();
    let mut batch_deadline: Option<TokioInstant> = None;
    loop {
        let hold_deadline = held.values().flatten().map(|(_, t)| *t).min();
        let next = [hold_deadline, batch_deadline].into_iter().flatten().min();
        tokio::select! {
            w = rx.recv() => {
                let Some(w) = w else { break };
                let Applied { mut unit, hold, delay, batching } = apply_rules(&faults, w);
                if unit.dropped {
                    record_dropped(&recorder, &unit);
                    continue;
                }
                let call = unit.changes.first().and_then(|c| c.call_id.clone());
                if let (Some(max), Some(call)) = (hold, call.clone()) {
                    let list = held.entry(call).or_default();
                    if list.len() < MAX_HELD {
                        list.push((unit, tokio_now() + max));
                        continue;
                    }
                }
                if let Some(b) = batching.filter(|b| b.max_changes > 1) {
                    batch.append(&mut unit.changes);
                    if batch.len() >= b.max_changes {
                        batch_deadline = None;
                        dispatch(&lanes, Unit { changes: std::mem::take(&mut batch), wrong_secret: unit.wrong_secret, duplicate: unit.duplicate, dropped: false }, None).await;
                    } else if batch_deadline.is_none() {
                        batch_deadline = Some(tokio_now() + b.window);
                    }
                } else {
                    dispatch(&lanes, unit, delay).await;
                }
                if let Some(call) = call
                    && let Some(list) = held.remove(&call)
                {
                    for (u, _) in list {
                        dispatch(&lanes, u, None).await;
                    }
                }
            }
            () = sleep_opt(next) => {
                let now = tokio_now();
                if batch_deadline.is_some_and(|t| t <= now) {
                    batch_deadline = None;
                    dispatch(&lanes, Unit { changes: std::mem::take(&mut batch), wrong_secret: false, duplicate: false, dropped: false }, None).await;
                }
                let expired: Vec<WaCallId> = held
                    .iter()
                    .filter(|(_, l)| l.iter().any(|(_, t)| *t <= now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in expired {
                    if let Some(list) = held.remove(&k) {
                        for (u, _) in list {
                            dispatch(&lanes, u, None).await;
                        }
                    }
                }
            }
        }
    }
    if !batch.is_empty() {
        dispatch(
            &lanes,
            Unit {
                changes: batch,
                wrong_secret: false,
                duplicate: false,
                dropped: false,
            },
            None,
        )
        .await;
    }
    for (_, list) in held.drain() {
        for (u, _) in list {
            dispatch(&lanes, u, None).await;
        }
    }
    drop(lanes);
    while workers.join_next().await.is_some() {}
}

struct Applied {
    unit: Unit,
    hold: Option<Duration>,
    delay: Option<Duration>,
    batching: Option<Batching>,
}

/// Applies the fault rules to one webhook (decrementing `times`).
fn apply_rules(faults: &Mutex<Faults>, w: Webhook) -> Applied {
    let mut f = faults.lock().unwrap_or_else(|e| e.into_inner());
    let mut unit = Unit {
        changes: Vec::new(),
        wrong_secret: false,
        duplicate: false,
        dropped: false,
    };
    let mut hold = None;
    let mut delay = None;
    let mut pad = None;
    for rule in &mut f.rules {
        if rule.times == Some(0) || !rule.matches.matches(&w) {
            continue;
        }
        if let Some(t) = &mut rule.times {
            *t -= 1;
        }
        match &rule.action {
            FaultAction::Duplicate => unit.duplicate = true,
            FaultAction::Delay { delay: d } => delay = Some(*d),
            FaultAction::HoldUntilNext { max } => hold = Some(max.unwrap_or(DEFAULT_HOLD)),
            FaultAction::WrongSecret => unit.wrong_secret = true,
            FaultAction::Drop => unit.dropped = true,
            FaultAction::Pad { bytes } => pad = Some((*bytes).min(16 * 1024 * 1024)),
        }
    }
    let mut w = w;
    if let (Some(n), Some(obj)) = (pad, w.value.as_object_mut()) {
        obj.insert(
            "whatsip_padding".into(),
            serde_json::Value::from("x".repeat(n)),
        );
    }
    unit.changes.push(w);
    Applied {
        unit,
        hold,
        delay,
        batching: f.batch.clone(),
    }
}

async fn sleep_opt(at: Option<TokioInstant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn dispatch(lanes: &Arc<Vec<mpsc::Sender<Unit>>>, unit: Unit, delay: Option<Duration>) {
    if unit.changes.is_empty() || lanes.is_empty() {
        return;
    }
    let idx = match unit.changes.first().and_then(|c| c.call_id.as_ref()) {
        Some(id) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            id.hash(&mut h);
            (h.finish() % lanes.len() as u64) as usize
        }
        None => 0,
    };
    match delay {
        Some(d) => {
            let lanes = lanes.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                if let Some(tx) = lanes.get(idx) {
                    let _ = tx.send(unit).await;
                }
            });
        }
        None => {
            if let Some(tx) = lanes.get(idx)
                && tx.send(unit).await.is_err()
            {
                debug!("webhook lane closed");
            }
        }
    }
}

fn record_dropped(recorder: &Recorder, unit: &Unit) {
    let body = serde_json::to_string(&MetaOrder(&envelope(&unit.changes))).unwrap_or_default();
    recorder.record_webhook(WebhookRecord {
        seq: recorder.next_webhook_seq(),
        delivery: 0,
        attempt: 0,
        labels: unit.changes.iter().map(|c| c.label.clone()).collect(),
        call_ids: unit
            .changes
            .iter()
            .filter_map(|c| c.call_id.clone())
            .collect(),
        body,
        signature: String::new(),
        wrong_secret: unit.wrong_secret,
        duplicate: false,
        outcome: DeliveryOutcome::Dropped,
    });
}

async fn lane(
    cfg: Arc<WebhookConfig>,
    client: reqwest::Client,
    recorder: Arc<Recorder>,
    mut rx: mpsc::Receiver<Unit>,
) {
    let mut delivery_no = 0u64;
    while let Some(unit) = rx.recv().await {
        let body = match serde_json::to_vec(&MetaOrder(&envelope(&unit.changes))) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "webhook body not serialisable");
                continue;
            }
        };
        let secret = if unit.wrong_secret {
            format!("wrong-{}", cfg.app_secret)
        } else {
            cfg.app_secret.clone()
        };
        let signature = sign(secret.as_bytes(), &body);
        delivery_no += 1;
        let rounds = if unit.duplicate { 2 } else { 1 };
        for round in 0..rounds {
            deliver_one(
                &cfg,
                &client,
                &recorder,
                &unit,
                &body,
                &signature,
                delivery_no,
                round == 1,
            )
            .await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver_one(
    cfg: &WebhookConfig,
    client: &reqwest::Client,
    recorder: &Recorder,
    unit: &Unit,
    body: &[u8],
    signature: &str,
    delivery: u64,
    duplicate: bool,
) {
    let labels: Vec<String> = unit.changes.iter().map(|c| c.label.clone()).collect();
    let call_ids: Vec<WaCallId> = unit
        .changes
        .iter()
        .filter_map(|c| c.call_id.clone())
        .collect();
    let text = String::from_utf8_lossy(body).into_owned();
    let record = |attempt: u32, outcome: DeliveryOutcome| WebhookRecord {
        seq: recorder.next_webhook_seq(),
        delivery,
        attempt,
        labels: labels.clone(),
        call_ids: call_ids.clone(),
        body: text.clone(),
        signature: signature.to_owned(),
        wrong_secret: unit.wrong_secret,
        duplicate,
        outcome,
    };
    let Some(url) = cfg.url.as_deref() else {
        recorder.record_webhook(record(1, DeliveryOutcome::NotSent));
        return;
    };
    let attempts = cfg.max_attempts.clamp(1, 100);
    for attempt in 1..=attempts {
        if attempt >= 3 {
            let exp = (attempt - 3).min(16);
            let wait = cfg
                .retry_backoff
                .saturating_mul(1 << exp)
                .min(Duration::from_secs(60));
            tokio::time::sleep(wait).await;
        }
        let res = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body.to_vec())
            .send()
            .await;
        let outcome = match res {
            Ok(r) => DeliveryOutcome::Status(r.status().as_u16()),
            Err(e) => DeliveryOutcome::Error(crate::ids::truncate(&e.to_string(), 200).to_owned()),
        };
        let ok = outcome == DeliveryOutcome::Status(200);
        if !ok {
            debug!(attempt, ?outcome, labels = ?labels, "webhook delivery failed");
        }
        recorder.record_webhook(record(attempt, outcome));
        if ok {
            return;
        }
    }
    warn!(labels = ?labels, attempts, "webhook delivery gave up");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let s = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
