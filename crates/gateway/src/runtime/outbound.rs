//! Business-initiated calls: an INVITE from the PBX becomes a Graph `connect` to a
//! WhatsApp user (issue 6; Calling API notes §1.4, §1.5, §2.2, §3, §7.2).
//!
//! ```text
//!  PBX INVITE ──ACL──▶ dial plan ──▶ local checks (country, permission, consent guard, cap)
//!      │ refused: 403/480/… with Reason + Warning (one mapping: outbound_failure_reply)
//!      ▼
//!  call task: OutboundCall core ── WebRTC offer ── connect ── RINGING: 180 ── answer SDP ──
//!             ACCEPTED: 200 OK (PBX-leg SDP answer) ── BYE ↔ terminate
//! ```
//!
//! [`Outbound`] lives in the dispatcher: it owns the [`PermissionTracker`] (fed by
//! `call_permission_reply` webhooks, `GET call_permissions` replies and call outcomes) and
//! a registry of outbound call tasks by SIP Call-ID, INVITE server transaction and
//! WhatsApp call id. Status and answer webhooks can overtake the HTTP reply to `connect`
//! (which carries the call id), so events for a call id not yet known are parked
//! (bounded) and handed over when the task learns its id.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, Span, debug, info, info_span, warn};
use whatsip_media::driver::{MediaCommand, PbxMediaHandle, PbxSockets};
use whatsip_media::sdp::{LocalMedia, NegotiatedMedia, PbxSdpConfig, answer_offer};
use whatsip_media::webrtc::{WaCallHandle, WaLegEvent};
use whatsip_media::{Codec as MediaCodec, Direction as MediaDirection, Leg, RelayEvent, RtpPacket};
use whatsip_meta::graph::PermissionStatus;
use whatsip_meta::rt::GraphSide;
use whatsip_meta::side::{SideEvent, WhatsAppSide};
use whatsip_meta::{CallStatusKind, Event, PermissionResponse, WaId, WebhookEvent};
use whatsip_sip::endpoint::{IncomingRequest, ServerTxnId};
use whatsip_sip::transport::Target;
use whatsip_sip::{HeaderName, Method, Request, StatusCode, Tag};

use super::call::Shared;
use super::clock::SystemClock;
use super::milestone::{CallMilestone, MilestoneKind};
use super::pbx;
use crate::call::{
    GraphAction, OutboundAction, OutboundCall, OutboundEnd, OutboundFailure, OutboundInput,
    OutboundSettings, SipReply, WaCallStatus,
};
use crate::config::Codec;
use crate::dialplan::{CallContext, OutboundRoute, Route};
use crate::permission::{CallOutcome, Permission, PermissionReply, PermissionTracker};
use crate::types::{Direction, E164, WaCallId};

/// Events parked for call ids not yet returned by `connect` (bounded).
const MAX_PARKED: usize = 1024;
/// Events parked per call id (Meta sends an answer and three statuses at most).
const MAX_PARKED_PER_CALL: usize = 8;

/// What the dispatcher hands an outbound call task.
#[derive(Debug)]
pub(crate) enum OutCmd {
    /// A call webhook (answer, status, terminate).
    Side(SideEvent),
    /// An in-dialog request from the PBX.
    Sip(Box<IncomingRequest>),
    /// The PBX cancelled the INVITE (the endpoint already answered 487).
    Cancelled,
    /// The gateway shuts down.
    Shutdown,
}

#[derive(Debug, Default)]
struct RegistryInner {
    by_sip: HashMap<String, mpsc::Sender<OutCmd>>,
    by_txn: HashMap<ServerTxnId, String>,
    by_wa: HashMap<String, String>,
    parked: HashMap<String, Vec<SideEvent>>,
    parked_order: VecDeque<String>,
}

/// What [`OutRegistry::route`] decided.
#[derive(Debug)]
enum Routed {
    /// For this live call.
    Deliver(mpsc::Sender<OutCmd>, SideEvent),
    /// Parked (or dropped as belonging to no call).
    Taken,
    /// Not an outbound call's event.
    NotOurs,
}

/// Live outbound calls.
#[derive(Debug, Default)]
pub(crate) struct OutRegistry {
    inner: Mutex<RegistryInner>,
}

impl OutRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds a WhatsApp call id to the call; returns the events parked for it.
    fn bind_wa(&self, wa: &str, sip: &str) -> Vec<SideEvent> {
        let mut g = self.lock();
        g.by_wa.insert(wa.to_owned(), sip.to_owned());
        g.parked_order.retain(|w| w != wa);
        g.parked.remove(wa).unwrap_or_default()
    }

    /// Where a call webhook goes: to a live outbound call, parked for a call whose
    /// `connect` reply is still outstanding, or back to the inbound path.
    fn route(&self, ev: SideEvent) -> Routed {
        let wa = ev.call_id().as_str().to_owned();
        let mut g = self.lock();
        if let Some(tx) = g.by_wa.get(&wa).and_then(|s| g.by_sip.get(s)).cloned() {
            return Routed::Deliver(tx, ev);
        }
        if !matches!(ev, SideEvent::Answered { .. } | SideEvent::Progress { .. }) {
            return Routed::NotOurs;
        }
        // only business-initiated calls get these: park until `connect` returns
        if g.by_sip.is_empty() {
            debug!(wa_call_id = %wa, "business-initiated call event for no call");
            return Routed::Taken;
        }
        if !g.parked.contains_key(&wa) {
            g.parked_order.push_back(wa.clone());
            if g.parked_order.len() > MAX_PARKED
                && let Some(old) = g.parked_order.pop_front()
            {
                g.parked.remove(&old);
            }
        }
        let events = g.parked.entry(wa).or_default();
        if events.len() < MAX_PARKED_PER_CALL {
            events.push(ev);
        }
        Routed::Taken
    }

    fn remove(&self, sip: &str) {
        let mut g = self.lock();
        g.by_sip.remove(sip);
        g.by_txn.retain(|_, s| s != sip);
        g.by_wa.retain(|_, s| s != sip);
    }
}

/// The dispatcher's part of business-initiated calls.
pub(crate) struct Outbound {
    shared: Arc<Shared>,
    tracker: Arc<Mutex<PermissionTracker>>,
    registry: Arc<OutRegistry>,
}

