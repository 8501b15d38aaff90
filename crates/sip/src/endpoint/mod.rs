//! The tokio `Endpoint`: transactions over the transports, for the gateway to use.
//!
//! One driver task owns the transaction table, the dialog set and the transport's event
//! stream. [`Endpoint`] handles (cheap clones) talk to it over a bounded `mpsc`; each client
//! transaction reports back on its own channel ([`ClientTxnHandle`]). The driver follows
//! the crate's drive-loop contract: after each input it drains every core's
//! `poll_transmit`/`poll_event`, then arms one timer at the earliest `poll_timeout`; the
//! clock is read once per wake-up through [`SystemClock`].
//!
//! What it does for the user:
//! - stamps `received`/`rport` on incoming requests (RFC 3261 §18.2.1, RFC 3581) and routes
//!   responses per §18.2.2;
//! - answers malformed requests with 400 (or 505/513) when the parser can build one, drops
//!   and counts the rest;
//! - sends `100 Trying` for every INVITE at once;
//! - answers CANCEL: 200 to the CANCEL, 487 to the INVITE, and reports
//!   [`EndpointEvent::Cancelled`]; 481 when nothing matches;
//! - answers out-of-dialog OPTIONS with 200 (Allow/Accept/Supported) and pings configured
//!   peers with OPTIONS, reporting [`EndpointEvent::PeerStatus`] on change;
//! - tracks dialogs created by 2xx to INVITE (either direction) and answers 481 to
//!   in-dialog requests for unknown dialogs; drops stray ACKs and unmatched responses
//!   (re-sending the ACK for a retransmitted 2xx);
//! - on [`Endpoint::shutdown`], stops taking new requests (503) and lets transactions in
//!   flight finish, bounded by [`EndpointConfig::shutdown_grace`].
//!
//! Dialog state (CSeq, route set, remote target) lives in [`crate::Dialog`] cores owned by
//! the caller's call task; build in-dialog requests with `Dialog::create_request(method,
//! &endpoint.via_for(&target)?)` and send them with [`Endpoint::send_request`]. The
//! endpoint resends a 2xx to INVITE until its ACK itself, so a UAS does not also need
//! `Dialog::start_2xx_retransmission`.
//!
//! ```no_run
//! use whatsip_sip::StatusCode;
//! use whatsip_sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent};
//! use whatsip_sip::transport::{ListenAddr, TransportKind};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = EndpointConfig::default();
//! config.transport.listen.push(ListenAddr {
//!     kind: TransportKind::Udp,
//!     addr: "127.0.0.1:5060".parse()?,
//! });
//! let (endpoint, mut events) = Endpoint::start(config).await?;
//! while let Some(event) = events.recv().await {
//!     if let EndpointEvent::Request(incoming) = event {
//!         // 100 Trying already went out for an INVITE; refuse everything else politely.
//!         let busy = incoming.request.response(StatusCode::BUSY_HERE, None);
//!         endpoint.respond(incoming.id, busy).await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod auth;
mod counters;
mod driver;
mod txn;
mod via;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub use crate::dialog::DialogId;
use crate::message::{Method, Request, Response};
use crate::transport::{Target, Transport, TransportConfig, TransportError, TransportKind};

pub use auth::{ServerAuth, TrunkCredentials};
pub use counters::{SipFlow, SipMessageCount};
pub use via::{stamp_received, via_routing};

