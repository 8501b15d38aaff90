//! Bounded records of what the gateway sent (Graph requests) and what the simulator
//! delivered (webhooks), plus the latest call snapshots, with a change counter that
//! `wait_for_*` helpers watch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::core::{CallInfo, GraphResponse};
use crate::ids::{PhoneNumberId, WaCallId, WaId};

/// Default for [`crate::SimConfig::record_limit`].
pub(crate) const DEFAULT_RECORD_LIMIT: usize = 20_000;
const MAX_CALLS: usize = 50_000;
const MAX_RAW_BODY: usize = 64 * 1024;

/// One Graph API request the simulator received, with its answer.
#[derive(Clone, Debug, Serialize)]
pub struct GraphRecord {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v23.0/106540352242922/calls`.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// `action` of `/calls` bodies, `type` of `/messages` bodies.
    pub action: Option<String>,
    /// `call_id` in the body, if any.
    pub call_id: Option<String>,
    /// Parsed JSON body (`Null` if absent or not JSON).
    pub body: Value,
    /// Raw body (lossy UTF-8, cut to 64 KiB).
    pub raw_body: String,
    /// An `Authorization` header was present.
    pub had_authorization: bool,
    /// The bearer token presented (the simulator is a test peer: tests check which token
    /// a gateway used, e.g. after a credential rotation).
    pub bearer: Option<String>,
    /// HTTP status answered.
    pub status: u16,
    /// Meta error code answered, if any.
    pub error_code: Option<u32>,
    /// Response body.
    pub response: Value,
}

impl GraphRecord {
    /// `true` for a `POST …/calls` with this `action`.
    pub fn is_call_action(&self, action: &str) -> bool {
        self.method == "POST"
            && self.path.ends_with("/calls")
            && self.action.as_deref() == Some(action)
    }
}

/// Result of one webhook POST attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// Connection error or timeout.
    Error(String),
    /// No webhook URL configured: recorded only.
    NotSent,
    /// Dropped by a fault rule.
    Dropped,
}

/// One webhook POST attempt.
#[derive(Clone, Debug, Serialize)]
pub struct WebhookRecord {
    /// Order of attempts, from 1.
    pub seq: u64,
    /// Delivery number (retries and injected duplicates of one delivery share it).
    pub delivery: u64,
    /// Attempt number within the delivery, from 1.
    pub attempt: u32,
    /// Labels of the changes in the body (`connect`, `terminate`, `RINGING`, …).
    pub labels: Vec<String>,
    /// Calls the changes are about.
    pub call_ids: Vec<WaCallId>,
    /// The exact body bytes sent (UTF-8 JSON).
    pub body: String,
    /// `X-Hub-Signature-256` header sent.
    pub signature: String,
    /// Signed with a deliberately wrong secret.
    pub wrong_secret: bool,
    /// An injected duplicate.
    pub duplicate: bool,
    /// Outcome.
    pub outcome: DeliveryOutcome,
}

impl WebhookRecord {
    /// The receiver answered 200.
    pub fn is_ok(&self) -> bool {
        self.outcome == DeliveryOutcome::Status(200)
    }
}

/// Something the simulated users or Meta did that has no webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SimEvent {
    /// Meta nudged the user after consecutive missed business calls (§3.6).
    Nudge {
        /// Business number.
        phone_number_id: PhoneNumberId,
        /// User.
        user: WaId,
    },
    /// The user's media peer failed on an operation.
    PeerError {
        /// Call.
        call_id: WaCallId,
        /// What failed.
        error: String,
    },
}

#[derive(Default)]
struct Inner {
    graph_seq: u64,
    graph: VecDeque<GraphRecord>,
    webhook_seq: u64,
    webhooks: VecDeque<WebhookRecord>,
    calls: HashMap<WaCallId, CallInfo>,
    call_order: VecDeque<WaCallId>,
    events: VecDeque<SimEvent>,
}

/// Shared, bounded store of observations.
pub(crate) struct Recorder {
    limit: usize,
    inner: Mutex<Inner>,
    version: watch::Sender<u64>,
}

impl Recorder {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            inner: Mutex::new(Inner::default()),
            version: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update of plain data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub(crate) fn record_graph(
        &self,
        method: &str,
        path: &str,
        query: &str,
        authorization: Option<&str>,
        raw: &[u8],
        resp: &GraphResponse,
    ) -> GraphRecord {
        let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        let cut = &raw[..raw.len().min(MAX_RAW_BODY)];
        let rec = {
            let mut g = self.lock();
            g.graph_seq += 1;
            let rec = GraphRecord {
                seq: g.graph_seq,
                method: method.to_owned(),
                path: path.to_owned(),
                query: query.to_owned(),
                action: resp.action.clone(),
                call_id: body
                    .get("call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                body,
                raw_body: String::from_utf8_lossy(cut).into_owned(),
                had_authorization: authorization.is_some(),
                bearer: authorization
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::to_owned),
                status: resp.status,
                error_code: resp.error_code,
                response: resp.body.clone(),
            };
            if g.graph.len() >= self.limit {
                g.graph.pop_front();
            }
            g.graph.push_back(rec.clone());
            rec
        };
        self.bump();
        rec
    }

    pub(crate) fn next_webhook_seq(&self) -> u64 {
        let mut g = self.lock();
        g.webhook_seq += 1;
        g.webhook_seq
    }

    pub(crate) fn record_webhook(&self, rec: WebhookRecord) {
        {
            let mut g = self.lock();
            if g.webhooks.len() >= self.limit {
                g.webhooks.pop_front();
            }
            g.webhooks.push_back(rec);
        }
        self.bump();
    }

    pub(crate) fn update_call(&self, info: CallInfo) {
        {
            let mut g = self.lock();
            if !g.calls.contains_key(&info.id) {
                g.call_order.push_back(info.id.clone());
                while g.call_order.len() > MAX_CALLS {
                    if let Some(old) = g.call_order.pop_front() {
                        g.calls.remove(&old);
                    }
                }
            }
            g.calls.insert(info.id.clone(), info);
        }
        self.bump();
    }

    pub(crate) fn push_event(&self, e: SimEvent) {
        {
            let mut g = self.lock();
            if g.events.len() >= self.limit {
                g.events.pop_front();
            }
            g.events.push_back(e);
        }
        self.bump();
    }

    pub(crate) fn graph(&self) -> Vec<GraphRecord> {
        self.lock().graph.iter().cloned().collect()
    }

    pub(crate) fn webhooks(&self) -> Vec<WebhookRecord> {
        self.lock().webhooks.iter().cloned().collect()
    }

    pub(crate) fn events(&self) -> Vec<SimEvent> {
        self.lock().events.iter().cloned().collect()
    }

    pub(crate) fn call(&self, id: &WaCallId) -> Option<CallInfo> {
        self.lock().calls.get(id).cloned()
    }

    pub(crate) fn calls(&self) -> Vec<CallInfo> {
        let g = self.lock();
        g.call_order
            .iter()
            .filter_map(|id| g.calls.get(id).cloned())
            .collect()
    }

    pub(crate) fn clear(&self) {
        {
            let mut g = self.lock();
            g.graph.clear();
            g.webhooks.clear();
            g.events.clear();
        }
        self.bump();
    }
}