impl Outbound {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            tracker: shared.permissions.clone(),
            shared,
            registry: Arc::new(OutRegistry::default()),
        }
    }

    /// Takes the webhooks that concern outbound calls or permissions; `false` leaves the
    /// event to the inbound path.
    pub(crate) fn on_webhook(&self, ev: &WebhookEvent) -> bool {
        if let Event::PermissionReply(reply) = &ev.event {
            self.on_permission_reply(ev, reply);
            return true;
        }
        let Some(side_event) = SideEvent::from_event(&ev.event) else {
            return false;
        };
        match self.registry.route(side_event) {
            Routed::Deliver(tx, ev) => {
                deliver(tx, OutCmd::Side(ev));
                true
            }
            Routed::Taken => true,
            Routed::NotOurs => false,
        }
    }

    fn on_permission_reply(&self, ev: &WebhookEvent, reply: &whatsip_meta::PermissionReply) {
        let config = self.shared.live();
        let business = ev
            .context
            .phone_number_id
            .as_ref()
            .and_then(|p| {
                config
                    .business_numbers
                    .iter()
                    .find(|b| b.phone_number_id.as_str() == p.as_str())
            })
            .map(|b| b.number.clone());
        let (Some(business), Ok(user)) =
            (business, E164::parse(&format!("+{}", reply.from.as_str())))
        else {
            warn!("call_permission_reply for an unknown business number or user; ignored");
            return;
        };
        let accepted = reply.response == PermissionResponse::Accept;
        info!(
            accepted,
            permanent = reply.is_permanent,
            "call permission reply"
        );
        let expires = reply
            .expiration
            .and_then(|t| jiff::Timestamp::from_second(i64::try_from(t.as_secs()).ok()?).ok());
        lock(&self.tracker).handle_reply(
            &business,
            &user,
            PermissionReply {
                accepted,
                permanent: reply.is_permanent,
                expires,
            },
            SystemClock::timestamp(),
        );
    }

    /// Takes requests that belong to outbound calls, and new INVITEs from the PBX. Returns
    /// the request when it is not for this path.
    pub(crate) fn on_request(
        &self,
        req: IncomingRequest,
        accepting: bool,
        sides: &HashMap<String, GraphSide>,
        tasks: &mut JoinSet<()>,
    ) -> Option<IncomingRequest> {
        let call_id = req.request.call_id().map(|c| c.as_str().to_owned());
        if let Some(c) = &call_id {
            let tx = self.registry.lock().by_sip.get(c).cloned();
            if let Some(tx) = tx {
                if req.request.method != Method::Invite || req.dialog.is_some() {
                    deliver(tx, OutCmd::Sip(Box::new(req)));
                }
                // a retransmitted INVITE is absorbed by its transaction
                return None;
            }
        }
        if req.dialog.is_some() || req.request.method != Method::Invite {
            return Some(req);
        }
        // the `PbxInvite` milestone's stamp: the gateway's setup time starts here
        let invite_at_us = CallMilestone::now_unix_us();
        let Some(call_id) = call_id else {
            self.spawn_reply(&req, tasks, simple(400, "no Call-ID"));
            return None;
        };
        if !accepting {
            let reply = SipReply {
                retry_after: Some(Duration::from_secs(30)),
                ..simple(503, "gateway shutting down")
            };
            self.spawn_reply(&req, tasks, reply);
            return None;
        }
        let live = self.shared.live();
        let pbx = &live.pbx;
        if !pbx.allowed_sources.is_empty()
            && !pbx
                .allowed_sources
                .iter()
                .any(|n| n.contains(req.source.ip()))
        {
            warn!(source = %req.source, "INVITE from outside the trunk's allowed sources");
            self.spawn_reply(&req, tasks, simple(403, "source not allowed"));
            return None;
        }
        let dialled = dialled_number(&req.request);
        let asserted = asserted_business(&req.request).and_then(|n| {
            self.shared
                .config
                .business_by_number(&n)
                .map(|b| b.number.clone())
        });
        let ctx = CallContext {
            direction: Direction::Outbound,
            business: asserted,
            customer: dialled,
            cta_payload: None,
            deeplink_payload: None,
            now: SystemClock::timestamp(),
        };
        let route = match self.shared.live().dialplan.route(&ctx) {
            Route::Outbound(r) => r,
            Route::Reject { reason, rule } => {
                let reply = crate::call::outbound_failure_reply(
                    &OutboundFailure::DialPlan(reason),
                    self.shared.live().outbound.rejected_status,
                );
                let refused = Refused {
                    call_id: &call_id,
                    business: ctx.business.as_ref().map(ToString::to_string),
                    customer: &ctx.customer,
                    rule: rule.as_deref(),
                };
                self.spawn_refused(&req, tasks, reply, &refused);
                return None;
            }
            Route::Inbound(r) => {
                let refused = Refused {
                    call_id: &call_id,
                    business: ctx.business.as_ref().map(ToString::to_string),
                    customer: &ctx.customer,
                    rule: Some(r.rule.as_str()),
                };
                self.spawn_refused(&req, tasks, simple(404, "rule is inbound-only"), &refused);
                return None;
            }
        };
        let Some(business) = self
            .shared
            .config
            .business_by_number(&route.from_business)
            .cloned()
        else {
            let refused = Refused {
                call_id: &call_id,
                business: Some(route.from_business.to_string()),
                customer: &route.whatsapp_user.to_string(),
                rule: Some(route.rule.as_str()),
            };
            let reply = simple(404, "business number not configured");
            self.spawn_refused(&req, tasks, reply, &refused);
            return None;
        };
        let Some(side) = sides.get(business.phone_number_id.as_str()).cloned() else {
            self.spawn_reply(&req, tasks, simple(500, "no graph side"));
            return None;
        };
        let (tx, rx) = mpsc::channel(64);
        {
            let mut g = self.registry.lock();
            g.by_sip.insert(call_id.clone(), tx);
            g.by_txn.insert(req.id, call_id.clone());
        }
        let span = info_span!(
            "call",
            wa_call_id = tracing::field::Empty,
            sip_call_id = %call_id,
            dir = "outbound"
        );
        let mut task = OutTask::new(
            self.shared.clone(),
            self.tracker.clone(),
            self.registry.clone(),
            side,
            req,
            route,
            call_id,
            rx,
            span.clone(),
        );
        task.invite_at_us = invite_at_us;
        tasks.spawn(task.run().instrument(span));
        None
    }

    /// The endpoint answered a CANCEL for this INVITE (487 already sent).
    pub(crate) fn on_cancelled(&self, id: ServerTxnId) {
        let g = self.registry.lock();
        if let Some(tx) = g.by_txn.get(&id).and_then(|s| g.by_sip.get(s)).cloned() {
            drop(g);
            deliver(tx, OutCmd::Cancelled);
        }
    }

    /// Ends every outbound call.
    pub(crate) fn shutdown(&self) {
        let all: Vec<_> = self.registry.lock().by_sip.values().cloned().collect();
        for tx in all {
            deliver(tx, OutCmd::Shutdown);
        }
    }

    /// As [`Self::spawn_reply`] for a trunk call attempt refused before it got a call task:
    /// the attempt gets its `refused` CDR too.
    fn spawn_refused(
        &self,
        req: &IncomingRequest,
        tasks: &mut JoinSet<()>,
        reply: SipReply,
        refused: &Refused<'_>,
    ) {
        let writer = self.shared.cdr.clone();
        let metrics = self.shared.metrics.clone();
        let status = reply.status.code();
        let reason = format!("{status} {}", reply.reason);
        let call_id = refused.call_id.to_owned();
        let business = refused.business.clone().unwrap_or_default();
        let customer = refused.customer.to_owned();
        let rule = refused.rule.map(str::to_owned);
        tasks.spawn(
            async move {
                super::ops_cdr::write_refused_outbound(
                    writer,
                    &metrics,
                    &call_id,
                    &business,
                    &customer,
                    rule.as_deref(),
                    status,
                    &reason,
                )
                .await;
            }
            .in_current_span(),
        );
        self.spawn_reply(req, tasks, reply);
    }

    fn spawn_reply(&self, req: &IncomingRequest, tasks: &mut JoinSet<()>, reply: SipReply) {
        info!(status = reply.status.code(), reason = %reply.reason, "business-initiated call refused");
        let sip = self.shared.sip.clone();
        let resp = failure_response(&req.request, &reply, &random_tag());
        let id = req.id;
        tasks.spawn(
            async move {
                if let Err(e) = sip.respond(id, resp).await {
                    debug!(error = %e, "response not sent");
                }
            }
            .in_current_span(),
        );
    }
}