/// The one place that reads the clock (STYLE.md §1).
///
/// Uses tokio's clock so that tests under `start_paused` see virtual time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The current instant.
    #[allow(clippy::disallowed_methods)]
    pub fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// The current wall-clock time (digest nonces carry it).
    #[allow(clippy::disallowed_methods)]
    pub fn wall(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

/// A peer to ping with OPTIONS to learn whether it is up.
#[derive(Debug, Clone)]
pub struct PingTarget {
    /// Where to send.
    pub target: Target,
    /// Request-URI of the OPTIONS (e.g. `sip:pbx.example.com`).
    pub uri: crate::message::Uri,
    /// Time between pings. A ping that times out (Timer F) marks the peer down; any
    /// response marks it up.
    pub interval: Duration,
}

/// The trunk settings [`Endpoint::update_trunk`] replaces at run time (a config reload):
/// peers to ping, the credentials answering challenges, and the account requests must
/// authenticate as. Transactions and dialogs in flight are untouched; the next request,
/// challenge or ping uses the new values.
#[derive(Debug, Clone, Default)]
pub struct TrunkUpdate {
    /// Peers to ping with OPTIONS (replaces [`EndpointConfig::ping`]).
    pub ping: Vec<PingTarget>,
    /// Replaces [`EndpointConfig::credentials`].
    pub credentials: Option<TrunkCredentials>,
    /// Replaces [`EndpointConfig::server_auth`].
    pub server_auth: Option<ServerAuth>,
}

/// Endpoint configuration. `Default` holds production values and no listeners.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Sockets and limits.
    pub transport: TransportConfig,
    /// Transaction timers: T1 500 ms, T2 4 s, T4 5 s, Timer C 181 s by default
    /// (RFC 3261 §17.1.1.1 table 4).
    pub timers: crate::transaction::TimerConfig,
    /// `User-Agent`/`Server` header value.
    pub user_agent: String,
    /// Methods accepted and listed in `Allow`; other requests get 405 (RFC 3261 §8.2.1).
    pub allow: Vec<Method>,
    /// Option tags listed in `Supported`.
    pub supported: Vec<String>,
    /// Address to put in Via/Contact when listening on an unspecified address.
    pub advertised_ip: Option<IpAddr>,
    /// Answer out-of-dialog OPTIONS automatically (true) or pass them up (false).
    pub answer_options: bool,
    /// Peers to ping with OPTIONS.
    pub ping: Vec<PingTarget>,
    /// Answer 401/407 challenges on our requests with these credentials (one retry).
    pub credentials: Option<TrunkCredentials>,
    /// Challenge out-of-dialog requests (except OPTIONS, ACK, CANCEL) with digest.
    pub server_auth: Option<ServerAuth>,
    /// How long [`Endpoint::shutdown`] waits for transactions in flight. Default 32 s.
    pub shutdown_grace: Duration,
    /// Capacity of the command channel and of the event channel. Default 1024.
    pub queue: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            timers: crate::transaction::TimerConfig::default(),
            user_agent: concat!("whatsip/", env!("CARGO_PKG_VERSION")).to_owned(),
            allow: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
                Method::Info,
                Method::Update,
            ],
            supported: vec!["timer".to_owned()],
            advertised_ip: None,
            answer_options: true,
            ping: Vec::new(),
            credentials: None,
            server_auth: None,
            shutdown_grace: Duration::from_secs(32),
            queue: 1024,
        }
    }
}

/// Endpoint counters and gauges for metrics, read with [`Endpoint::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Client transactions alive now.
    pub client_transactions: u64,
    /// Server transactions alive now.
    pub server_transactions: u64,
    /// Dialogs tracked now.
    pub dialogs: u64,
    /// New requests passed to the owner.
    pub requests: u64,
    /// 481 answers (unknown dialog, or CANCEL matching nothing).
    pub no_dialog_481: u64,
    /// Digest challenges sent.
    pub challenges: u64,
    /// Requests re-sent with credentials.
    pub auth_retries: u64,
    /// INVITEs cancelled by the peer.
    pub cancelled: u64,
    /// Client transactions that timed out (Timer B/F).
    pub timeouts: u64,
    /// Server finals never acknowledged (Timer H, or no ACK for a 2xx).
    pub ack_timeouts: u64,
    /// Requests refused with 503 (shutting down, owner not reading).
    pub overload_503: u64,
}

#[derive(Debug, Default)]
struct SharedStats {
    client_transactions: std::sync::atomic::AtomicU64,
    server_transactions: std::sync::atomic::AtomicU64,
    dialogs: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
    no_dialog_481: std::sync::atomic::AtomicU64,
    challenges: std::sync::atomic::AtomicU64,
    auth_retries: std::sync::atomic::AtomicU64,
    cancelled: std::sync::atomic::AtomicU64,
    timeouts: std::sync::atomic::AtomicU64,
    ack_timeouts: std::sync::atomic::AtomicU64,
    overload_503: std::sync::atomic::AtomicU64,
    messages: counters::MessageCounters,
}

