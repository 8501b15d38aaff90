//! The endpoint task: owns every transaction and drives them from the network, commands
//! and timers (STYLE.md §1 driver rules).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use super::auth::{ClientAuth, ServerGate};
use super::counters::{MessageKey, SipFlow};
use super::txn::{ClientTxn, ClientTxnEvent, ServerTxn, ServerTxnEvent};
use super::via::{advertised, stamp_received, via_routing};
use super::{
    ClientEvent, ClientTxnHandle, ClientTxnId, Command, DialogId, EndpointConfig, EndpointError,
    EndpointEvent, IncomingRequest, ServerTxnId, SharedStats, SystemClock,
};
use crate::message::{
    Branch, CallId, HeaderName, Host, Method, NameAddr, Request, Response, SipMessage, SipUri,
    StatusCode, Tag, Transport as ViaTransport, Via, error_response,
};
use crate::transaction::TimerConfig;
use crate::transport::{Received, Target, Transport, TransportEvent, response_target};

/// Capacity of each client transaction's event channel.
const CLIENT_QUEUE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Client(ClientTxnId),
    Server(ServerTxnId),
    Ping(usize),
    AckCache,
}

#[derive(Debug)]
enum Purpose {
    User(mpsc::Sender<ClientEvent>),
    Cancel,
    Ping(usize),
}

#[derive(Debug)]
struct ClientEntry {
    txn: ClientTxn,
    key: (String, String),
    target: Target,
    purpose: Purpose,
    cancel_pending: bool,
    cancel_sent: bool,
    /// Authentication retries done for this request chain.
    auth_tries: u8,
    /// The client id this retry replaced (its alias is dropped with this entry).
    retry_of: Option<ClientTxnId>,
    /// To tags whose 2xx was already reported (forks report once each).
    reported_2xx: HashSet<String>,
}

#[derive(Debug)]
struct ServerEntry {
    txn: ServerTxn,
    key: (String, String),
    reply: Target,
    request: Request,
    local_tag: Tag,
    reported_no_ack: bool,
}

#[derive(Debug)]
struct AckEntry {
    bytes: Bytes,
    key: MessageKey,
    target: Target,
    expires: Instant,
}

#[derive(Debug)]
struct PingState {
    up: Option<bool>,
    seq: u32,
    call_id: CallId,
    tag: Tag,
}

pub(super) struct Driver {
    config: Arc<EndpointConfig>,
    timers: TimerConfig,
    transport: Transport,
    transport_rx: mpsc::Receiver<TransportEvent>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<EndpointEvent>,
    clock: SystemClock,
    rng: StdRng,
    next_id: u64,
    clients: HashMap<ClientTxnId, ClientEntry>,
    client_index: HashMap<(String, String), ClientTxnId>,
    servers: HashMap<ServerTxnId, ServerEntry>,
    server_index: HashMap<(String, String), ServerTxnId>,
    /// INVITE server transactions answered 2xx, by (Call-ID, CSeq number), for 2xx ACKs.
    accepted: HashMap<(String, u32), ServerTxnId>,
    dialogs: HashSet<DialogId>,
    acks: HashMap<(String, u32), AckEntry>,
    wakeups: BinaryHeap<Reverse<(Instant, Wake)>>,
    pings: Vec<PingState>,
    /// Old client id → the id of its authenticated retry, for `cancel`.
    aliases: HashMap<ClientTxnId, ClientTxnId>,
    client_auth: Option<ClientAuth>,
    server_gate: Option<ServerGate>,
    shutdown_deadline: Option<Instant>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    stats: Arc<SharedStats>,
}