fn lock(t: &Mutex<PermissionTracker>) -> std::sync::MutexGuard<'_, PermissionTracker> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn deliver(tx: mpsc::Sender<OutCmd>, cmd: OutCmd) {
    match tx.try_send(cmd) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(cmd)) => {
            tokio::spawn(
                async move {
                    let _ = tx.send(cmd).await;
                }
                .in_current_span(),
            );
        }
    }
}

fn random_tag() -> Tag {
    Tag::new(format!("{:08x}", rand::random::<u32>()))
}

fn simple(code: u16, text: &str) -> SipReply {
    SipReply {
        status: crate::types::SipStatus::new(code)
            .unwrap_or(crate::types::SipStatus::from_const(500)),
        reason: String::new(),
        warning: Some(format!("399 whatsip \"{text}\"")),
        retry_after: None,
    }
}

/// The user part of the Request-URI (the dialled number), as received.
fn dialled_number(req: &Request) -> String {
    let s = req.uri.to_string();
    let s = s.trim_start_matches("sips:").trim_start_matches("sip:");
    let s = s.trim_start_matches("tel:");
    let user = s.split('@').next().unwrap_or("");
    user.split(';').next().unwrap_or("").to_owned()
}

/// The business number the PBX asserted (P-Asserted-Identity, else From user part).
fn asserted_business(req: &Request) -> Option<E164> {
    let uri = req
        .headers
        .get("P-Asserted-Identity")
        .and_then(|v| whatsip_sip::NameAddr::parse(v).map(|n| n.uri))
        .or_else(|| req.headers.from().map(|n| n.uri))?;
    let s = uri.to_string();
    let s = s.trim_start_matches("sips:").trim_start_matches("sip:");
    let user = s.split('@').next()?;
    let user = user.split(';').next()?;
    let number = if user.starts_with('+') {
        user.to_owned()
    } else {
        format!("+{user}")
    };
    E164::parse(&number).ok()
}

/// A trunk call attempt refused before it got a call task, for its CDR.
struct Refused<'a> {
    call_id: &'a str,
    /// The business the PBX asserted (or the route's), if any.
    business: Option<String>,
    /// The number the PBX dialled.
    customer: &'a str,
    rule: Option<&'a str>,
}

/// A non-2xx final response with the mapped `Reason` / `Warning` / `Retry-After`.
fn failure_response(req: &Request, reply: &SipReply, tag: &Tag) -> whatsip_sip::Response {
    let status = StatusCode::new(reply.status.code()).unwrap_or(StatusCode::SERVER_INTERNAL_ERROR);
    let mut resp = req.response(status, Some(tag));
    if !reply.reason.is_empty() {
        resp.headers.push("Reason", reply.reason.clone());
    }
    if let Some(w) = &reply.warning {
        resp.headers.push("Warning", w.clone());
    }
    if let Some(r) = reply.retry_after {
        resp.headers.push("Retry-After", r.as_secs().to_string());
    }
    resp
}

struct PbxMedia {
    handle: PbxMediaHandle,
    wa_out: mpsc::Receiver<RtpPacket>,
    events: mpsc::Receiver<RelayEvent>,
}

enum Wake {
    Cmd(Option<OutCmd>),
    Wa(Option<WaLegEvent>),
    ToWa(Option<RtpPacket>),
    Relay(Option<RelayEvent>),
    Timer,
}

struct OutTask {
    shared: Arc<Shared>,
    tracker: Arc<Mutex<PermissionTracker>>,
    registry: Arc<OutRegistry>,
    side: GraphSide,
    span: Span,
    invite: IncomingRequest,
    sip_call_id: String,
    to_tag: Tag,
    core: OutboundCall,
    business: E164,
    bic_allowed: bool,
    user: E164,
    rx: mpsc::Receiver<OutCmd>,
    rx_open: bool,
    backlog: VecDeque<OutCmd>,
    wa: Option<WaCallHandle>,
    wa_call_id: Option<whatsip_meta::WaCallId>,
    offer_sdp: Option<String>,
    wa_answer_sdp: Option<String>,
    pbx_answer_sdp: Option<String>,
    negotiated: Option<NegotiatedMedia>,
    sockets: Option<PbxSockets>,
    rtp_port: Option<u16>,
    media: Option<PbxMedia>,
    pending_reinvite: Option<IncomingRequest>,
    answered: bool,
    bye_sent: bool,
    shutting_down: bool,
    cdr: std::sync::Mutex<super::ops_cdr::CallCdr>,
    /// When the dispatcher took the INVITE (wall clock, µs; the `PbxInvite` stamp).
    invite_at_us: i64,
}