impl SharedStats {
    fn snapshot(&self) -> EndpointStats {
        use std::sync::atomic::Ordering::Relaxed;
        EndpointStats {
            client_transactions: self.client_transactions.load(Relaxed),
            server_transactions: self.server_transactions.load(Relaxed),
            dialogs: self.dialogs.load(Relaxed),
            requests: self.requests.load(Relaxed),
            no_dialog_481: self.no_dialog_481.load(Relaxed),
            challenges: self.challenges.load(Relaxed),
            auth_retries: self.auth_retries.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            ack_timeouts: self.ack_timeouts.load(Relaxed),
            overload_503: self.overload_503.load(Relaxed),
        }
    }
}

/// Identifies a server transaction, to answer it with [`Endpoint::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxnId(u64);

impl fmt::Display for ServerTxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stx#{}", self.0)
    }
}

/// Identifies a client transaction, to cancel it with [`Endpoint::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxnId(u64);

impl fmt::Display for ClientTxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctx#{}", self.0)
    }
}

/// A request received from the network, with where it came from.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// Answer it with [`Endpoint::respond`].
    pub id: ServerTxnId,
    /// The request, `received`/`rport` already stamped on its top Via.
    pub request: Request,
    /// Transport it came over.
    pub kind: TransportKind,
    /// Packet source.
    pub source: SocketAddr,
    /// The dialog it belongs to, for in-dialog requests.
    pub dialog: Option<DialogId>,
}

/// What the endpoint reports to its owner.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// A new request (out of dialog, or in a known dialog). INVITEs already got 100 Trying.
    Request(IncomingRequest),
    /// A CANCEL matched this INVITE: 200 went to the CANCEL and 487 to the INVITE.
    Cancelled {
        /// The cancelled INVITE's transaction.
        id: ServerTxnId,
        /// The CANCEL request.
        cancel: Request,
    },
    /// An ACK for a 2xx we sent (it confirms the dialog).
    Ack {
        /// The ACK.
        request: Request,
        /// Its dialog.
        dialog: DialogId,
    },
    /// No ACK came for a final response (Timer H, or Timer L after a 2xx: RFC 3261
    /// §13.3.1.4 says the dialog should be ended with BYE).
    AckTimeout {
        /// The INVITE's transaction.
        id: ServerTxnId,
        /// The status that went unacknowledged.
        status: u16,
    },
    /// A pinged peer changed state.
    PeerStatus {
        /// The peer.
        target: Target,
        /// Whether it answered the last ping.
        up: bool,
    },
}

/// What a client transaction reports on its [`ClientTxnHandle`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A 1xx.
    Provisional(Response),
    /// The final response (a 2xx to INVITE may be followed by more 2xx from forks).
    Final(Response),
    /// Timer B/F: no final response (treat as 408, RFC 3261 §8.1.3.1).
    Timeout,
    /// The connection to the target could not be opened (treat as 503, §8.1.3.1).
    TransportError,
}

/// The receiving end of one client transaction.
#[derive(Debug)]
pub struct ClientTxnHandle {
    /// The transaction, for [`Endpoint::cancel`].
    pub id: ClientTxnId,
    /// The request as sent (with our Via), for building ACK/CANCEL or the dialog.
    pub request: Request,
    rx: mpsc::Receiver<ClientEvent>,
}

impl ClientTxnHandle {
    /// The next event; `None` once the transaction is over and everything was read.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }

    /// Skips provisional responses and returns the final outcome.
    pub async fn final_response(&mut self) -> Result<Response, EndpointError> {
        loop {
            match self.rx.recv().await {
                Some(ClientEvent::Provisional(_)) => {}
                Some(ClientEvent::Final(r)) => return Ok(r),
                Some(ClientEvent::Timeout) => return Err(EndpointError::Timeout),
                Some(ClientEvent::TransportError) | None => {
                    return Err(EndpointError::Transport);
                }
            }
        }
    }
}