fn count(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Driver {
    pub(super) fn new(
        config: Arc<EndpointConfig>,
        transport: Transport,
        transport_rx: mpsc::Receiver<TransportEvent>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<EndpointEvent>,
        stats: Arc<SharedStats>,
    ) -> Self {
        let timers = config.timers.clone();
        let mut rng = StdRng::from_os_rng();
        let pings = config
            .ping
            .iter()
            .map(|_| PingState {
                up: None,
                seq: 0,
                call_id: CallId::generate(&mut rng, None),
                tag: Tag::generate(&mut rng),
            })
            .collect();
        let client_auth = config.credentials.as_ref().map(ClientAuth::new);
        let server_gate = config
            .server_auth
            .as_ref()
            .map(|a| ServerGate::new(a, &mut rng));
        Self {
            config,
            timers,
            transport,
            transport_rx,
            commands,
            events,
            clock: SystemClock,
            rng,
            next_id: 1,
            clients: HashMap::new(),
            client_index: HashMap::new(),
            servers: HashMap::new(),
            server_index: HashMap::new(),
            accepted: HashMap::new(),
            dialogs: HashSet::new(),
            acks: HashMap::new(),
            wakeups: BinaryHeap::new(),
            pings,
            aliases: HashMap::new(),
            client_auth,
            server_gate,
            shutdown_deadline: None,
            shutdown_waiters: Vec::new(),
            stats,
        }
    }

    pub(super) async fn run(mut self) {
        let start = self.clock.now();
        for i in 0..self.pings.len() {
            self.wakeups.push(Reverse((start, Wake::Ping(i))));
        }
        let mut commands_open = true;
        loop {
            let deadline = self.wakeups.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = self.transport_rx.recv() => {
                    let now = self.clock.now();
                    match ev {
                        Some(ev) => self.on_transport(ev, now),
                        None => break,
                    }
                }
                cmd = self.commands.recv(), if commands_open => {
                    let now = self.clock.now();
                    match cmd {
                        Some(cmd) => self.on_command(cmd, now),
                        None => {
                            // Every handle is gone: nobody can answer requests any more.
                            commands_open = false;
                            self.begin_shutdown(now);
                        }
                    }
                }
                () = sleep => {
                    let now = self.clock.now();
                    self.on_wake(now);
                }
            }
            self.update_gauges();
            if let Some(deadline) = self.shutdown_deadline {
                let now = self.clock.now();
                if self.in_flight() == 0 || now >= deadline {
                    info!(in_flight = self.in_flight(), "endpoint stopped");
                    break;
                }
            }
        }
        self.transport.shutdown();
        for w in self.shutdown_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn update_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        s.client_transactions
            .store(self.clients.len() as u64, Relaxed);
        s.server_transactions
            .store(self.servers.len() as u64, Relaxed);
        s.dialogs.store(self.dialogs.len() as u64, Relaxed);
    }

    fn in_flight(&self) -> usize {
        self.clients.values().filter(|c| !c.txn.has_final()).count()
            + self.servers.values().filter(|s| !s.txn.has_final()).count()
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_none() {
            info!(in_flight = self.in_flight(), "endpoint shutting down");
            self.shutdown_deadline = Some(now + self.config.shutdown_grace);
            // Wake up at the deadline even if nothing else happens.
            self.wakeups
                .push(Reverse((now + self.config.shutdown_grace, Wake::AckCache)));
        }
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---- timers -------------------------------------------------------------------

    fn on_wake(&mut self, now: Instant) {
        while let Some(Reverse((at, wake))) = self.wakeups.peek().copied() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            match wake {
                Wake::Client(id) => {
                    if let Some(e) = self.clients.get_mut(&id)
                        && e.txn.poll_timeout().is_some_and(|t| t <= now)
                    {
                        e.txn.handle_timeout(now);
                        self.flush_client(id, now);
                    }
                }
                Wake::Server(id) => {
                    if let Some(e) = self.servers.get_mut(&id)
                        && e.txn.poll_timeout().is_some_and(|t| t <= now)
                    {
                        e.txn.handle_timeout(now);
                        self.flush_server(id, now);
                    }
                }
                Wake::Ping(i) => self.send_ping(i, now),
                Wake::AckCache => self.acks.retain(|_, a| a.expires > now),
            }
        }
    }

    // ---- flushing cores -----------------------------------------------------------

    fn flush_client(&mut self, id: ClientTxnId, now: Instant) {
        let mut events = Vec::new();
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        while let Some((bytes, key)) = e.txn.poll_transmit() {
            self.stats.messages.count(SipFlow::Out, key);
            if let Err(err) = self.transport.send(&e.target, bytes) {
                warn!(target = %e.target.addr, error = %err, "send failed");
            }
        }
        while let Some(ev) = e.txn.poll_event() {
            events.push(ev);
        }
        if let Some(at) = e.txn.poll_timeout() {
            self.wakeups.push(Reverse((at, Wake::Client(id))));
        }
        for ev in events {
            self.on_client_event(id, ev, now);
        }
        if self.clients.get(&id).is_some_and(|e| e.txn.is_terminated())
            && let Some(e) = self.clients.remove(&id)
        {
            self.client_index.remove(&e.key);
            if let Some(old) = e.retry_of {
                self.aliases.remove(&old);
            }
            debug!(%id, "client transaction terminated");
        }
    }

    fn flush_server(&mut self, id: ServerTxnId, _now: Instant) {
        let Some(e) = self.servers.get_mut(&id) else {
            return;
        };
        while let Some((bytes, key)) = e.txn.poll_transmit() {
            self.stats.messages.count(SipFlow::Out, key);
            if let Err(err) = self.transport.send(&e.reply, bytes) {
                warn!(target = %e.reply.addr, error = %err, "send failed");
            }
        }
        let mut out = Vec::new();
        while let Some(ev) = e.txn.poll_event() {
            let status = e.txn.last_response().map_or(0, |r| r.status.as_u16());
            match ev {
                ServerTxnEvent::AckTimeout => {
                    count(&self.stats.ack_timeouts);
                    out.push(EndpointEvent::AckTimeout { id, status });
                }
                ServerTxnEvent::NoAckFor2xx if !e.reported_no_ack => {
                    e.reported_no_ack = true;
                    count(&self.stats.ack_timeouts);
                    out.push(EndpointEvent::AckTimeout { id, status });
                }
                ServerTxnEvent::NoAckFor2xx => {}
            }
        }
        if let Some(at) = e.txn.poll_timeout() {
            self.wakeups.push(Reverse((at, Wake::Server(id))));
        }
        if e.txn.is_terminated() {
            let key = e.key.clone();
            if let Some(e) = self.servers.remove(&id) {
                self.server_index.remove(&key);
                if let (Some(c), Some(s)) = (e.request.call_id(), e.request.cseq())
                    && self.accepted.get(&(c.as_str().to_owned(), s.seq)) == Some(&id)
                {
                    self.accepted.remove(&(c.as_str().to_owned(), s.seq));
                }
            }
            debug!(%id, "server transaction terminated");
        }
        for ev in out {
            self.emit(ev);
        }
    }

    fn emit(&mut self, ev: EndpointEvent) {
        if let Err(e) = self.events.try_send(ev) {
            warn!(error = %e, "endpoint event dropped: owner not reading");
        }
    }

    // ---- client side --------------------------------------------------------------

    fn on_client_event(&mut self, id: ClientTxnId, ev: ClientTxnEvent, now: Instant) {
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        match (&e.purpose, ev) {
            (Purpose::User(tx), ClientTxnEvent::Response(resp)) => {
                let tx = tx.clone();
                let is_invite = e.txn.request().method == Method::Invite;
                if resp.status.is_provisional() {
                    let _ = tx.try_send(ClientEvent::Provisional(resp));
                    if e.cancel_pending && !e.cancel_sent {
                        self.send_cancel(id, now);
                    }
                    return;
                }
                if matches!(resp.status.as_u16(), 401 | 407)
                    && e.auth_tries == 0
                    && self.retry_with_credentials(id, &resp, now)
                {
                    return;
                }
                let Some(e) = self.clients.get_mut(&id) else {
                    return;
                };
                let key = (
                    resp.call_id()
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_default(),
                    resp.cseq().map_or(0, |c| c.seq),
                );
                if is_invite && resp.status.is_success() {
                    let to_tag = resp
                        .to_tag()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default();
                    if !e.reported_2xx.insert(to_tag) {
                        // A retransmitted 2xx: the ACK was lost, send it again.
                        if let Some(a) = self.acks.get(&key) {
                            self.stats.messages.count(SipFlow::Out, a.key);
                            let _ = self.transport.send(&a.target, a.bytes.clone());
                        }
                        return;
                    }
                    if let (Some(c), Some(l), Some(r)) =
                        (resp.call_id(), resp.from_tag(), resp.to_tag())
                    {
                        self.dialogs.insert(DialogId {
                            call_id: c,
                            local_tag: l,
                            remote_tag: r,
                        });
                    }
                } else if e.txn.request().method == Method::Bye {
                    self.forget_dialog_of(&resp, true);
                }
                let _ = tx.try_send(ClientEvent::Final(resp));
            }
            (Purpose::User(tx), ClientTxnEvent::Timeout) => {
                count(&self.stats.timeouts);
                let _ = tx.try_send(ClientEvent::Timeout);
            }
            (Purpose::User(tx), ClientTxnEvent::TransportError) => {
                let _ = tx.try_send(ClientEvent::TransportError);
            }
            (Purpose::User(_), ClientTxnEvent::TimerC) => {
                // RFC 3261 §16.6 / Timer C: an INVITE ringing too long is cancelled.
                info!(%id, "timer C: cancelling INVITE");
                if !e.cancel_sent {
                    self.send_cancel(id, now);
                }
            }
            (Purpose::Cancel, _) => {}
            (Purpose::Ping(i), ev) => {
                let i = *i;
                let up = matches!(ev, ClientTxnEvent::Response(ref r) if r.status.is_final());
                let down = matches!(ev, ClientTxnEvent::Timeout | ClientTxnEvent::TransportError);
                if up || down {
                    self.set_peer(i, up);
                }
            }
        }
    }

    /// Re-sends the request of client `id` with credentials answering `challenge`
    /// (RFC 3261 §22.2): same Call-ID and tags, CSeq + 1, fresh branch. Returns whether
    /// it did; the retry inherits the caller's channel.
    fn retry_with_credentials(
        &mut self,
        id: ClientTxnId,
        challenge: &Response,
        now: Instant,
    ) -> bool {
        let Some(e) = self.clients.get(&id) else {
            return false;
        };
        let Some(auth) = self.client_auth.as_mut() else {
            return false;
        };
        let mut req = e.txn.request().clone();
        req.headers.remove_first("Via");
        let seq = req.cseq().map_or(1, |c| c.seq.saturating_add(1));
        req.headers
            .set(HeaderName::CSEQ, format!("{seq} {}", req.method.as_str()));
        if !auth.authorize(&mut req, challenge, &mut self.rng) {
            debug!("challenge not answerable with our credentials");
            return false;
        }
        let target = e.target.clone();
        let Some(e) = self.clients.get_mut(&id) else {
            return false;
        };
        let purpose = std::mem::replace(&mut e.purpose, Purpose::Cancel);
        let cancel_pending = e.cancel_pending;
        match self.start_client(req, target, purpose, false, now) {
            Ok((new_id, _)) => {
                debug!(old = %id, new = %new_id, "re-sent with credentials");
                count(&self.stats.auth_retries);
                self.aliases.insert(id, new_id);
                if let Some(n) = self.clients.get_mut(&new_id) {
                    n.auth_tries = 1;
                    n.cancel_pending = cancel_pending;
                    n.retry_of = Some(id);
                }
                true
            }
            Err(err) => {
                warn!(error = %err, "authenticated retry failed");
                false
            }
        }
    }

    fn set_peer(&mut self, i: usize, up: bool) {
        let Some(p) = self.pings.get_mut(i) else {
            return;
        };
        if p.up != Some(up) {
            p.up = Some(up);
            let target = self.config.ping[i].target.clone();
            if up {
                info!(peer = %target.addr, "peer up");
            } else {
                warn!(peer = %target.addr, "peer down");
            }
            self.emit(EndpointEvent::PeerStatus { target, up });
        }
    }

    fn local_via(&mut self, target: &Target) -> Option<(Via, Branch)> {
        let local = self.transport.local_addr_for(target.kind, target.addr)?;
        let local = advertised(local, self.config.advertised_ip);
        let branch = Branch::generate(&mut self.rng);
        let host = match local.ip() {
            std::net::IpAddr::V4(v4) => Host::Ipv4(v4),
            std::net::IpAddr::V6(v6) => Host::Ipv6(v6),
        };
        let mut via = Via::new(
            ViaTransport::parse(target.kind.as_str()),
            host,
            Some(local.port()),
            &branch,
        );
        via.params.set("rport", None);
        Some((via, branch))
    }

    fn start_client(
        &mut self,
        mut request: Request,
        target: Target,
        purpose: Purpose,
        keep_via: bool,
        now: Instant,
    ) -> Result<(ClientTxnId, Request), EndpointError> {
        if request.call_id().is_none() {
            return Err(EndpointError::MissingHeader("Call-ID"));
        }
        if request.cseq().is_none() {
            return Err(EndpointError::MissingHeader("CSeq"));
        }
        let caller_via = request.branch().filter(Branch::is_rfc3261);
        let branch = if keep_via {
            request
                .branch()
                .ok_or(EndpointError::MissingHeader("Via"))?
        } else if let Some(branch) = caller_via {
            // Built with `Endpoint::via_for` (e.g. by `Dialog::create_request`): keep it.
            branch
        } else {
            let (via, branch) = self.local_via(&target).ok_or(EndpointError::Transport)?;
            request.headers.push_front(HeaderName::VIA, via.to_string());
            branch
        };
        if !request.headers.contains("Max-Forwards") {
            request.headers.push(HeaderName::MAX_FORWARDS, "70");
        }
        if !request.headers.contains("User-Agent") {
            request
                .headers
                .push(HeaderName::USER_AGENT, self.config.user_agent.clone());
        }
        let key = (
            branch.as_str().to_owned(),
            request.method.as_str().to_owned(),
        );
        let id = ClientTxnId(self.new_id());
        let txn = ClientTxn::new(
            request.clone(),
            target.kind.is_reliable(),
            &self.timers,
            now,
        );
        debug!(%id, method = %request.method, dest = %target.addr,
            call_id = request.call_id().as_ref().map(CallId::as_str), "client transaction started");
        self.client_index.insert(key.clone(), id);
        self.clients.insert(
            id,
            ClientEntry {
                txn,
                key,
                target,
                purpose,
                cancel_pending: false,
                cancel_sent: false,
                auth_tries: 0,
                retry_of: None,
                reported_2xx: HashSet::new(),
            },
        );
        self.flush_client(id, now);
        Ok((id, request))
    }

    fn send_cancel(&mut self, id: ClientTxnId, now: Instant) {
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        e.cancel_sent = true;
        let cancel = e.txn.request().cancel();
        let target = e.target.clone();
        if let Err(err) = self.start_client(cancel, target, Purpose::Cancel, true, now) {
            warn!(error = %err, "cannot send CANCEL");
        }
    }

    /// Swaps the trunk settings. Ping slots that existed keep their schedule (the next ping
    /// goes to the new target); new slots ping now; removed slots stop at their next wake.
    fn update_trunk(&mut self, update: super::TrunkUpdate, now: Instant) {
        let mut config = (*self.config).clone();
        config.ping = update.ping;
        config.credentials = update.credentials;
        config.server_auth = update.server_auth;
        self.client_auth = config.credentials.as_ref().map(ClientAuth::new);
        self.server_gate = config
            .server_auth
            .as_ref()
            .map(|a| ServerGate::new(a, &mut self.rng));
        let old = self.pings.len();
        self.pings.truncate(config.ping.len());
        for (i, p) in self.pings.iter_mut().enumerate() {
            let changed =
                self.config.ping.get(i).map(|c| &c.target) != Some(&config.ping[i].target);
            if changed {
                p.up = None;
            }
        }
        for i in old..config.ping.len() {
            self.pings.push(PingState {
                up: None,
                seq: 0,
                call_id: CallId::generate(&mut self.rng, None),
                tag: Tag::generate(&mut self.rng),
            });
            self.wakeups.push(Reverse((now, Wake::Ping(i))));
        }
        info!(
            pings = config.ping.len(),
            credentials = config.credentials.is_some(),
            server_auth = config.server_auth.is_some(),
            "trunk settings updated"
        );
        self.config = Arc::new(config);
    }

    fn send_ping(&mut self, i: usize, now: Instant) {
        let Some(cfg) = self.config.ping.get(i).cloned() else {
            return;
        };
        self.wakeups
            .push(Reverse((now + cfg.interval, Wake::Ping(i))));
        if self.shutdown_deadline.is_some() {
            return;
        }
        let local = self
            .transport
            .local_addr_for(cfg.target.kind, cfg.target.addr)
            .map(|a| advertised(a, self.config.advertised_ip));
        let Some(local) = local else {
            return;
        };
        let Some(p) = self.pings.get_mut(i) else {
            return;
        };
        p.seq = p.seq.wrapping_add(1);
        let mut req = Request::new(Method::Options, cfg.uri.clone());
        let from_uri = SipUri::new(host_of(local))
            .with_user("whatsip")
            .with_port(local.port());
        req.headers.push(
            HeaderName::FROM,
            NameAddr::new(from_uri).with_tag(&p.tag).to_string(),
        );
        req.headers
            .push(HeaderName::TO, NameAddr::new(cfg.uri.clone()).to_string());
        req.headers.push(HeaderName::CALL_ID, p.call_id.as_str());
        req.headers
            .push(HeaderName::CSEQ, format!("{} OPTIONS", p.seq));
        req.headers.push(HeaderName::ACCEPT, "application/sdp");
        if let Err(e) = self.start_client(req, cfg.target, Purpose::Ping(i), false, now) {
            debug!(error = %e, "ping not sent");
        }
    }

    // ---- commands -----------------------------------------------------------------

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::SendRequest {
                request,
                target,
                reply,
            } => {
                if self.shutdown_deadline.is_some() {
                    let _ = reply.send(Err(EndpointError::ShuttingDown));
                    return;
                }
                let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
                let result = self
                    .start_client(request, target, Purpose::User(tx), false, now)
                    .map(|(id, request)| ClientTxnHandle { id, request, rx });
                let _ = reply.send(result);
            }
            Command::Cancel { mut id } => {
                for _ in 0..4 {
                    match self.aliases.get(&id) {
                        Some(next) => id = *next,
                        None => break,
                    }
                }
                let Some(e) = self.clients.get_mut(&id) else {
                    return;
                };
                if e.txn.request().method != Method::Invite || e.txn.has_final() || e.cancel_sent {
                    return;
                }
                // RFC 3261 §9.1: no CANCEL before a provisional response.
                if e.txn.is_proceeding() {
                    self.send_cancel(id, now);
                } else {
                    e.cancel_pending = true;
                }
            }
            Command::Respond {
                id,
                response,
                reply,
            } => {
                let r = self.respond(id, response, now);
                let _ = reply.send(r);
            }
            Command::SendAck { ack, target, reply } => {
                let _ = reply.send(self.send_ack(ack, target, now));
            }
            Command::ForgetDialog { key } => {
                self.dialogs.remove(&key);
            }
            Command::UpdateTrunk(update) => self.update_trunk(*update, now),
            Command::Shutdown { done } => {
                self.shutdown_waiters.push(done);
                self.begin_shutdown(now);
            }
        }
    }

    fn send_ack(
        &mut self,
        mut ack: Request,
        target: Target,
        now: Instant,
    ) -> Result<Request, EndpointError> {
        let call_id = ack
            .call_id()
            .ok_or(EndpointError::MissingHeader("Call-ID"))?;
        let seq = ack.cseq().ok_or(EndpointError::MissingHeader("CSeq"))?.seq;
        if ack.branch().filter(Branch::is_rfc3261).is_none() {
            let (via, _) = self.local_via(&target).ok_or(EndpointError::Transport)?;
            ack.headers.push_front(HeaderName::VIA, via.to_string());
        }
        if !ack.headers.contains("Max-Forwards") {
            ack.headers.push(HeaderName::MAX_FORWARDS, "70");
        }
        let bytes = Bytes::from(ack.to_bytes());
        let key = MessageKey::request(&ack);
        self.stats.messages.count(SipFlow::Out, key);
        self.transport
            .send(&target, bytes.clone())
            .map_err(|_| EndpointError::Transport)?;
        let expires = now + self.timers.t1.saturating_mul(64);
        self.acks.insert(
            (call_id.as_str().to_owned(), seq),
            AckEntry {
                bytes,
                key,
                target,
                expires,
            },
        );
        self.wakeups.push(Reverse((expires, Wake::AckCache)));
        Ok(ack)
    }

    fn respond(
        &mut self,
        id: ServerTxnId,
        mut response: Response,
        now: Instant,
    ) -> Result<(), EndpointError> {
        let Some(e) = self.servers.get_mut(&id) else {
            return Err(EndpointError::NoSuchTransaction(id));
        };
        if response.status != StatusCode::TRYING && response.to_tag().is_none() {
            // Keep one To tag per transaction, so 180, 200 and an automatic 487 agree.
            add_to_tag(&mut response, &e.local_tag);
        }
        if !response.headers.contains("Server") {
            response
                .headers
                .push(HeaderName::SERVER, self.config.user_agent.clone());
        }
        let is_invite = e.request.method == Method::Invite;
        let is_bye = e.request.method == Method::Bye;
        let status = response.status;
        let dialog = dialog_of_response(&response, false);
        if !e.txn.send_response(response, now) {
            return Err(EndpointError::InvalidState);
        }
        let call_seq = e
            .request
            .call_id()
            .zip(e.request.cseq())
            .map(|(c, s)| (c.as_str().to_owned(), s.seq));
        if is_invite && status.is_success() {
            if let Some(d) = dialog {
                self.dialogs.insert(d);
            }
            if let Some(k) = call_seq {
                self.accepted.insert(k, id);
            }
        } else if is_bye
            && status.is_final()
            && let Some(d) = dialog
        {
            self.dialogs.remove(&d);
        }
        self.flush_server(id, now);
        Ok(())
    }

    fn forget_dialog_of(&mut self, resp: &Response, uac: bool) {
        if let Some(d) = dialog_of_response(resp, uac) {
            self.dialogs.remove(&d);
        }
    }

    // ---- network ------------------------------------------------------------------

    fn on_transport(&mut self, ev: TransportEvent, now: Instant) {
        match ev {
            TransportEvent::Message(received) => self.on_message(received, now),
            TransportEvent::ConnectFailed { kind, addr } => {
                let failed: Vec<ClientTxnId> = self
                    .clients
                    .iter()
                    .filter(|(_, e)| {
                        e.target.kind == kind && e.target.addr == addr && !e.txn.has_final()
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in failed {
                    if let Some(e) = self.clients.get_mut(&id) {
                        e.txn.handle_transport_error(now);
                    }
                    self.flush_client(id, now);
                }
            }
        }
    }

    fn on_message(&mut self, received: Received, now: Instant) {
        let limits = crate::message::ParseLimits {
            max_message_bytes: self.config.transport.limits.max_message_bytes,
            ..crate::message::ParseLimits::default()
        };
        match SipMessage::parse(&received.bytes, &limits) {
            Ok(SipMessage::Request(req)) => {
                self.stats
                    .messages
                    .count(SipFlow::In, MessageKey::request(&req));
                self.on_request(req, &received, now);
            }
            Ok(SipMessage::Response(resp)) => {
                self.stats
                    .messages
                    .count(SipFlow::In, MessageKey::response(&resp));
                self.on_response(resp, now);
            }
            Err(err) => {
                self.transport.record_parse_error(received.kind);
                warn!(source = %received.source, error = %err, "malformed message");
                if let Some(resp) = error_response(&received.bytes, &err) {
                    self.stats
                        .messages
                        .count(SipFlow::Out, MessageKey::response(&resp));
                    let _ = self
                        .transport
                        .send(&received.reply_target(), Bytes::from(resp.to_bytes()));
                }
            }
        }
    }

    fn on_response(&mut self, resp: Response, now: Instant) {
        // One span per message, so logs can be followed by Call-ID (STYLE.md §6).
        let span = tracing::debug_span!(
            "sip_response",
            call_id = resp.call_id().as_ref().map(CallId::as_str),
            status = resp.status.as_u16()
        );
        let _entered = span.enter();
        let key = resp
            .branch()
            .zip(resp.cseq())
            .map(|(b, c)| (b.as_str().to_owned(), c.method.as_str().to_owned()));
        if let Some(id) = key.as_ref().and_then(|k| self.client_index.get(k)).copied() {
            if let Some(e) = self.clients.get_mut(&id) {
                e.txn.handle_response(resp, now);
            }
            self.flush_client(id, now);
            return;
        }
        // RFC 3261 §13.2.2.4: a 2xx retransmitted after the transaction ended still
        // needs the ACK again.
        if resp.status.is_success()
            && resp.cseq().is_some_and(|c| c.method == Method::Invite)
            && let Some(a) = resp
                .call_id()
                .zip(resp.cseq())
                .and_then(|(c, s)| self.acks.get(&(c.as_str().to_owned(), s.seq)))
        {
            self.stats.messages.count(SipFlow::Out, a.key);
            let _ = self.transport.send(&a.target, a.bytes.clone());
            return;
        }
        debug!(status = resp.status.as_u16(), "unmatched response dropped");
    }

    fn on_request(&mut self, mut req: Request, received: &Received, now: Instant) {
        let span = tracing::debug_span!(
            "sip_request",
            call_id = req.call_id().as_ref().map(CallId::as_str),
            method = %req.method,
            source = %received.source
        );
        let _entered = span.enter();
        let Some(via) = stamp_received(&mut req, received.source) else {
            return;
        };
        let Some(reply) = via_routing(&via).and_then(|v| response_target(&v, received)) else {
            debug!("no route for response; dropped");
            return;
        };
        // Non-RFC 3261 branches (RFC 2543 peers) fall back to Call-ID + CSeq + From tag.
        let branch = via
            .branch()
            .filter(Branch::is_rfc3261)
            .map(|b| b.as_str().to_owned())
            .unwrap_or_else(|| {
                format!(
                    "{}|{}|{}",
                    req.call_id()
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_default(),
                    req.cseq().map_or(0, |c| c.seq),
                    req.from_tag()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default()
                )
            });
        let method = req.method.clone();
        trace!(%method, %branch, "request");
        match method {
            Method::Ack => self.on_ack(req, branch, now),
            Method::Cancel => self.on_cancel(req, branch, reply, now),
            _ => {
                let key = (branch, method.as_str().to_owned());
                if let Some(id) = self.server_index.get(&key).copied() {
                    if let Some(e) = self.servers.get_mut(&id) {
                        e.txn.handle_request(&req, now);
                    }
                    self.flush_server(id, now);
                    return;
                }
                self.new_server_request(req, key, reply, received, now);
            }
        }
    }

    fn on_ack(&mut self, ack: Request, branch: String, now: Instant) {
        // An ACK for a non-2xx shares the INVITE's branch; an ACK for our 2xx is a new
        // transaction, found by Call-ID and CSeq (some peers reuse the branch anyway).
        let call_seq = ack
            .call_id()
            .zip(ack.cseq())
            .map(|(c, s)| (c.as_str().to_owned(), s.seq));
        let by_branch = self
            .server_index
            .get(&(branch, "INVITE".to_owned()))
            .copied();
        let by_dialog = call_seq.and_then(|k| self.accepted.get(&k)).copied();
        let mut for_2xx = true;
        if let Some(id) = by_branch.or(by_dialog) {
            if let Some(e) = self.servers.get_mut(&id) {
                for_2xx = e.txn.last_response().is_some_and(|r| r.status.is_success());
                e.txn.handle_request(&ack, now);
            }
            self.flush_server(id, now);
        }
        if !for_2xx {
            return;
        }
        match DialogId::for_incoming_request(&ack) {
            Some(d) if self.dialogs.contains(&d) => {
                self.emit(EndpointEvent::Ack {
                    request: ack,
                    dialog: d,
                });
            }
            _ => debug!("stray ACK dropped"),
        }
    }

    fn on_cancel(&mut self, cancel: Request, branch: String, reply: Target, now: Instant) {
        let cancel_key = (branch.clone(), "CANCEL".to_owned());
        if let Some(id) = self.server_index.get(&cancel_key).copied() {
            if let Some(e) = self.servers.get_mut(&id) {
                e.txn.handle_request(&cancel, now);
            }
            self.flush_server(id, now);
            return;
        }
        let invite = self
            .server_index
            .get(&(branch, "INVITE".to_owned()))
            .copied();
        let status = if invite.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CALL_DOES_NOT_EXIST
        };
        let cancel_id = self.add_server(cancel.clone(), cancel_key, reply, now);
        let resp = cancel.response(status, None);
        let _ = self.respond(cancel_id, resp, now);
        let Some(invite_id) = invite else {
            debug!("CANCEL matched nothing: 481");
            count(&self.stats.no_dialog_481);
            return;
        };
        let pending = self
            .servers
            .get(&invite_id)
            .is_some_and(|e| !e.txn.has_final());
        if pending {
            let resp = self
                .servers
                .get(&invite_id)
                .map(|e| e.request.response(StatusCode::REQUEST_TERMINATED, None));
            if let Some(resp) = resp {
                let _ = self.respond(invite_id, resp, now);
            }
            info!(id = %invite_id, "INVITE cancelled");
            count(&self.stats.cancelled);
            self.emit(EndpointEvent::Cancelled {
                id: invite_id,
                cancel,
            });
        }
    }

    fn add_server(
        &mut self,
        request: Request,
        key: (String, String),
        reply: Target,
        now: Instant,
    ) -> ServerTxnId {
        let id = ServerTxnId(self.new_id());
        let txn = ServerTxn::new(&request, reply.kind.is_reliable(), &self.timers, now);
        let local_tag = request
            .to_tag()
            .unwrap_or_else(|| Tag::generate(&mut self.rng));
        self.server_index.insert(key.clone(), id);
        self.servers.insert(
            id,
            ServerEntry {
                txn,
                key,
                reply,
                request,
                local_tag,
                reported_no_ack: false,
            },
        );
        // An INVITE's core has queued 100 Trying already (§17.2.1).
        self.flush_server(id, now);
        id
    }

    fn new_server_request(
        &mut self,
        req: Request,
        key: (String, String),
        reply: Target,
        received: &Received,
        now: Instant,
    ) {
        let id = self.add_server(req.clone(), key, reply, now);
        debug!(%id, method = %req.method, source = %received.source,
            call_id = req.call_id().as_ref().map(CallId::as_str), "server transaction started");
        if self.shutdown_deadline.is_some() {
            count(&self.stats.overload_503);
            let mut resp = req.response(StatusCode::SERVICE_UNAVAILABLE, None);
            resp.headers.push(HeaderName::RETRY_AFTER, "30");
            let _ = self.respond(id, resp, now);
            return;
        }
        if !self.config.allow.contains(&req.method) {
            // RFC 3261 §8.2.1: 405 with the methods we do support.
            debug!(method = %req.method, "method not allowed: 405");
            let mut resp = req.response(StatusCode::METHOD_NOT_ALLOWED, None);
            self.capabilities(&mut resp);
            let _ = self.respond(id, resp, now);
            return;
        }
        let dialog = DialogId::for_incoming_request(&req);
        if req.method == Method::Bye
            && let Some(invite_id) = req.call_id().and_then(|c| {
                self.accepted
                    .iter()
                    .find(|((cid, _), _)| cid == c.as_str())
                    .map(|(_, id)| *id)
            })
            && let Some(e) = self.servers.get_mut(&invite_id)
        {
            // A BYE proves the peer got our 2xx even if its ACK was lost: stop resending.
            e.txn.stop_2xx_resend();
        }
        if req.to_tag().is_some() {
            if !dialog.as_ref().is_some_and(|d| self.dialogs.contains(d)) {
                debug!(method = %req.method, "request for unknown dialog: 481");
                count(&self.stats.no_dialog_481);
                let resp = req.response(StatusCode::CALL_DOES_NOT_EXIST, None);
                let _ = self.respond(id, resp, now);
                return;
            }
        } else if req.method == Method::Options && self.config.answer_options {
            let mut resp = req.response(StatusCode::OK, None);
            self.capabilities(&mut resp);
            let _ = self.respond(id, resp, now);
            return;
        } else if req.method != Method::Options
            && let Some(gate) = self.server_gate.as_mut()
            && let Some(challenge) = gate.check(&req, self.clock.wall())
        {
            count(&self.stats.challenges);
            let _ = self.respond(id, challenge, now);
            return;
        }
        let event = EndpointEvent::Request(IncomingRequest {
            id,
            request: req.clone(),
            kind: received.kind,
            source: received.source,
            dialog: if req.to_tag().is_some() { dialog } else { None },
        });
        count(&self.stats.requests);
        if self.events.try_send(event).is_err() {
            warn!("owner not reading events: 503");
            count(&self.stats.overload_503);
            let mut resp = req.response(StatusCode::SERVICE_UNAVAILABLE, None);
            resp.headers.push(HeaderName::RETRY_AFTER, "5");
            let _ = self.respond(id, resp, now);
        }
    }

    fn capabilities(&self, resp: &mut Response) {
        let allow = self
            .config
            .allow
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        resp.headers.push(HeaderName::ALLOW, allow);
        resp.headers.push(HeaderName::ACCEPT, "application/sdp");
        if !self.config.supported.is_empty() {
            resp.headers
                .push(HeaderName::SUPPORTED, self.config.supported.join(", "));
        }
    }
}

fn host_of(addr: std::net::SocketAddr) -> Host {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => Host::Ipv4(v4),
        std::net::IpAddr::V6(v6) => Host::Ipv6(v6),
    }
}

/// The dialog of a response: as UAC we own the From tag, as UAS the To tag.
fn dialog_of_response(resp: &Response, uac: bool) -> Option<DialogId> {
    let (local, remote) = if uac {
        (resp.from_tag()?, resp.to_tag()?)
    } else {
        (resp.to_tag()?, resp.from_tag()?)
    };
    Some(DialogId {
        call_id: resp.call_id()?,
        local_tag: local,
        remote_tag: remote,
    })
}

fn add_to_tag(resp: &mut Response, tag: &Tag) {
    if let Some(h) = resp.headers.iter_mut().find(|h| h.name.is("To")) {
        h.value = format!("{};tag={}", h.value, tag);
    }
}