impl OutTask {
    #[allow(clippy::too_many_arguments)] // one constructor, called once by the dispatcher
    fn new(
        shared: Arc<Shared>,
        tracker: Arc<Mutex<PermissionTracker>>,
        registry: Arc<OutRegistry>,
        side: GraphSide,
        invite: IncomingRequest,
        route: OutboundRoute,
        sip_call_id: String,
        rx: mpsc::Receiver<OutCmd>,
        span: Span,
    ) -> Self {
        let live = shared.live();
        let o = &live.outbound;
        let settings = OutboundSettings {
            ring_timeout: o.ring_timeout,
            rejected_status: o.rejected_status,
            early_ringback: o.early_ringback,
        };
        let bic_allowed = shared
            .config
            .business_by_number(&route.from_business)
            .is_some_and(|b| b.business_initiated_calls);
        let cdr = super::ops_cdr::CallCdr::outbound(
            shared.cdr.clone(),
            Some(shared.metrics.clone()),
            &route.from_business.to_string(),
            &route.whatsapp_user.to_string(),
            &route.rule,
            &sip_call_id,
        );
        Self {
            cdr: std::sync::Mutex::new(cdr),
            bic_allowed,
            business: route.from_business.clone(),
            user: route.whatsapp_user.clone(),
            core: OutboundCall::new(route, settings),
            shared,
            tracker,
            registry,
            side,
            span,
            invite,
            sip_call_id,
            to_tag: random_tag(),
            rx,
            rx_open: true,
            backlog: VecDeque::new(),
            wa: None,
            wa_call_id: None,
            offer_sdp: None,
            wa_answer_sdp: None,
            pbx_answer_sdp: None,
            negotiated: None,
            sockets: None,
            rtp_port: None,
            media: None,
            pending_reinvite: None,
            answered: false,
            bye_sent: false,
            shutting_down: false,
            invite_at_us: CallMilestone::now_unix_us(),
        }
    }

    fn wa_id(&self) -> Option<WaId> {
        WaId::parse(self.user.digits()).ok()
    }

    async fn run(mut self) {
        self.shared
            .outbound_live
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let started = SystemClock::now();
        self.milestone_at(
            MilestoneKind::PbxInvite {
                customer: self.user.to_string(),
            },
            self.invite_at_us,
        );
        let first = match self.local_checks().await {
            Ok(()) => OutboundInput::PbxInvite,
            Err(f) => OutboundInput::Refused(f),
        };
        self.feed(first).await;
        // Bounded by the core: every state has a way out (ring timer, Graph request
        // timeouts, Meta's terminate webhook).
        while !self.core.is_terminated() {
            let wake = match self.backlog.pop_front() {
                Some(cmd) => Wake::Cmd(Some(cmd)),
                None => self.wait().await,
            };
            self.on_wake(wake).await;
        }
        self.stop_media().await;
        let outcome = match self.core.end() {
            _ if self.answered => CallOutcome::Connected,
            Some(end) if end.counts_as_unanswered() => CallOutcome::Unanswered,
            _ => CallOutcome::Other,
        };
        lock(&self.tracker).record_call(
            &self.business,
            &self.user,
            outcome,
            SystemClock::timestamp(),
        );
        let reason = if self.shutting_down {
            "gateway shutdown".to_owned()
        } else {
            end_reason(self.core.end())
        };
        let done = self
            .cdr_lock()
            .complete_outbound(self.core.end(), self.shutting_down, &reason);
        if let Some((writer, record)) = done {
            writer.finish(record).await;
        }
        self.registry.remove(&self.sip_call_id);
        // before Ended is published, as for inbound calls
        self.shared
            .outbound_live
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let talk_time = self
            .answered
            .then(|| SystemClock::now().saturating_duration_since(started));
        self.milestone(MilestoneKind::Ended { reason, talk_time });
    }

    /// Checks made before anything goes to Meta (§7.2, §3.6, consent guard).
    async fn local_checks(&mut self) -> Result<(), OutboundFailure> {
        // `business_initiated_calls` defaults to false for +1, +20, +84, +234 numbers
        // (§7.2); the operator may override it for a number Meta allows
        if !self.bic_allowed {
            return Err(OutboundFailure::CountryBlocked);
        }
        let now = SystemClock::timestamp();
        let permission = lock(&self.tracker).permission(&self.business, &self.user, now);
        if permission == Permission::Unknown
            && let Some(wa) = self.wa_id()
        {
            let started = SystemClock::now();
            let queried = self
                .side
                .client()
                .call_permissions(self.side.phone_number_id(), &wa)
                .await;
            graph_done(
                &self.shared,
                "call_permissions",
                started,
                queried.as_ref().err(),
            );
            match queried {
                Ok(p) => {
                    let permission = match p.status {
                        PermissionStatus::Permanent => Permission::Permanent,
                        PermissionStatus::Temporary => Permission::Temporary {
                            expires: p
                                .expiration
                                .and_then(|s| i64::try_from(s).ok())
                                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                                .unwrap_or_else(|| {
                                    now.checked_add(jiff::SignedDuration::from_hours(168))
                                        .unwrap_or(now)
                                }),
                        },
                        PermissionStatus::NoPermission => Permission::None,
                        _ => Permission::Unknown,
                    };
                    info!(?permission, "call permission queried");
                    lock(&self.tracker).handle_query(&self.business, &self.user, permission);
                }
                // Meta decides on `connect` then (138006 maps to 403 as well)
                Err(e) => warn!(error = %e, "call_permissions query failed"),
            }
        }
        lock(&self.tracker).check_call(&self.business, &self.user, SystemClock::timestamp())
    }

    async fn wait(&mut self) -> Wake {
        let deadline = self.core.poll_timeout();
        let rx_open = self.rx_open;
        let rx = &mut self.rx;
        let wa = &mut self.wa;
        let (wa_out, relay) = match &mut self.media {
            Some(m) => (Some(&mut m.wa_out), Some(&mut m.events)),
            None => (None, None),
        };
        tokio::select! {
            c = rx.recv(), if rx_open => Wake::Cmd(c),
            e = wa_next(wa) => Wake::Wa(e),
            p = recv_opt(wa_out) => Wake::ToWa(p),
            e = recv_opt(relay) => Wake::Relay(e),
            () = sleep_opt(deadline) => Wake::Timer,
        }
    }