/// Endpoint failures reported to callers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Starting the transports failed.
    #[error(transparent)]
    Bind(#[from] TransportError),
    /// The endpoint task has stopped.
    #[error("endpoint stopped")]
    Stopped,
    /// The endpoint is shutting down and takes no new transactions.
    #[error("endpoint shutting down")]
    ShuttingDown,
    /// No server transaction with that id (already answered finally and gone).
    #[error("no server transaction {0}")]
    NoSuchTransaction(ServerTxnId),
    /// The transaction's state allows no such response (e.g. a second final).
    #[error("response not allowed in the transaction state")]
    InvalidState,
    /// The request lacks a header the endpoint needs (Call-ID, CSeq, From, To).
    #[error("request missing {0}")]
    MissingHeader(&'static str),
    /// No final response before Timer B/F.
    #[error("transaction timed out")]
    Timeout,
    /// The transport failed to reach the target.
    #[error("transport error")]
    Transport,
}

/// Commands from handles to the driver.
#[derive(Debug)]
enum Command {
    SendRequest {
        request: Request,
        target: Target,
        reply: oneshot::Sender<Result<ClientTxnHandle, EndpointError>>,
    },
    Cancel {
        id: ClientTxnId,
    },
    Respond {
        id: ServerTxnId,
        response: Response,
        reply: oneshot::Sender<Result<(), EndpointError>>,
    },
    SendAck {
        ack: Request,
        target: Target,
        reply: oneshot::Sender<Result<Request, EndpointError>>,
    },
    ForgetDialog {
        key: DialogId,
    },
    UpdateTrunk(Box<TrunkUpdate>),
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// A handle on the endpoint task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Endpoint {
    commands: mpsc::Sender<Command>,
    transport: Transport,
    config: std::sync::Arc<EndpointConfig>,
    stats: std::sync::Arc<SharedStats>,
}

impl Endpoint {
    /// Binds the transports and starts the endpoint task.
    ///
    /// Returns the handle and the stream of [`EndpointEvent`]s (keep reading it: when it
    /// is full the endpoint stops reading the network).
    pub async fn start(
        config: EndpointConfig,
    ) -> Result<(Self, mpsc::Receiver<EndpointEvent>), EndpointError> {
        let (transport, transport_rx) = Transport::bind(config.transport.clone()).await?;
        let (commands, commands_rx) = mpsc::channel(config.queue.max(1));
        let (events, events_rx) = mpsc::channel(config.queue.max(1));
        let config = std::sync::Arc::new(config);
        let stats = std::sync::Arc::new(SharedStats::default());
        let driver = driver::Driver::new(
            config.clone(),
            transport.clone(),
            transport_rx,
            commands_rx,
            events,
            stats.clone(),
        );
        let span = tracing::info_span!("sip_endpoint");
        tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        Ok((
            Self {
                commands,
                transport,
                config,
                stats,
            },
            events_rx,
        ))
    }

    /// The transport (bound addresses, counters).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Transaction and dialog counters for metrics.
    pub fn stats(&self) -> EndpointStats {
        self.stats.snapshot()
    }

    /// Messages received and sent so far, by flow, method (the CSeq method for
    /// responses) and status code; only counters that are non-zero. Received means
    /// parsed (malformed datagrams are the transport's `parse_errors`); sent means handed
    /// to the transport, retransmissions included.
    pub fn message_counts(&self) -> Vec<SipMessageCount> {
        self.stats.messages.snapshot()
    }

    /// The address to advertise in Via/Contact for `kind` towards `peer`.
    pub fn local_addr(&self, kind: TransportKind, peer: SocketAddr) -> Option<SocketAddr> {
        let addr = self.transport.local_addr_for(kind, peer)?;
        Some(via::advertised(addr, self.config.advertised_ip))
    }

    /// A Via for a request to `target` (our address, fresh branch, `rport`), for cores
    /// that build whole requests such as [`crate::Dialog::create_request`].
    pub fn via_for(&self, target: &Target) -> Option<crate::message::Via> {
        let local = self.local_addr(target.kind, target.addr)?;
        let host = match local.ip() {
            IpAddr::V4(v4) => crate::message::Host::Ipv4(v4),
            IpAddr::V6(v6) => crate::message::Host::Ipv6(v6),
        };
        let branch = crate::message::Branch::generate(&mut rand::rng());
        let mut via = crate::message::Via::new(
            crate::message::Transport::parse(target.kind.as_str()),
            host,
            Some(local.port()),
            &branch,
        );
        via.params.set("rport", None);
        Some(via)
    }

    /// Sends a request in a new client transaction and returns its event stream.
    ///
    /// Unless the request already carries a Via with an RFC 3261 branch (from
    /// [`Endpoint::via_for`]), the endpoint puts its own on top (fresh branch, `rport`),
    /// and it adds
    /// `Max-Forwards: 70` and `User-Agent` when missing. Everything else (From with tag,
    /// To, Call-ID, CSeq, Contact, body) is the caller's. A 2xx to an INVITE creates a
    /// tracked dialog.
    pub async fn send_request(
        &self,
        request: Request,
        target: Target,
    ) -> Result<ClientTxnHandle, EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::SendRequest {
            request,
            target,
            reply,
        })
        .await?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Cancels an INVITE client transaction (RFC 3261 §9.1). After an authentication
    /// retry the id still names the call's current INVITE. The CANCEL goes out once a
    /// provisional response has arrived; the INVITE then normally ends with 487.
    pub async fn cancel(&self, id: ClientTxnId) -> Result<(), EndpointError> {
        self.command(Command::Cancel { id }).await
    }

    /// Sends a response in a server transaction. A 2xx to INVITE (with a To tag) creates a
    /// tracked dialog and is resent until the ACK arrives.
    pub async fn respond(&self, id: ServerTxnId, response: Response) -> Result<(), EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Respond {
            id,
            response,
            reply,
        })
        .await?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Sends the ACK for a 2xx (RFC 3261 §13.2.2.4), outside any transaction. The endpoint
    /// adds a Via with a fresh branch (unless the ACK has one), remembers the ACK and re-sends it whenever the 2xx
    /// is retransmitted. Returns the ACK as sent.
    pub async fn send_ack(&self, ack: Request, target: Target) -> Result<Request, EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::SendAck { ack, target, reply })
            .await?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Stops tracking a dialog (after its BYE); later requests in it get 481.
    pub async fn forget_dialog(&self, key: DialogId) -> Result<(), EndpointError> {
        self.command(Command::ForgetDialog { key }).await
    }

    /// Replaces the trunk settings (config reload): see [`TrunkUpdate`].
    pub async fn update_trunk(&self, update: TrunkUpdate) -> Result<(), EndpointError> {
        self.command(Command::UpdateTrunk(Box::new(update))).await
    }

    /// Graceful shutdown: new requests get 503, transactions in flight finish (bounded by
    /// [`EndpointConfig::shutdown_grace`]), then the transports close. Resolves when done.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.command(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn command(&self, c: Command) -> Result<(), EndpointError> {
        self.commands
            .send(c)
            .await
            .map_err(|_| EndpointError::Stopped)
    }
}

