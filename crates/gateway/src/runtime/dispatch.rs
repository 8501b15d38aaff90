//! The dispatcher: turns webhook events and SIP requests into call tasks and commands.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};
use whatsip_meta::WebhookEvent;
use whatsip_meta::rt::GraphSide;
use whatsip_meta::side::{SideEvent, WhatsAppSide};
use whatsip_sip::StatusCode;
use whatsip_sip::endpoint::{EndpointEvent, IncomingRequest};

use super::call::{self, CallCommand, CallSetup, Shared};
use super::clock::SystemClock;
use super::milestone::{CallMilestone, MilestoneKind};
use crate::call::{EndedCalls, WaCaller};
use crate::dialplan::{CallContext, Route};
use crate::types::{Direction, E164, WaCallId};

/// Commands from the [`super::GatewayHandle`].
#[derive(Debug)]
pub(crate) enum Command {
    /// End every call, then report on `done`.
    Shutdown {
        /// Resolved once every call task has finished.
        done: oneshot::Sender<()>,
    },
    /// Stop taking new calls (webhooks get `reject`, INVITEs 503); live calls go on.
    Drain,
    /// How many call tasks are still running.
    LiveTasks {
        /// The answer.
        reply: oneshot::Sender<usize>,
    },
}

pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    ended: EndedCalls,
    tasks: JoinSet<()>,
    accepting: bool,
    outbound: super::outbound::Outbound,
}