    async fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Cmd(None) => self.rx_open = false,
            Wake::Cmd(Some(OutCmd::Side(ev))) => self.on_side(ev).await,
            Wake::Cmd(Some(OutCmd::Sip(req))) => self.on_request(*req).await,
            Wake::Cmd(Some(OutCmd::Cancelled)) => self.feed(OutboundInput::PbxCancel).await,
            Wake::Cmd(Some(OutCmd::Shutdown)) => {
                self.shutting_down = true;
                if self.answered {
                    self.feed(OutboundInput::MediaFailed).await;
                } else {
                    self.feed(OutboundInput::PbxCancel).await;
                }
            }
            Wake::Wa(Some(ev)) => self.on_wa(ev).await,
            Wake::Wa(None) => {
                self.wa = None;
                self.feed(OutboundInput::MediaFailed).await;
            }
            Wake::ToWa(Some(p)) => super::call::forward_to_wa(self.wa.as_ref(), p),
            Wake::Relay(Some(ev)) => self.on_relay(ev).await,
            Wake::ToWa(None) | Wake::Relay(None) => {
                if let Some(m) = self.media.take() {
                    super::call::reap_media_task(m.handle).await;
                }
                self.feed(OutboundInput::MediaFailed).await;
            }
            Wake::Timer => {
                self.core.handle_timeout(SystemClock::now());
                self.drain().await;
            }
        }
    }

    async fn on_side(&mut self, ev: SideEvent) {
        let Some(id) = WaCallId::new(ev.call_id().as_str()) else {
            return;
        };
        let input = match ev {
            SideEvent::Answered { answer_sdp, .. } => {
                self.wa_answer_sdp = Some(answer_sdp);
                OutboundInput::WaAnswer(id)
            }
            SideEvent::Progress { status, .. } => {
                let s = match status {
                    CallStatusKind::Ringing => WaCallStatus::Ringing,
                    CallStatusKind::Accepted => {
                        self.milestone(MilestoneKind::UserAccepted);
                        WaCallStatus::Accepted
                    }
                    CallStatusKind::Rejected => WaCallStatus::Rejected,
                    other => {
                        debug!(?other, "unknown call status ignored");
                        return;
                    }
                };
                OutboundInput::WaStatus(id, s)
            }
            SideEvent::Ended { errors, .. } => OutboundInput::WaTerminated {
                error: errors
                    .first()
                    .and_then(|e| u32::try_from(e.code.code()).ok()),
            },
            _ => return,
        };
        self.feed(input).await;
    }

    async fn on_wa(&mut self, ev: WaLegEvent) {
        match ev {
            WaLegEvent::Rtp(p) => {
                if let Some(m) = &self.media {
                    // (counted in the call's MediaPath as wa_to_pbx_queue_full)
                    m.handle.send_wa_packet(p);
                }
            }
            WaLegEvent::Connected => self.milestone(MilestoneKind::MediaConnected),
            WaLegEvent::Disconnected => warn!("whatsapp leg lost ICE connectivity"),
            WaLegEvent::Closed => {
                // the user hung up: Meta's terminate webhook ends the call
                debug!("whatsapp leg closed; waiting for the terminate webhook");
                self.wa = None;
            }
            WaLegEvent::Failed { reason } => {
                warn!(%reason, "whatsapp leg failed");
                self.wa = None;
                self.feed(OutboundInput::MediaFailed).await;
            }
            other => debug!(?other, "whatsapp leg event"),
        }
    }

    async fn on_relay(&mut self, ev: RelayEvent) {
        match ev {
            RelayEvent::DtmfDigit { from, digit, .. } => self.milestone(MilestoneKind::Dtmf {
                digit,
                from_whatsapp: from == Leg::Wa,
            }),
            RelayEvent::MediaTimeout { leg, silent_for } => {
                warn!(?leg, ?silent_for, "media timeout");
                self.feed(OutboundInput::MediaFailed).await;
            }
            other => debug!(?other, "relay event"),
        }
    }

    async fn on_request(&mut self, req: IncomingRequest) {
        match req.request.method.clone() {
            Method::Bye => {
                self.respond_plain(&req, StatusCode::OK).await;
                if let Some(key) = req.dialog.clone() {
                    let _ = self.shared.sip.forget_dialog(key).await;
                }
                self.bye_sent = true; // the dialog is over: no BYE from us
                self.feed(OutboundInput::PbxBye).await;
            }
            Method::Invite | Method::Update => {
                self.pending_reinvite = Some(req);
                self.feed(OutboundInput::PbxReInvite).await;
                if let Some(req) = self.pending_reinvite.take() {
                    self.respond_plain(
                        &req,
                        StatusCode::new(491).unwrap_or(StatusCode::SERVER_INTERNAL_ERROR),
                    )
                    .await;
                }
            }
            Method::Info => {
                let ctype = req.request.headers.get("Content-Type").unwrap_or("");
                let body = std::str::from_utf8(&req.request.body).unwrap_or("");
                match info_dtmf(ctype, body) {
                    Some((digit, duration)) => {
                        if let Some(m) = &self.media {
                            let _ = m
                                .handle
                                .commands
                                .send(MediaCommand::SendDtmf {
                                    to: Leg::Wa,
                                    digit,
                                    duration,
                                })
                                .await;
                            self.milestone(MilestoneKind::Dtmf {
                                digit,
                                from_whatsapp: false,
                            });
                        }
                        self.respond_plain(&req, StatusCode::OK).await;
                    }
                    // an INFO package we do not know: 200 keeps the dialog (RFC 6086 §4.2.2
                    // would want 469 for a known Info-Package; legacy INFO has none)
                    None => self.respond_plain(&req, StatusCode::OK).await,
                }
            }
            Method::Ack | Method::Cancel => {}
            _ => self.respond_plain(&req, StatusCode::OK).await,
        }
    }

    async fn feed(&mut self, input: OutboundInput) {
        self.core.handle(input, SystemClock::now());
        self.drain().await;
    }

    async fn drain(&mut self) {
        // Bounded: the core moves through a finite state graph; each action runs once.
        for _ in 0..256 {
            let Some(action) = self.core.poll_action() else {
                return;
            };
            self.execute(action).await;
        }
        warn!("outbound call produced more than 256 actions in one turn");
    }

    async fn execute(&mut self, action: OutboundAction) {
        match action {
            OutboundAction::StartMedia => self.start_media().await,
            OutboundAction::SendGraph(GraphAction::Connect) => self.connect().await,
            OutboundAction::SendGraph(action) => self.send_graph(action).await,
            OutboundAction::ApplyWaAnswer => {
                let ok = match (&self.wa, self.wa_answer_sdp.clone()) {
                    (Some(wa), Some(sdp)) => match wa.accept_answer(sdp).await {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(error = %e, "meta's sdp answer unusable");
                            false
                        }
                    },
                    _ => false,
                };
                if !ok {
                    self.core
                        .handle(OutboundInput::MediaFailed, SystemClock::now());
                }
            }
            OutboundAction::SendRinging { early_media } => {
                if early_media {
                    debug!("generated ringback not implemented; sending 180");
                }
                self.milestone(MilestoneKind::Provisional { status: 180 });
                let resp = self
                    .invite
                    .request
                    .response(StatusCode::RINGING, Some(&self.to_tag));
                self.send_response(resp).await;
            }
            OutboundAction::RespondPbx(reply) => self.respond_pbx(reply).await,
            OutboundAction::SendPermissionRequest => self.request_permission(),
            OutboundAction::AnswerReInvite => {
                if let Some(req) = self.pending_reinvite.take() {
                    let mut resp = pbx::response(&req.request, StatusCode::OK);
                    self.add_contact(&mut resp);
                    if let Some(sdp) = &self.pbx_answer_sdp
                        && !req.request.body.is_empty()
                    {
                        resp.set_body("application/sdp", sdp.clone());
                    }
                    if let Err(e) = self.shared.sip.respond(req.id, resp).await {
                        debug!(error = %e, "response not sent");
                    }
                }
            }
            OutboundAction::OpenMediaGate => {
                if let Some(m) = &self.media {
                    let _ = m.handle.commands.send(MediaCommand::OpenWaGate).await;
                }
            }
            OutboundAction::SendBye => self.send_bye().await,
            OutboundAction::StopMedia => self.stop_media().await,
        }
    }

    // ---- WhatsApp leg -----------------------------------------------------------------

    async fn start_media(&mut self) {
        let now = SystemClock::now();
        if let Err(e) = self.prepare_pbx_answer().await {
            warn!(error = %e, "pbx offer unusable");
            self.core.handle(OutboundInput::MediaFailed, now);
            return;
        }
        match self.shared.webrtc.offer().await {
            Ok((handle, sdp)) => {
                self.wa = Some(handle);
                self.offer_sdp = Some(sdp);
                self.core
                    .handle(OutboundInput::MediaReady, SystemClock::now());
            }
            Err(e) => {
                warn!(error = %e, "whatsapp offer not built");
                self.core
                    .handle(OutboundInput::MediaFailed, SystemClock::now());
            }
        }
    }

    async fn connect(&mut self) {
        let (Some(wa), Some(offer)) = (self.wa_id(), self.offer_sdp.clone()) else {
            self.core.handle(
                OutboundInput::ConnectResult(Err(OutboundFailure::MediaFailed)),
                SystemClock::now(),
            );
            return;
        };
        self.milestone(MilestoneKind::ConnectSent);
        let started = SystemClock::now();
        let connected = self.side.connect(&wa, &offer, None).await;
        graph_done(&self.shared, "connect", started, connected.as_ref().err());
        let result = match connected {
            Ok(id) => {
                self.span.record("wa_call_id", id.as_str());
                info!("graph connect sent");
                self.cdr_lock().set_wa_call_id(id.as_str());
                let parked = self.registry.bind_wa(id.as_str(), &self.sip_call_id);
                self.backlog.extend(parked.into_iter().map(OutCmd::Side));
                let ours = WaCallId::new(id.as_str());
                self.wa_call_id = Some(id);
                match ours {
                    Some(ours) => Ok(ours),
                    None => Err(OutboundFailure::MediaFailed),
                }
            }
            Err(e) => {
                warn!(error = %e, "graph connect failed");
                self.milestone(MilestoneKind::GraphFailed { action: "connect" });
                let code = e.meta_code().and_then(|c| u32::try_from(c.code()).ok());
                if code == Some(138_006) {
                    lock(&self.tracker).handle_no_permission(&self.business, &self.user);
                }
                Err(OutboundFailure::Graph {
                    code,
                    http_status: e.http_status().unwrap_or(0),
                })
            }
        };
        self.core
            .handle(OutboundInput::ConnectResult(result), SystemClock::now());
    }

    async fn terminate(&self, id: &whatsip_meta::WaCallId) -> Result<(), whatsip_meta::GraphError> {
        let started = SystemClock::now();
        let r = self.side.terminate(id).await;
        graph_done(&self.shared, "terminate", started, r.as_ref().err());
        r
    }

    async fn send_graph(&mut self, action: GraphAction) {
        let ok = match (&self.wa_call_id, action) {
            (Some(id), GraphAction::Terminate) => match self.terminate(id).await {
                Ok(()) => {
                    info!("graph terminate sent");
                    true
                }
                Err(e) => {
                    warn!(error = %e, "graph terminate failed");
                    false
                }
            },
            _ => false,
        };
        self.core.handle(
            OutboundInput::GraphResult { action, ok },
            SystemClock::now(),
        );
    }

    /// Sends `call_permission_request` in the background (the PBX's 403 must not wait
    /// for it). The request is counted against the limits before it is sent, under one
    /// lock, so concurrent refused calls to the same user cannot both send one; a failed
    /// send still counts (erring toward fewer requests, as Meta's limits do).
    fn request_permission(&mut self) {
        let now = SystemClock::timestamp();
        let Some(wa) = self.wa_id() else {
            return;
        };
        {
            let mut t = lock(&self.tracker);
            if let Err(why) = t.may_request(&self.business, &self.user, now) {
                info!(%why, "call permission request not sent");
                return;
            }
            t.record_request(&self.business, &self.user, now);
        }
        let text = self.shared.live().outbound.permission_request_text.clone();
        let side = self.side.clone();
        let shared = self.shared.clone();
        tokio::spawn(
            async move {
                let started = SystemClock::now();
                let sent = side
                    .client()
                    .send_call_permission_request(side.phone_number_id(), &wa, text.as_deref())
                    .await;
                graph_done(
                    &shared,
                    "call_permission_request",
                    started,
                    sent.as_ref().err(),
                );
                match sent {
                    Ok(_) => info!("call permission request sent"),
                    Err(e) => warn!(error = %e, "call permission request failed"),
                }
            }
            .instrument(self.span.clone()),
        );
    }

    // ---- PBX leg ----------------------------------------------------------------------

    fn sdp_config(&self) -> PbxSdpConfig {
        PbxSdpConfig {
            codecs: self
                .shared
                .config
                .pbx
                .codecs
                .iter()
                .map(|c| match c {
                    Codec::Pcmu => MediaCodec::Pcmu,
                    Codec::Pcma => MediaCodec::Pcma,
                    Codec::G722 => MediaCodec::G722,
                    Codec::Opus => MediaCodec::Opus,
                })
                .collect(),
            ptime_ms: u32::try_from(self.shared.config.media.ptime.as_millis()).unwrap_or(20),
            offer_rtcp_mux: false,
            ..PbxSdpConfig::default()
        }
    }

    /// Binds the PBX-leg RTP pair and answers the PBX's SDP offer (sent with the 200 OK).
    async fn prepare_pbx_answer(&mut self) -> Result<(), String> {
        let offer = std::str::from_utf8(&self.invite.request.body)
            .map_err(|_| "sdp is not utf-8".to_owned())?
            .to_owned();
        if offer.trim().is_empty() {
            return Err("INVITE without SDP offer (late offer not supported)".into());
        }
        let mut bound = None;
        for _ in 0..16 {
            let port = {
                let mut ports = self.shared.ports.lock().unwrap_or_else(|e| e.into_inner());
                ports.allocate().map_err(|e| e.to_string())?
            };
            match PbxSockets::bind_at(self.shared.config.media.bind, port, false).await {
                Ok(s) => {
                    bound = Some((port, s));
                    break;
                }
                Err(e) => {
                    debug!(port, error = %e, "rtp port pair busy");
                    self.release_port(port);
                }
            }
        }
        let (port, sockets) = bound.ok_or_else(|| "no rtp port pair free".to_owned())?;
        self.rtp_port = Some(port);
        self.sockets = Some(sockets);
        let local = LocalMedia {
            addr: self.shared.media_ip,
            rtp_port: port,
            session_id: rand::random::<u32>().into(),
            session_version: 1,
            direction: MediaDirection::SendRecv,
            crypto: None,
        };
        let (sdp, negotiated) =
            answer_offer(&offer, &local, &self.sdp_config()).map_err(|e| e.to_string())?;
        self.pbx_answer_sdp = Some(sdp);
        self.negotiated = Some(negotiated);
        Ok(())
    }

    fn start_relay(&mut self) -> Result<(), String> {
        let negotiated = self
            .negotiated
            .clone()
            .ok_or_else(|| "no negotiated media".to_owned())?;
        let sockets = self
            .sockets
            .take()
            .ok_or_else(|| "rtp sockets already in use".to_owned())?;
        let (handle, wa_out, events) = super::call::start_pbx_leg(
            &self.shared,
            &negotiated,
            sockets,
            &self.span,
            self.wa.as_ref(),
        )?;
        self.milestone(MilestoneKind::Answered {
            codec: negotiated.codec.encoding_name().to_owned(),
        });
        self.media = Some(PbxMedia {
            handle,
            wa_out,
            events,
        });
        Ok(())
    }

    async fn respond_pbx(&mut self, reply: SipReply) {
        if reply.status.is_success() {
            if let Err(e) = self.start_relay() {
                warn!(error = %e, "pbx media not started");
                let fail = crate::call::outbound_failure_reply(
                    &OutboundFailure::MediaFailed,
                    self.shared.live().outbound.rejected_status,
                );
                let resp = failure_response(&self.invite.request, &fail, &self.to_tag);
                self.send_response(resp).await;
                self.core
                    .handle(OutboundInput::MediaFailed, SystemClock::now());
                return;
            }
            self.answered = true;
            self.milestone(MilestoneKind::Accepted);
            let mut resp = self
                .invite
                .request
                .response(StatusCode::OK, Some(&self.to_tag));
            self.add_contact(&mut resp);
            if let Some(sdp) = &self.pbx_answer_sdp {
                resp.set_body("application/sdp", sdp.clone());
            }
            self.send_response(resp).await;
        } else {
            info!(status = reply.status.code(), reason = %reply.reason, warning = ?reply.warning, "business-initiated call failed");
            self.milestone(MilestoneKind::Refused {
                reason: format!("{} {}", reply.status.code(), reply.reason),
            });
            self.cdr_lock().final_sip_status(reply.status.code());
            let resp = failure_response(&self.invite.request, &reply, &self.to_tag);
            self.send_response(resp).await;
        }
    }

    fn add_contact(&self, resp: &mut whatsip_sip::Response) {
        if let Some(local) = self
            .shared
            .sip
            .local_addr(self.invite.kind, self.invite.source)
        {
            resp.headers
                .push(HeaderName::CONTACT, pbx::contact(local, self.invite.kind));
        }
    }

    async fn send_response(&self, resp: whatsip_sip::Response) {
        if let Err(e) = self.shared.sip.respond(self.invite.id, resp).await {
            // e.g. the endpoint already answered a CANCEL with 487
            debug!(error = %e, "response to the INVITE not sent");
        }
    }

    async fn respond_plain(&self, req: &IncomingRequest, status: StatusCode) {
        let resp = pbx::response(&req.request, status);
        if let Err(e) = self.shared.sip.respond(req.id, resp).await {
            debug!(error = %e, "response not sent");
        }
    }

    /// BYE in the dialog our 2xx created (we are the UAS: the tags swap).
    async fn send_bye(&mut self) {
        if self.bye_sent || !self.answered {
            return;
        }
        self.bye_sent = true;
        let inv = &self.invite.request;
        let target_uri = match inv.headers.contacts() {
            Some(whatsip_sip::Contacts::Addresses(a)) if !a.is_empty() => a[0].uri.clone(),
            _ => inv.uri.clone(),
        };
        let mut bye = Request::new(Method::Bye, target_uri);
        for rr in inv.headers.raw_list("Record-Route") {
            bye.headers.push(HeaderName::ROUTE, rr);
        }
        let to = inv.headers.get("To").unwrap_or("").to_owned();
        bye.headers
            .push(HeaderName::FROM, format!("{to};tag={}", self.to_tag));
        bye.headers.push(
            HeaderName::TO,
            inv.headers.get("From").unwrap_or("").to_owned(),
        );
        bye.headers
            .push(HeaderName::CALL_ID, self.sip_call_id.clone());
        bye.headers.push(HeaderName::CSEQ, "1 BYE");
        let target = Target::new(self.invite.kind, self.invite.source);
        let sip = self.shared.sip.clone();
        let dialog = inv.from_tag().map(|remote| whatsip_sip::DialogId {
            call_id: whatsip_sip::CallId::new(self.sip_call_id.clone()),
            local_tag: self.to_tag.clone(),
            remote_tag: remote,
        });
        tokio::spawn(
            async move {
                match sip.send_request(bye, target).await {
                    Ok(mut h) => match h.final_response().await {
                        Ok(r) => debug!(status = r.status.as_u16(), "bye answered"),
                        Err(e) => debug!(error = %e, "bye not answered"),
                    },
                    Err(e) => warn!(error = %e, "bye could not be sent"),
                }
                if let Some(key) = dialog {
                    let _ = sip.forget_dialog(key).await;
                }
            }
            .instrument(self.span.clone()),
        );
    }

    async fn stop_media(&mut self) {
        if let Some(mut m) = self.media.take() {
            let _ = m.handle.commands.send(MediaCommand::Stop).await;
            let joined = tokio::time::timeout(Duration::from_secs(5), m.handle.join).await;
            for (digit, from_whatsapp) in super::call::late_dtmf(&mut m.events) {
                self.milestone(MilestoneKind::Dtmf {
                    digit,
                    from_whatsapp,
                });
            }
            match joined {
                Ok(Ok(stats)) => self.cdr_lock().media_stats(&stats),
                Ok(Err(e)) => warn!(error = %e, "pbx media task failed"),
                Err(_) => warn!("pbx media task did not stop in time"),
            }
        }
        if let Some(wa) = self.wa.take() {
            wa.hang_up().await;
        }
        self.sockets = None;
        if let Some(port) = self.rtp_port.take() {
            self.release_port(port);
        }
    }

    fn release_port(&self, port: u16) {
        self.shared
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(port);
    }

    fn cdr_lock(&self) -> std::sync::MutexGuard<'_, super::ops_cdr::CallCdr> {
        self.cdr.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn milestone(&self, kind: MilestoneKind) {
        self.milestone_at(kind, CallMilestone::now_unix_us());
    }

    /// A milestone that happened at `at_unix_us` (its log line carries the stamp as `at_us`).
    fn milestone_at(&self, kind: MilestoneKind, at_unix_us: i64) {
        info!(
            milestone = %crate::ops::redact::milestone(&kind, self.shared.live().logging.redact_phone_numbers),
            at_us = at_unix_us,
            "call milestone"
        );
        self.cdr_lock().observe(&kind, Some(&self.sip_call_id));
        let _ = self.shared.milestones.send(CallMilestone {
            at_unix_us,
            wa_call_id: self
                .wa_call_id
                .as_ref()
                .map(|i| i.as_str().to_owned())
                .unwrap_or_default(),
            sip_call_id: Some(self.sip_call_id.clone()),
            kind,
        });
    }
}