/// Builds the 2xx ACK for `invite` answered by `response` (RFC 3261 §13.2.2.4), without
/// Via (the endpoint adds it): Request-URI from the remote target (Contact), Route from
/// the reversed Record-Route, CSeq number of the response (which differs from `invite`'s
/// when the endpoint re-sent the INVITE with credentials).
pub fn ack_for_2xx(invite: &Request, response: &Response) -> Request {
    use crate::message::HeaderName;
    let target = response
        .headers
        .contacts()
        .and_then(|c| c.addresses().first().map(|a| a.uri.clone()))
        .unwrap_or_else(|| invite.uri.clone());
    let mut ack = Request::new(Method::Ack, target);
    ack.headers.push(HeaderName::MAX_FORWARDS, "70");
    for rr in response.headers.raw_list("Record-Route").into_iter().rev() {
        ack.headers.push(HeaderName::ROUTE, rr);
    }
    if let Some(f) = invite.headers.get("From") {
        ack.headers.push(HeaderName::FROM, f);
    }
    if let Some(t) = response.headers.get("To") {
        ack.headers.push(HeaderName::TO, t);
    }
    if let Some(c) = invite.headers.get("Call-ID") {
        ack.headers.push(HeaderName::CALL_ID, c);
    }
    let seq = response
        .cseq()
        .or_else(|| invite.cseq())
        .map_or(1, |c| c.seq);
    ack.headers.push(HeaderName::CSEQ, format!("{seq} ACK"));
    ack
}
