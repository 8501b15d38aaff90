//! The task that owns the [`MetaCore`] and the users' media peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::core::{
    CoreEvent, GraphRequest, GraphResponse, MetaCore, PermissionGrant, PermissionReply,
    PermissionStatus, UserCall, UserProfile, Webhook,
};
use crate::driver::clock::SystemClock;
use crate::driver::recorder::{Recorder, SimEvent};
use crate::error::SimError;
use crate::ids::{PhoneNumberId, WaCallId, WaId};
use crate::peer::{MediaPeer, MediaPeerFactory, PeerContext, PeerError};

/// Longest wait for a media peer operation before the call is failed.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

type Reply<T> = oneshot::Sender<Result<T, SimError>>;

/// Commands to the engine task.
pub(crate) enum Command {
    Graph(GraphRequest, oneshot::Sender<GraphResponse>),
    UserCalls(UserCall, Reply<WaCallId>),
    UserHangsUp(WaCallId, Reply<()>),
    UserAnswers(WaCallId, Reply<()>),
    UserRejects(WaCallId, Reply<()>),
    UserPresses(WaCallId, String, Reply<()>),
    BusinessMedia(WaCallId),
    SetPermission(PhoneNumberId, WaId, PermissionGrant, Reply<()>),
    ReplyPermission(PhoneNumberId, WaId, PermissionReply, Reply<()>),
    Permission(PhoneNumberId, WaId, oneshot::Sender<PermissionStatus>),
    SetUser(UserProfile, Reply<()>),
    PeerReport(WaCallId, oneshot::Sender<Option<crate::peer::MediaReport>>),
}

struct PeerEntry {
    peer: Box<dyn MediaPeer>,
    last_packets: u64,
}

pub(crate) struct Engine {
    pub(crate) core: MetaCore,
    pub(crate) clock: SystemClock,
    pub(crate) peers_factory: Arc<dyn MediaPeerFactory>,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) webhooks: mpsc::Sender<Webhook>,
    pub(crate) media_poll: Duration,
    peers: HashMap<WaCallId, PeerEntry>,
}