/// A DTMF digit from a SIP INFO body: `application/dtmf-relay` (`Signal=5`,
/// `Duration=160`) or `application/dtmf` (the digit alone). Duration defaults to 160 ms
/// and is clamped to 40..=5000 ms.
fn info_dtmf(content_type: &str, body: &str) -> Option<(char, Duration)> {
    let ctype = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let valid = |c: char| matches!(c.to_ascii_uppercase(), '0'..='9' | '*' | '#' | 'A'..='D');
    let (digit, ms) = match ctype.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut ms = None;
            for line in body.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = v.trim().chars().next(),
                    "duration" => ms = v.trim().parse::<u64>().ok(),
                    _ => {}
                }
            }
            (digit?, ms)
        }
        "application/dtmf" => (body.trim().chars().next()?, None),
        _ => return None,
    };
    valid(digit).then(|| {
        (
            digit.to_ascii_uppercase(),
            Duration::from_millis(ms.unwrap_or(160).clamp(40, 5000)),
        )
    })
}

fn end_reason(end: Option<&OutboundEnd>) -> String {
    match end {
        Some(OutboundEnd::WaHangup) => "whatsapp hangup".into(),
        Some(OutboundEnd::PbxHangup) => "pbx hangup".into(),
        Some(OutboundEnd::PbxCancelled) => "pbx cancelled".into(),
        Some(OutboundEnd::MediaFailed) => "media failed".into(),
        Some(OutboundEnd::Failed(f)) => format!("failed: {f:?}"),
        None => "unknown".into(),
    }
}