impl Dispatcher {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            outbound: super::outbound::Outbound::new(shared.clone()),
            shared,
            ended: EndedCalls::new(Duration::from_secs(300), 100_000),
            tasks: JoinSet::new(),
            accepting: true,
        }
    }

    pub(crate) async fn run(
        mut self,
        mut webhooks: mpsc::Receiver<WebhookEvent>,
        mut sip: mpsc::Receiver<EndpointEvent>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut webhooks_open = true;
        let mut sip_open = true;
        loop {
            tokio::select! {
                ev = webhooks.recv(), if webhooks_open => match ev {
                    Some(ev) => self.on_webhook(ev).await,
                    None => webhooks_open = false,
                },
                ev = sip.recv(), if sip_open => match ev {
                    Some(ev) => self.on_sip(ev).await,
                    None => sip_open = false,
                },
                Some(res) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = res && e.is_panic() {
                        // a bug: the registry entry of the call stays until shutdown
                        warn!(error = %e, "call task panicked");
                    }
                }
                c = commands.recv() => match c {
                    Some(Command::Drain) => {
                        info!("draining: new calls are refused, live calls go on");
                        self.accepting = false;
                        self.shared.health.set_draining();
                    }
                    Some(Command::LiveTasks { reply }) => {
                        let _ = reply.send(self.tasks.len());
                    }
                    Some(Command::Shutdown { done }) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
            }
        }
    }

    async fn shutdown(&mut self) {
        self.accepting = false;
        self.shared.health.set_draining();
        self.outbound.shutdown();
        for tx in self.shared.registry.all() {
            deliver(tx, CallCommand::Shutdown);
        }
        // Bounded: each call ends within its Graph request timeout and BYE transaction.
        let _ = tokio::time::timeout(Duration::from_secs(35), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }

    async fn on_webhook(&mut self, ev: WebhookEvent) {
        if self.outbound.on_webhook(&ev) {
            return;
        }
        let Some(side_event) = SideEvent::from_event(&ev.event) else {
            debug!("management webhook ignored");
            return;
        };
        let now = SystemClock::now();
        self.ended.handle_timeout(now);
        match side_event {
            SideEvent::Offered {
                call_id,
                from,
                to,
                offer_sdp,
                deeplink_payload,
                cta_payload,
                caller_name,
                ..
            } => {
                let Some(id) = WaCallId::new(call_id.as_str()) else {
                    warn!("connect webhook with an empty call id");
                    return;
                };
                if ev.after_terminate {
                    // Meta's terminate overtook this connect: the caller hung up before
                    // whatsip ever saw the call. Nothing goes to the PBX, but the attempt
                    // gets its record.
                    info!(wa_call_id = %id.as_str(), "connect after its terminate: recorded as cancelled");
                    self.ended.record(id.clone(), now);
                    let (cdr, metrics) = (self.shared.cdr.clone(), self.shared.metrics.clone());
                    let (business, customer) = (to.as_str().to_owned(), from.as_str().to_owned());
                    self.tasks.spawn(async move {
                        super::ops_cdr::write_terminated_before_connect(
                            cdr,
                            &metrics,
                            id.as_str(),
                            (&business, &customer),
                            super::ops_cdr::wall_now(),
                        )
                        .await;
                    });
                    return;
                }
                if self.ended.contains(&id, now) {
                    info!(wa_call_id = %id.as_str(), "connect for an ended call ignored");
                    return;
                }
                if self.shared.registry.by_wa(id.as_str()).is_some() {
                    debug!(wa_call_id = %id.as_str(), "duplicate connect ignored");
                    return;
                }
                let pnid = ev
                    .context
                    .phone_number_id
                    .as_ref()
                    .map(|p| p.as_str().to_owned());
                let live = self.shared.live();
                let business = pnid
                    .as_deref()
                    .and_then(|p| {
                        live.business_numbers
                            .iter()
                            .find(|b| b.phone_number_id.as_str() == p)
                    })
                    .or_else(|| {
                        E164::parse(to.as_str())
                            .ok()
                            .and_then(|n| live.business_by_number(&n))
                    })
                    .cloned();
                let Some(business) = business else {
                    warn!(wa_call_id = %id.as_str(), "connect for a business number not configured");
                    return;
                };
                let Some(side) = self
                    .shared
                    .graph_sides()
                    .get(business.phone_number_id.as_str())
                    .cloned()
                else {
                    return;
                };
                let milestone = |kind| {
                    let _ = self.shared.milestones.send(CallMilestone {
                        at_unix_us: CallMilestone::now_unix_us(),
                        wa_call_id: id.as_str().to_owned(),
                        sip_call_id: None,
                        kind,
                    });
                };
                // stamped and logged here, where the gateway sees the webhook: the load
                // harness measures the gateway's own setup time from it
                info!(wa_call_id = %id.as_str(), milestone = %MilestoneKind::OfferReceived,
                    at_us = CallMilestone::now_unix_us(), "call milestone");
                milestone(MilestoneKind::OfferReceived);
                let Ok(number) = E164::parse(from.as_str()) else {
                    warn!(wa_call_id = %id.as_str(), "caller is not an E.164 number; rejecting");
                    self.reject(
                        side,
                        call_id,
                        id,
                        "caller number unusable".into(),
                        (business.number.as_str(), from.as_str()),
                    );
                    return;
                };
                if !self.accepting {
                    self.reject(
                        side,
                        call_id,
                        id,
                        "gateway shutting down".into(),
                        (business.number.as_str(), from.as_str()),
                    );
                    return;
                }
                let ctx = CallContext {
                    direction: Direction::Inbound,
                    business: Some(business.number.clone()),
                    customer: number.as_str().to_owned(),
                    cta_payload: cta_payload.clone(),
                    deeplink_payload: deeplink_payload.clone(),
                    now: SystemClock::timestamp(),
                };
                // the dial plan as of now (SIGHUP swaps it); the call keeps this route
                let route = match self.shared.live_config.snapshot().dialplan.route(&ctx) {
                    Route::Inbound(r) => r,
                    Route::Reject { rule, reason } => {
                        let reason = match rule {
                            Some(rule) => format!("rule `{rule}`: {reason:?}"),
                            None => format!("{reason:?}"),
                        };
                        self.reject(
                            side,
                            call_id,
                            id,
                            reason,
                            (business.number.as_str(), from.as_str()),
                        );
                        return;
                    }
                    Route::Outbound(_) => {
                        self.reject(
                            side,
                            call_id,
                            id,
                            "rule is outbound-only".into(),
                            (business.number.as_str(), from.as_str()),
                        );
                        return;
                    }
                };
                milestone(MilestoneKind::Routed {
                    rule: route.rule.clone(),
                    target: route.primary.uri.clone(),
                });
                let setup = CallSetup {
                    caller: WaCaller {
                        call_id: id,
                        number,
                        name: caller_name,
                        cta_payload,
                        deeplink_payload,
                    },
                    wa_call_id: call_id,
                    offer_sdp,
                    route,
                    business_number: business.number.as_str().to_owned(),
                    side,
                };
                if let Some(task) = call::start(self.shared.clone(), setup) {
                    self.tasks.spawn(task);
                }
            }
            SideEvent::Ended { call_id, .. } => {
                match self.shared.registry.by_wa(call_id.as_str()) {
                    Some(tx) => deliver(tx, CallCommand::WaTerminated),
                    None => {
                        if let Some(id) = WaCallId::new(call_id.as_str()) {
                            debug!(wa_call_id = %id.as_str(), "terminate for no live call; remembered");
                            self.ended.record(id, now);
                        }
                    }
                }
            }
            other => {
                debug!(call_id = %other.call_id().as_str(), "call event ignored (outbound calls)")
            }
        }
    }

    /// Rejects a call that never got a task (dial plan refusal, shutdown).
    fn reject(
        &mut self,
        side: GraphSide,
        call_id: whatsip_meta::WaCallId,
        id: WaCallId,
        reason: String,
        (business, customer): (&str, &str),
    ) {
        info!(wa_call_id = %id.as_str(), %reason, "call refused");
        let offer_at = super::ops_cdr::wall_now();
        let (business, customer) = (business.to_owned(), customer.to_owned());
        let (cdr, metrics) = (self.shared.cdr.clone(), self.shared.metrics.clone());
        let _ = self.shared.milestones.send(CallMilestone {
            at_unix_us: CallMilestone::now_unix_us(),
            wa_call_id: id.as_str().to_owned(),
            sip_call_id: None,
            kind: MilestoneKind::Refused {
                reason: reason.clone(),
            },
        });
        self.ended.record(id.clone(), SystemClock::now());
        let milestones = self.shared.milestones.clone();
        let shared = self.shared.clone();
        let span = info_span!("call", wa_call_id = %id.as_str(), sip_call_id = tracing::field::Empty, dir = "inbound");
        self.tasks.spawn(
            async move {
                let started = SystemClock::now();
                let rejected = side.reject(&call_id).await;
                let error = rejected.as_ref().err();
                super::ops_admin::graph_request_done(
                    &shared,
                    "reject",
                    started.elapsed(),
                    error.map(|e| e as &(dyn std::error::Error + 'static)),
                );
                if let Some(e) = error {
                    warn!(error = %e, "graph reject failed");
                }
                super::ops_cdr::write_refused(
                    cdr,
                    &metrics,
                    id.as_str(),
                    &business,
                    &customer,
                    offer_at,
                    &reason,
                )
                .await;
                let _ = milestones.send(CallMilestone {
                    at_unix_us: CallMilestone::now_unix_us(),
                    wa_call_id: id.as_str().to_owned(),
                    sip_call_id: None,
                    kind: MilestoneKind::Ended {
                        reason,
                        talk_time: None,
                    },
                });
            }
            .instrument(span),
        );
    }

    async fn on_sip(&mut self, ev: EndpointEvent) {
        match ev {
            EndpointEvent::Request(req) => self.on_request(req).await,
            EndpointEvent::AckTimeout { id, status } => {
                debug!(%id, status, "no ack for our response");
            }
            EndpointEvent::Cancelled { id, .. } => self.outbound.on_cancelled(id),
            EndpointEvent::PeerStatus { target, up } => {
                info!(pbx = %target.addr, up, "pbx reachability changed");
                self.shared.health.set_pbx_up(up);
            }
            _ => {}
        }
    }

    async fn on_request(&mut self, req: IncomingRequest) {
        let Some(req) = self.outbound.on_request(
            req,
            self.accepting,
            &self.shared.graph_sides(),
            &mut self.tasks,
        ) else {
            return;
        };
        let call_id = req.request.call_id();
        let call = call_id
            .as_ref()
            .and_then(|c| self.shared.registry.by_sip(c.as_str()));
        match (call, req.dialog.is_some()) {
            (Some(tx), true) => match tx.try_send(CallCommand::Sip(Box::new(req))) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(CallCommand::Sip(req))) => {
                    // the call is busy (a Graph request in flight) and its queue is full:
                    // the PBX retries the request later (RFC 3261 §21.5.4)
                    warn!("call queue full; answering 500");
                    self.answer(&req, 500).await;
                }
                Err(_) => debug!("call ended before its request was handled"),
            },
            (_, true) => {
                self.answer(&req, 481).await;
            }
            (_, false) => {
                // out-of-dialog INVITEs were taken by `outbound`; anything else is refused
                let code = if req.request.method == whatsip_sip::Method::Invite {
                    if self.accepting { 501 } else { 503 }
                } else {
                    405
                };
                self.answer(&req, code).await;
            }
        }
    }

    async fn answer(&self, req: &IncomingRequest, code: u16) {
        let status = StatusCode::new(code).unwrap_or(StatusCode::SERVER_INTERNAL_ERROR);
        let tag = whatsip_sip::Tag::new(format!("{:08x}", rand::random::<u32>()));
        let resp = req.request.response(status, Some(&tag));
        if let Err(e) = self.shared.sip.respond(req.id, resp).await {
            debug!(error = %e, "response not sent");
        }
    }
}

/// Hands a command that must not be lost to a call task without making the dispatcher
/// wait on it: queued at once when there is room, else by a short-lived task (bounded by
/// the call task draining its queue or ending).
fn deliver(tx: mpsc::Sender<CallCommand>, cmd: CallCommand) {
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