impl Engine {
    pub(crate) fn new(
        core: MetaCore,
        clock: SystemClock,
        peers_factory: Arc<dyn MediaPeerFactory>,
        recorder: Arc<Recorder>,
        webhooks: mpsc::Sender<Webhook>,
        media_poll: Duration,
    ) -> Self {
        Self {
            core,
            clock,
            peers_factory,
            recorder,
            webhooks,
            media_poll,
            peers: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut media_tick = tokio::time::interval(self.media_poll.max(Duration::from_millis(50)));
        media_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.core.poll_timeout();
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd).await;
                }
                () = sleep_until_std(deadline) => {
                    let (now, wall) = self.clock.now();
                    self.core.handle_timeout(now, wall);
                }
                _ = media_tick.tick() => self.poll_media(),
            }
            self.drain().await;
        }
        for (_, mut e) in self.peers.drain() {
            e.peer.stop().await;
        }
    }

    async fn handle(&mut self, cmd: Command) {
        let (now, wall) = self.clock.now();
        match cmd {
            Command::Graph(req, reply) => {
                let resp = self.core.handle_graph(&req, now, wall);
                // Recorded here, before the effects of this request (call state changes)
                // become visible: whoever sees a call end also sees the request that ended it.
                self.recorder.record_graph(
                    &req.method,
                    &req.path,
                    &req.query,
                    req.authorization.as_deref(),
                    &req.body,
                    &resp,
                );
                let _ = reply.send(resp);
            }
            Command::UserCalls(call, reply) => {
                let _ = reply.send(self.user_calls(call).await);
            }
            Command::UserHangsUp(id, reply) => {
                let _ = reply.send(self.core.user_hangs_up(&id, now, wall));
            }
            Command::UserAnswers(id, reply) => {
                let _ = reply.send(self.core.user_answers(&id, now, wall));
            }
            Command::UserRejects(id, reply) => {
                let _ = reply.send(self.core.user_rejects(&id, now, wall));
            }
            Command::UserPresses(id, digits, reply) => {
                let _ = reply.send(self.core.user_presses(&id, &digits));
            }
            Command::BusinessMedia(id) => self.core.handle_business_media(&id, now, wall),
            Command::SetPermission(p, u, g, reply) => {
                if self
                    .core
                    .config()
                    .numbers
                    .iter()
                    .all(|n| n.phone_number_id != p)
                {
                    let _ = reply.send(Err(SimError::UnknownNumber(p.to_string())));
                } else {
                    self.core.set_permission(&p, &u, g, wall);
                    let _ = reply.send(Ok(()));
                }
            }
            Command::ReplyPermission(p, u, r, reply) => {
                let _ = reply.send(self.core.user_replies_permission(&p, &u, r, wall));
            }
            Command::Permission(p, u, reply) => {
                let _ = reply.send(self.core.permission(&p, &u, wall));
            }
            Command::SetUser(profile, reply) => {
                self.core.set_user(profile);
                let _ = reply.send(Ok(()));
            }
            Command::PeerReport(id, reply) => {
                let _ = reply.send(self.peers.get(&id).map(|e| e.peer.report()));
            }
        }
    }

    async fn user_calls(&mut self, call: UserCall) -> Result<WaCallId, SimError> {
        let ctx = PeerContext {
            call_id: None,
            user: call.from.clone(),
            phone_number_id: call.to.clone(),
        };
        let mut peer = timed(self.peers_factory.create(&ctx)).await?;
        let offer = match timed(peer.create_offer()).await {
            Ok(o) => o,
            Err(e) => {
                peer.stop().await;
                return Err(e.into());
            }
        };
        let (now, wall) = self.clock.now();
        match self.core.user_calls(call, offer, now, wall) {
            Ok(id) => {
                info!(wa_call_id = %id, dir = "user", "user call offered");
                self.peers.insert(
                    id.clone(),
                    PeerEntry {
                        peer,
                        last_packets: 0,
                    },
                );
                Ok(id)
            }
            Err(e) => {
                peer.stop().await;
                Err(e)
            }
        }
    }

    fn poll_media(&mut self) {
        let (now, wall) = self.clock.now();
        let mut active = Vec::new();
        for (id, e) in &mut self.peers {
            let r = e.peer.report();
            if r.packets_received > e.last_packets {
                e.last_packets = r.packets_received;
                active.push(id.clone());
            }
        }
        for id in active {
            self.core.handle_business_media(&id, now, wall);
        }
    }

    /// Carries out the core's output until it has none. Bounded: each event is handled
    /// once; peer answers feed back at most one `handle_peer_answer` per call.
    async fn drain(&mut self) {
        for _ in 0..1_000_000 {
            let Some(ev) = self.core.poll_event() else {
                return;
            };
            match ev {
                CoreEvent::Webhook(w) => {
                    if self.webhooks.send(w).await.is_err() {
                        debug!("webhook deliverer stopped");
                    }
                }
                CoreEvent::PeerAnswerOffer { call_id, offer } => {
                    let span = info_span!("call", wa_call_id = %call_id, dir = "business");
                    let res = self.peer_answer(&call_id, &offer).instrument(span).await;
                    let (now, wall) = self.clock.now();
                    self.core
                        .handle_peer_answer(&call_id, res.map_err(|e| e.0), now, wall);
                }
                CoreEvent::PeerApplyAnswer { call_id, answer } => {
                    if let Some(e) = self.peers.get_mut(&call_id)
                        && let Err(err) = timed(e.peer.apply_answer(&answer)).await
                    {
                        self.peer_failed(&call_id, &err);
                    }
                }
                CoreEvent::PeerStartMedia { call_id } => {
                    if let Some(e) = self.peers.get_mut(&call_id)
                        && let Err(err) = timed(e.peer.start_media()).await
                    {
                        self.peer_failed(&call_id, &err);
                    }
                }
                CoreEvent::PeerSendDtmf { call_id, digits } => {
                    if let Some(e) = self.peers.get_mut(&call_id)
                        && let Err(err) = timed(e.peer.send_dtmf(&digits)).await
                    {
                        self.peer_failed(&call_id, &err);
                    }
                }
                CoreEvent::PeerStop { call_id } => {
                    if let Some(mut e) = self.peers.remove(&call_id) {
                        let _ = tokio::time::timeout(PEER_TIMEOUT, e.peer.stop()).await;
                    }
                }
                CoreEvent::CallChanged(info) => {
                    if let Some(end) = &info.end {
                        info!(
                            wa_call_id = %info.id,
                            dir = ?info.direction,
                            reason = ?end.reason,
                            status = ?end.status,
                            duration_s = end.duration_s,
                            "call ended"
                        );
                    } else {
                        debug!(wa_call_id = %info.id, state = ?info.state, "call state");
                    }
                    self.recorder.update_call(info);
                }
                CoreEvent::Nudge {
                    phone_number_id,
                    user,
                } => {
                    self.recorder.push_event(SimEvent::Nudge {
                        phone_number_id,
                        user,
                    });
                }
            }
        }
        warn!("engine drain bound reached");
    }

    async fn peer_answer(&mut self, call_id: &WaCallId, offer: &str) -> Result<String, PeerError> {
        let info = self.core.call(call_id);
        let Some(info) = info else {
            return Err(PeerError("call vanished".into()));
        };
        let ctx = PeerContext {
            call_id: Some(call_id.clone()),
            user: info.user,
            phone_number_id: info.phone_number_id,
        };
        let mut peer = timed(self.peers_factory.create(&ctx)).await?;
        match timed(peer.answer_offer(offer)).await {
            Ok(answer) => {
                self.peers.insert(
                    call_id.clone(),
                    PeerEntry {
                        peer,
                        last_packets: 0,
                    },
                );
                Ok(answer)
            }
            Err(e) => {
                peer.stop().await;
                Err(e)
            }
        }
    }

    fn peer_failed(&self, call_id: &WaCallId, err: &PeerError) {
        warn!(wa_call_id = %call_id, error = %err, "media peer failed");
        self.recorder.push_event(SimEvent::PeerError {
            call_id: call_id.clone(),
            error: err.0.clone(),
        });
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    match tokio::time::timeout(PEER_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(PeerError("media peer timed out".into())),
    }
}

async fn sleep_until_std(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