async fn wa_next(wa: &mut Option<WaCallHandle>) -> Option<WaLegEvent> {
    match wa {
        Some(w) => w.next_event().await.map(|e| e.event),
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Records a Graph request of a business-initiated call (metrics and `/readyz`).
fn graph_done(
    shared: &Shared,
    action: &str,
    started: Instant,
    error: Option<&whatsip_meta::GraphError>,
) {
    super::ops_admin::graph_request_done(
        shared,
        action,
        SystemClock::now().saturating_duration_since(started),
        error.map(|e| e as &(dyn std::error::Error + 'static)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(id: &str) -> SideEvent {
        SideEvent::Progress {
            call_id: whatsip_meta::WaCallId::parse(id).unwrap(),
            status: CallStatusKind::Ringing,
        }
    }

    #[test]
    fn webhooks_overtaking_the_connect_reply_are_parked_then_handed_over() {
        let reg = OutRegistry::default();
        // no outbound call at all: dropped, never parked
        assert!(matches!(reg.route(progress("wacid.A")), Routed::Taken));
        assert!(reg.lock().parked.is_empty());

        let (tx, mut rx) = mpsc::channel(4);
        reg.lock().by_sip.insert("sip-1".into(), tx);
        assert!(matches!(reg.route(progress("wacid.A")), Routed::Taken));
        let ended = SideEvent::Ended {
            call_id: whatsip_meta::WaCallId::parse("wacid.A").unwrap(),
            status: None,
            duration: None,
            errors: Vec::new(),
        };
        // a terminate for an unknown id belongs to the inbound path
        assert!(matches!(reg.route(ended.clone()), Routed::NotOurs));

        let parked = reg.bind_wa("wacid.A", "sip-1");
        assert_eq!(parked, vec![progress("wacid.A")]);
        assert!(reg.lock().parked.is_empty());
        match reg.route(ended) {
            Routed::Deliver(tx, ev) => {
                tx.try_send(OutCmd::Side(ev)).unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rx.try_recv(),
            Ok(OutCmd::Side(SideEvent::Ended { .. }))
        ));

        reg.remove("sip-1");
        assert!(reg.lock().by_wa.is_empty());
    }

    #[test]
    fn parking_is_bounded() {
        let reg = OutRegistry::default();
        let (tx, _rx) = mpsc::channel(1);
        reg.lock().by_sip.insert("sip-1".into(), tx);
        for i in 0..(MAX_PARKED + 10) {
            let _ = reg.route(progress(&format!("wacid.{i}")));
        }
        for _ in 0..20 {
            let _ = reg.route(progress("wacid.same"));
        }
        let g = reg.lock();
        assert!(g.parked.len() <= MAX_PARKED);
        assert!(g.parked_order.len() <= MAX_PARKED);
        assert_eq!(g.parked["wacid.same"].len(), MAX_PARKED_PER_CALL);
    }

    #[test]
    fn sip_info_dtmf_bodies() {
        assert_eq!(
            info_dtmf("application/dtmf-relay", "Signal=5\r\nDuration=250\r\n"),
            Some(('5', Duration::from_millis(250)))
        );
        assert_eq!(
            info_dtmf("Application/DTMF-Relay", "Signal= #\r\n"),
            Some(('#', Duration::from_millis(160)))
        );
        assert_eq!(
            info_dtmf("application/dtmf", "a"),
            Some(('A', Duration::from_millis(160)))
        );
        assert_eq!(
            info_dtmf("application/dtmf-relay", "Signal=5\nDuration=1"),
            Some(('5', Duration::from_millis(40)))
        );
        assert_eq!(info_dtmf("application/dtmf-relay", "Signal=x"), None);
        assert_eq!(info_dtmf("application/dtmf-relay", "Duration=100"), None);
        assert_eq!(info_dtmf("text/plain", "Signal=5"), None);
    }

    #[test]
    fn dialled_and_asserted_numbers() {
        let mut req = Request::new(
            Method::Invite,
            whatsip_sip::Uri::parse("sip:+4915112345678@127.0.0.1:5060").unwrap(),
        );
        req.headers
            .push(HeaderName::FROM, "<sip:+4930901820@pbx>;tag=a");
        assert_eq!(dialled_number(&req), "+4915112345678");
        assert_eq!(asserted_business(&req).unwrap().as_str(), "+4930901820");
        req.headers
            .push("P-Asserted-Identity", "<sip:4930901821@pbx>");
        assert_eq!(asserted_business(&req).unwrap().as_str(), "+4930901821");
    }
}
