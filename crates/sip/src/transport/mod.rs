//! UDP, TCP and TLS transports (RFC 3261 §18), the tokio side of the crate.
//!
//! A [`Transport`] owns the listening sockets and a table of stream connections keyed by
//! (transport, remote address). Incoming bytes are framed and size-checked
//! ([`framing`]) before anything parses them, then handed to the owner as
//! [`TransportEvent::Message`] on one bounded channel. Sending never blocks the caller:
//! [`Transport::send`] writes a datagram without waiting or queues bytes on the connection's
//! writer task, opening the connection in the background when none exists.
//!
//! What this module does not do: parse messages, add `received`/`rport`, or choose where a
//! response goes. Those need the parsed Via and live in the endpoint; the pure routing rule
//! of RFC 3261 §18.2.2 is [`response_target`] here so it can be tested alone.
//!
//! Connections:
//! - Responses go back on the connection their request came on ([`Target::connection`]).
//! - A request to a peer reuses any live connection to that (transport, address).
//! - A connection with no traffic for [`TransportConfig::idle_timeout`] is closed.
//! - A framing error (no `Content-Length`, over the limits) closes the connection, since the
//!   stream has no recoverable message boundary any more; it is counted in [`TransportStats`].

pub mod framing;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, trace, warn};

pub use framing::{Frame, FrameError, MessageLimits, StreamFramer};
pub use tls::{TlsError, TlsSettings};

/// A SIP transport protocol, as named in a Via header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    /// UDP: unreliable, transactions retransmit.
    Udp,
    /// TCP: reliable stream, framed by `Content-Length`.
    Tcp,
    /// TLS over TCP (`sips:` or `transport=tls`).
    Tls,
}

impl TransportKind {
    /// Whether the transport is reliable (no retransmissions, RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// The upper-case token used in Via (`UDP`, `TCP`, `TLS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// The default port: 5060, or 5061 for TLS (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }

    /// Reads a Via transport token or `transport=` URI parameter, case-insensitively.
    pub fn from_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("udp") {
            Some(Self::Udp)
        } else if token.eq_ignore_ascii_case("tcp") {
            Some(Self::Tcp)
        } else if token.eq_ignore_ascii_case("tls") {
            Some(Self::Tls)
        } else {
            None
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one stream connection for the lifetime of the [`Transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// One address to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    /// Transport protocol.
    pub kind: TransportKind,
    /// Local address; port 0 picks a free port (see [`Transport::listen_addrs`]).
    pub addr: SocketAddr,
}

/// Transport configuration. `Default` is the production value with no listeners.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Addresses to listen on (IPv4 and IPv6 both work).
    pub listen: Vec<ListenAddr>,
    /// Caps applied to every message before parsing.
    pub limits: MessageLimits,
    /// A connection idle this long is closed. Default 300 s: above the 64·T1 transaction
    /// lifetime and common PBX keep-alive intervals.
    pub idle_timeout: Duration,
    /// Time allowed for TCP connect plus TLS handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Most concurrent stream connections; further accepts are refused. Default 1024.
    pub max_connections: usize,
    /// Capacity of the incoming event channel. Default 1024.
    pub incoming_queue: usize,
    /// Capacity of each connection's outgoing queue. Default 256 messages.
    pub connection_queue: usize,
    /// TLS certificates, required for TLS listeners and outgoing TLS.
    pub tls: Option<TlsSettings>,
    /// `SO_RCVBUF`/`SO_SNDBUF` asked for on each UDP socket; 0 keeps the kernel default.
    /// Default 4 MiB: the kernel default (~200 KiB) overflows in bursts of a few hundred
    /// calls per second (Linux caps it at `net.core.rmem_max`/`wmem_max`).
    pub udp_buffer_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            limits: MessageLimits::default(),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_connections: 1024,
            incoming_queue: 1024,
            connection_queue: 256,
            tls: None,
            udp_buffer_bytes: 4 << 20,
        }
    }
}

/// A framed, size-checked message received from the network, not yet parsed.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message bytes.
    pub bytes: Bytes,
    /// The transport it came on.
    pub kind: TransportKind,
    /// The peer's address (the packet source, used for `received`/`rport`).
    pub source: SocketAddr,
    /// Our address it arrived at.
    pub local: SocketAddr,
    /// The stream connection, `None` for UDP.
    pub connection: Option<ConnectionId>,
}

impl Received {
    /// Where a response or a reply on the same flow goes: back to the source, on the same
    /// connection for streams.
    pub fn reply_target(&self) -> Target {
        Target {
            kind: self.kind,
            addr: self.source,
            connection: self.connection,
            server_name: None,
        }
    }
}

/// Something the transport reports to its owner.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A message arrived.
    Message(Received),
    /// An outgoing connection could not be opened (RFC 3261 §8.1.3.1 transport error).
    ConnectFailed {
        /// Transport protocol.
        kind: TransportKind,
        /// The peer.
        addr: SocketAddr,
    },
}

/// Where to send bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Transport protocol.
    pub kind: TransportKind,
    /// Peer address.
    pub addr: SocketAddr,
    /// Use this connection if it is still open (responses, RFC 3261 §18.2.2).
    pub connection: Option<ConnectionId>,
    /// TLS server name to verify; the IP address when `None`.
    pub server_name: Option<String>,
}

impl Target {
    /// A target with no connection preference.
    pub fn new(kind: TransportKind, addr: SocketAddr) -> Self {
        Self {
            kind,
            addr,
            connection: None,
            server_name: None,
        }
    }
}

/// The parts of the top Via that decide where a response goes (RFC 3261 §18.2.2).
///
/// The endpoint fills it from the parsed Via, after adding `received`/`rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaRouting {
    /// The Via transport.
    pub kind: TransportKind,
    /// `sent-by` host, if it is an IP literal.
    pub sent_by_ip: Option<IpAddr>,
    /// `sent-by` port, if given.
    pub sent_by_port: Option<u16>,
    /// `received` parameter.
    pub received: Option<IpAddr>,
    /// `rport` parameter with a value (RFC 3581).
    pub rport: Option<u16>,
    /// `maddr` parameter, if it is an IP literal.
    pub maddr: Option<IpAddr>,
}

/// Where a response goes, RFC 3261 §18.2.2 with RFC 3581:
/// reliable → the request's connection (if it has closed, the transport opens one to
/// `received` or the sent-by host, at the sent-by port); else `maddr` (port from sent-by or default); else
/// `received` with `rport` (or the sent-by port); else sent-by.
///
/// Returns `None` when there is nowhere to send (a hostname sent-by with no `received`,
/// which §18.2.1 makes impossible for a conforming server).
pub fn response_target(via: &ViaRouting, request: &Received) -> Option<Target> {
    let default_port = via.kind.default_port();
    if via.kind.is_reliable()
        && request.kind.is_reliable()
        && let Some(conn) = request.connection
    {
        // The address is only used if the connection has closed meanwhile: then §18.2.2
        // opens a new one to `received` (or the sent-by host) at the sent-by port, where
        // the peer listens, not to the ephemeral source port.
        let fallback = via
            .received
            .or(via.sent_by_ip)
            .map_or(request.source, |ip| {
                SocketAddr::new(ip, via.sent_by_port.unwrap_or(default_port))
            });
        return Some(Target {
            kind: request.kind,
            addr: fallback,
            connection: Some(conn),
            server_name: None,
        });
    }
    let addr = if let Some(maddr) = via.maddr {
        SocketAddr::new(maddr, via.sent_by_port.unwrap_or(default_port))
    } else if let Some(received) = via.received {
        SocketAddr::new(
            received,
            via.rport.or(via.sent_by_port).unwrap_or(default_port),
        )
    } else {
        let ip = via.sent_by_ip?;
        SocketAddr::new(ip, via.rport.or(via.sent_by_port).unwrap_or(default_port))
    };
    Some(Target {
        kind: via.kind,
        addr,
        connection: None,
        server_name: None,
    })
}

/// Transport failures reported to the caller of [`Transport::bind`] or [`Transport::send`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Binding a listener failed.
    #[error("cannot bind {kind} {addr}: {source}")]
    Bind {
        /// Transport protocol.
        kind: TransportKind,
        /// Address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// No socket of this transport and address family to send from.
    #[error("no {kind} transport for {addr}")]
    NoTransport {
        /// Transport protocol.
        kind: TransportKind,
        /// Destination.
        addr: SocketAddr,
    },
    /// The datagram could not be sent.
    #[error("udp send to {addr}: {source}")]
    Send {
        /// Destination.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The connection's outgoing queue is full (the peer is not reading).
    #[error("queue to {addr} full")]
    QueueFull {
        /// Destination.
        addr: SocketAddr,
    },
    /// TLS asked for without [`TransportConfig::tls`].
    #[error("tls not configured")]
    TlsNotConfigured,
    /// Too many connections open.
    #[error("connection limit {0} reached")]
    TooManyConnections(usize),
    /// The transport has been shut down.
    #[error("transport shut down")]
    Shutdown,
}

/// Counters for metrics. Read with [`Transport::stats`].
#[derive(Debug, Default)]
pub struct TransportStats {
    messages_received: AtomicU64,
    messages_sent: AtomicU64,
    keepalives: AtomicU64,
    frame_errors: AtomicU64,
    parse_errors: AtomicU64,
    send_errors: AtomicU64,
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    connections_refused: AtomicU64,
}

/// A snapshot of [`TransportStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStatsSnapshot {
    /// Messages framed and handed to the owner.
    pub messages_received: u64,
    /// Messages sent (datagrams, or messages written to a stream).
    pub messages_sent: u64,
    /// CRLF keep-alives received.
    pub keepalives: u64,
    /// Messages refused by framing (size, header count, Content-Length); dropped.
    pub frame_errors: u64,
    /// Messages that framed but did not parse (reported by the owner); answered 400 or dropped.
    pub parse_errors: u64,
    /// Sends that failed (socket error, queue full, connect failed).
    pub send_errors: u64,
    /// Stream connections opened (accepted or connected).
    pub connections_opened: u64,
    /// Stream connections closed (idle, peer, error, shutdown).
    pub connections_closed: u64,
    /// Connections refused at the limit.
    pub connections_refused: u64,
}

impl TransportStatsSnapshot {
    fn add(&mut self, o: &Self) {
        self.messages_received += o.messages_received;
        self.messages_sent += o.messages_sent;
        self.keepalives += o.keepalives;
        self.frame_errors += o.frame_errors;
        self.parse_errors += o.parse_errors;
        self.send_errors += o.send_errors;
        self.connections_opened += o.connections_opened;
        self.connections_closed += o.connections_closed;
        self.connections_refused += o.connections_refused;
    }
}

impl TransportStats {
    fn snapshot(&self) -> TransportStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStatsSnapshot {
            messages_received: r(&self.messages_received),
            messages_sent: r(&self.messages_sent),
            keepalives: r(&self.keepalives),
            frame_errors: r(&self.frame_errors),
            parse_errors: r(&self.parse_errors),
            send_errors: r(&self.send_errors),
            connections_opened: r(&self.connections_opened),
            connections_closed: r(&self.connections_closed),
            connections_refused: r(&self.connections_refused),
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Asks for bigger socket buffers; a refusal or a smaller grant is logged, never fatal.
fn set_udp_buffers(sock: &UdpSocket, addr: SocketAddr, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let s = socket2::SockRef::from(sock);
    let _ = s.set_recv_buffer_size(bytes);
    let _ = s.set_send_buffer_size(bytes);
    // Linux reports twice what it granted (its own bookkeeping doubles the value).
    let granted = s.recv_buffer_size().unwrap_or(0);
    if granted < bytes {
        warn!(%addr, asked = bytes, granted, "sip udp receive buffer capped: raise net.core.rmem_max");
    } else {
        debug!(%addr, granted, "sip udp receive buffer");
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The transport layer: listeners, UDP sockets and the connection table.
///
/// Cheap to clone; every clone is the same transport. Dropping clones does not stop it:
/// call [`Transport::shutdown`].
#[derive(Debug, Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: TransportConfig,
    udp: Vec<UdpSender>,
    listen_addrs: Vec<ListenAddr>,
    conns: Mutex<ConnTable>,
    events: mpsc::Sender<TransportEvent>,
    /// By transport: UDP, TCP, TLS ([`Inner::stats_of`]).
    stats: [TransportStats; 3],
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug)]
struct UdpSender {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    queue: mpsc::Sender<(Bytes, SocketAddr)>,
}

#[derive(Debug, Default)]
struct ConnTable {
    by_key: HashMap<(TransportKind, SocketAddr), ConnectionId>,
    by_id: HashMap<ConnectionId, ConnEntry>,
}

#[derive(Debug)]
struct ConnEntry {
    kind: TransportKind,
    remote: SocketAddr,
    tx: mpsc::Sender<Bytes>,
}

impl Transport {
    /// Binds every listener in `config` and starts their tasks.
    ///
    /// Returns the transport and the receiver of everything it hears.
    pub async fn bind(
        config: TransportConfig,
    ) -> Result<(Self, mpsc::Receiver<TransportEvent>), TransportError> {
        let (events, events_rx) = mpsc::channel(config.incoming_queue.max(1));
        let (shutdown, _) = watch::channel(false);
        let mut udp = Vec::new();
        let mut listen_addrs = Vec::new();
        let mut tcp_listeners = Vec::new();
        for l in &config.listen {
            let bind_err = |source| TransportError::Bind {
                kind: l.kind,
                addr: l.addr,
                source,
            };
            match l.kind {
                TransportKind::Udp => {
                    let sock = UdpSocket::bind(l.addr).await.map_err(bind_err)?;
                    let addr = sock.local_addr().map_err(bind_err)?;
                    set_udp_buffers(&sock, addr, config.udp_buffer_bytes);
                    listen_addrs.push(ListenAddr { kind: l.kind, addr });
                    udp.push((Arc::new(sock), addr));
                }
                TransportKind::Tcp | TransportKind::Tls => {
                    if l.kind == TransportKind::Tls
                        && config
                            .tls
                            .as_ref()
                            .and_then(|t| t.server.as_ref())
                            .is_none()
                    {
                        return Err(TransportError::TlsNotConfigured);
                    }
                    let listener = TcpListener::bind(l.addr).await.map_err(bind_err)?;
                    let addr = listener.local_addr().map_err(bind_err)?;
                    listen_addrs.push(ListenAddr { kind: l.kind, addr });
                    tcp_listeners.push((l.kind, listener));
                }
            }
        }
        let mut udp_senders = Vec::new();
        let mut udp_queues = Vec::new();
        for (socket, local) in &udp {
            let (queue, rx) = mpsc::channel(config.connection_queue.max(1) * 16);
            udp_senders.push(UdpSender {
                socket: socket.clone(),
                local: *local,
                queue,
            });
            udp_queues.push((socket.clone(), rx));
        }
        let inner = Arc::new(Inner {
            config,
            udp: udp_senders,
            listen_addrs,
            conns: Mutex::new(ConnTable::default()),
            events,
            stats: Default::default(),
            next_id: AtomicU64::new(1),
            shutdown,
        });
        for ((sock, local), (_, queue)) in udp.into_iter().zip(udp_queues) {
            let span = tracing::debug_span!("sip_udp", %local);
            tokio::spawn(udp_loop(inner.clone(), sock.clone(), local).instrument(span.clone()));
            tokio::spawn(udp_writer(inner.clone(), sock, queue).instrument(span));
        }
        for (kind, listener) in tcp_listeners {
            let span = tracing::debug_span!("sip_listen", %kind, local = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()));
            tokio::spawn(accept_loop(inner.clone(), kind, listener).instrument(span));
        }
        Ok((Self { inner }, events_rx))
    }

    /// The addresses actually bound (with ports chosen by the OS for port 0).
    pub fn listen_addrs(&self) -> &[ListenAddr] {
        &self.inner.listen_addrs
    }

    /// A local address of this transport kind in the same family as `peer`, for Via
    /// `sent-by` and Contact. Falls back to any address of that kind.
    pub fn local_addr_for(&self, kind: TransportKind, peer: SocketAddr) -> Option<SocketAddr> {
        let addrs = self.inner.listen_addrs.iter().filter(|l| l.kind == kind);
        addrs
            .clone()
            .find(|l| l.addr.is_ipv4() == peer.is_ipv4())
            .or_else(|| addrs.clone().next())
            .map(|l| l.addr)
    }

    /// Counters for metrics, all transports together.
    pub fn stats(&self) -> TransportStatsSnapshot {
        let mut total = TransportStatsSnapshot::default();
        for (_, s) in self.stats_by_kind() {
            total.add(&s);
        }
        total
    }

    /// Counters for metrics, per transport (UDP, TCP, TLS).
    pub fn stats_by_kind(&self) -> [(TransportKind, TransportStatsSnapshot); 3] {
        [TransportKind::Udp, TransportKind::Tcp, TransportKind::Tls]
            .map(|k| (k, self.inner.stats_of(k).snapshot()))
    }

    /// Counts a message that arrived over `kind`, framed, but failed to parse (called by
    /// the owner).
    pub fn record_parse_error(&self, kind: TransportKind) {
        bump(&self.inner.stats_of(kind).parse_errors);
    }

    /// The receive buffer each UDP socket got from the kernel, in bytes (Linux reports
    /// twice the size it granted).
    pub fn udp_receive_buffers(&self) -> Vec<(SocketAddr, usize)> {
        self.inner
            .udp
            .iter()
            .map(|u| {
                let size = socket2::SockRef::from(u.socket.as_ref())
                    .recv_buffer_size()
                    .unwrap_or(0);
                (u.local, size)
            })
            .collect()
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.inner
            .conns
            .lock()
            .map(|t| t.by_id.len())
            .unwrap_or_default()
    }

    /// Sends `bytes` to `target` without waiting.
    ///
    /// UDP: one datagram from the socket of the matching family. Streams: the named
    /// connection if open, else any connection to the address, else a new one opened in
    /// the background (a failure arrives as [`TransportEvent::ConnectFailed`]).
    pub fn send(&self, target: &Target, bytes: Bytes) -> Result<(), TransportError> {
        if *self.inner.shutdown.borrow() {
            return Err(TransportError::Shutdown);
        }
        let result = self.send_inner(target, bytes);
        if result.is_err() {
            bump(&self.inner.stats_of(target.kind).send_errors);
        }
        result
    }

    fn send_inner(&self, target: &Target, bytes: Bytes) -> Result<(), TransportError> {
        trace!(target: "whatsip::wire", kind = %target.kind, dest = %target.addr, len = bytes.len(),
            message = %String::from_utf8_lossy(&bytes), "send");
        match target.kind {
            TransportKind::Udp => {
                let sock = self
                    .inner
                    .udp
                    .iter()
                    .find(|s| s.local.is_ipv4() == target.addr.is_ipv4())
                    .ok_or(TransportError::NoTransport {
                        kind: target.kind,
                        addr: target.addr,
                    })?;
                // Fast path straight to the socket; when it is not writable right now, the
                // socket's writer task sends it, so the caller never waits.
                match sock.socket.try_send_to(&bytes, target.addr) {
                    Ok(_) => {
                        bump(&self.inner.stats_of(TransportKind::Udp).messages_sent);
                        Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock
                        .queue
                        .try_send((bytes, target.addr))
                        .map_err(|_| TransportError::QueueFull { addr: target.addr }),
                    Err(source) => Err(TransportError::Send {
                        addr: target.addr,
                        source,
                    }),
                }
            }
            TransportKind::Tcp | TransportKind::Tls => {
                let tx = self.connection_for(target)?;
                tx.try_send(bytes).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => {
                        TransportError::QueueFull { addr: target.addr }
                    }
                    mpsc::error::TrySendError::Closed(_) => TransportError::Shutdown,
                })
            }
        }
    }

    fn connection_for(&self, target: &Target) -> Result<mpsc::Sender<Bytes>, TransportError> {
        let mut table = self
            .inner
            .conns
            .lock()
            .map_err(|_| TransportError::Shutdown)?;
        if let Some(entry) = target.connection.and_then(|id| table.by_id.get(&id))
            && !entry.tx.is_closed()
        {
            return Ok(entry.tx.clone());
        }
        if let Some(entry) = table
            .by_key
            .get(&(target.kind, target.addr))
            .and_then(|id| table.by_id.get(id))
            && !entry.tx.is_closed()
        {
            return Ok(entry.tx.clone());
        }
        if table.by_id.len() >= self.inner.config.max_connections {
            return Err(TransportError::TooManyConnections(
                self.inner.config.max_connections,
            ));
        }
        let connector = match target.kind {
            TransportKind::Tls => Some(
                self.inner
                    .config
                    .tls
                    .as_ref()
                    .and_then(|t| t.client.clone())
                    .ok_or(TransportError::TlsNotConfigured)?,
            ),
            _ => None,
        };
        let (id, tx, rx) = self.inner.register(&mut table, target.kind, target.addr);
        drop(table);
        let span =
            tracing::debug_span!("sip_conn", %id, kind = %target.kind, remote = %target.addr);
        tokio::spawn(
            connect_and_run(self.inner.clone(), id, target.clone(), connector, rx).instrument(span),
        );
        Ok(tx)
    }

    /// Stops listening, closes every connection and ends every transport task.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl Inner {
    fn stats_of(&self, kind: TransportKind) -> &TransportStats {
        match kind {
            TransportKind::Udp => &self.stats[0],
            TransportKind::Tcp => &self.stats[1],
            TransportKind::Tls => &self.stats[2],
        }
    }

    fn register(
        &self,
        table: &mut ConnTable,
        kind: TransportKind,
        remote: SocketAddr,
    ) -> (ConnectionId, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let id = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(self.config.connection_queue.max(1));
        table.by_key.insert((kind, remote), id);
        table.by_id.insert(
            id,
            ConnEntry {
                kind,
                remote,
                tx: tx.clone(),
            },
        );
        bump(&self.stats_of(kind).connections_opened);
        (id, tx, rx)
    }

    fn unregister(&self, id: ConnectionId) {
        if let Ok(mut table) = self.conns.lock()
            && let Some(entry) = table.by_id.remove(&id)
        {
            if table.by_key.get(&(entry.kind, entry.remote)) == Some(&id) {
                table.by_key.remove(&(entry.kind, entry.remote));
            }
            bump(&self.stats_of(entry.kind).connections_closed);
        }
    }

    async fn deliver(&self, received: Received) {
        trace!(target: "whatsip::wire", kind = %received.kind, source = %received.source,
            len = received.bytes.len(), message = %String::from_utf8_lossy(&received.bytes), "recv");
        bump(&self.stats_of(received.kind).messages_received);
        // Awaiting here pushes back on the socket when the owner is slow: UDP then drops in
        // the kernel (retransmissions recover), streams stop reading (TCP flow control).
        let _ = self.events.send(TransportEvent::Message(received)).await;
    }
}

async fn udp_writer(
    inner: Arc<Inner>,
    sock: Arc<UdpSocket>,
    mut queue: mpsc::Receiver<(Bytes, SocketAddr)>,
) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let (bytes, addr) = tokio::select! {
            m = queue.recv() => match m {
                Some(m) => m,
                None => return,
            },
            () = stopped(&mut shutdown) => return,
        };
        match sock.send_to(&bytes, addr).await {
            Ok(_) => bump(&inner.stats_of(TransportKind::Udp).messages_sent),
            Err(e) => {
                bump(&inner.stats_of(TransportKind::Udp).send_errors);
                debug!(%addr, error = %e, "udp send failed");
            }
        }
    }
}

async fn udp_loop(inner: Arc<Inner>, sock: Arc<UdpSocket>, local: SocketAddr) {
    let mut shutdown = inner.shutdown.subscribe();
    // One byte more than the limit, so an oversized datagram is seen as oversized.
    let cap = inner
        .config
        .limits
        .max_message_bytes
        .saturating_add(1)
        .min(65_536);
    let mut buf = vec![0u8; cap];
    loop {
        let (n, source) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors surface here on some OSes; they are not fatal.
                    debug!(error = %e, "udp recv error");
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let data = Bytes::copy_from_slice(&buf[..n]);
        match framing::frame_datagram(data, inner.config.limits) {
            Ok(Some(bytes)) => {
                inner
                    .deliver(Received {
                        bytes,
                        kind: TransportKind::Udp,
                        source,
                        local,
                        connection: None,
                    })
                    .await;
            }
            Ok(None) => bump(&inner.stats_of(TransportKind::Udp).keepalives),
            Err(e) => {
                bump(&inner.stats_of(TransportKind::Udp).frame_errors);
                debug!(%source, error = %e, "dropped datagram");
            }
        }
    }
}

async fn accept_loop(inner: Arc<Inner>, kind: TransportKind, listener: TcpListener) {
    let mut shutdown = inner.shutdown.subscribe();
    let acceptor = match kind {
        TransportKind::Tls => inner
            .config
            .tls
            .as_ref()
            .and_then(|t| t.server.clone())
            .map(tokio_rustls::TlsAcceptor::from),
        _ => None,
    };
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let local = stream.local_addr().unwrap_or(remote);
        let registered = inner.conns.lock().ok().and_then(|mut table| {
            (table.by_id.len() < inner.config.max_connections)
                .then(|| inner.register(&mut table, kind, remote))
        });
        let Some((id, _tx, rx)) = registered else {
            bump(&inner.stats_of(kind).connections_refused);
            warn!(%remote, "connection refused: limit reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::debug_span!("sip_conn", %id, %kind, %remote);
        let inner2 = inner.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(
            async move {
                debug!("accepted");
                match acceptor {
                    None => run_stream(&inner2, id, kind, stream, remote, local, rx).await,
                    Some(acceptor) => {
                        let hs = tokio::time::timeout(
                            inner2.config.connect_timeout,
                            acceptor.accept(stream),
                        )
                        .await;
                        match hs {
                            Ok(Ok(tls)) => {
                                run_stream(&inner2, id, kind, tls, remote, local, rx).await;
                            }
                            Ok(Err(e)) => warn!(error = %e, "tls handshake failed"),
                            Err(_) => warn!("tls handshake timed out"),
                        }
                    }
                }
                inner2.unregister(id);
                debug!("closed");
            }
            .instrument(span),
        );
    }
}

async fn connect_and_run(
    inner: Arc<Inner>,
    id: ConnectionId,
    target: Target,
    connector: Option<Arc<rustls::ClientConfig>>,
    rx: mpsc::Receiver<Bytes>,
) {
    let connect = async {
        let stream = TcpStream::connect(target.addr).await?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        Ok::<_, io::Error>((stream, local))
    };
    let timeout = inner.config.connect_timeout;
    let kind = target.kind;
    match (tokio::time::timeout(timeout, connect).await, connector) {
        (Ok(Ok((stream, local))), None) => {
            debug!("connected");
            run_stream(&inner, id, kind, stream, target.addr, local, rx).await;
        }
        (Ok(Ok((stream, local))), Some(config)) => {
            let name = match tls::server_name(target.server_name.as_deref(), target.addr) {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "bad tls server name");
                    return connect_failed(&inner, id, &target).await;
                }
            };
            let connector = tokio_rustls::TlsConnector::from(config);
            match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
                Ok(Ok(tls)) => {
                    debug!("tls connected");
                    run_stream(&inner, id, kind, tls, target.addr, local, rx).await;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "tls handshake failed");
                    return connect_failed(&inner, id, &target).await;
                }
                Err(_) => {
                    warn!("tls handshake timed out");
                    return connect_failed(&inner, id, &target).await;
                }
            }
        }
        (Ok(Err(e)), _) => {
            warn!(error = %e, "connect failed");
            return connect_failed(&inner, id, &target).await;
        }
        (Err(_), _) => {
            warn!("connect timed out");
            return connect_failed(&inner, id, &target).await;
        }
    }
    inner.unregister(id);
    debug!("closed");
}

async fn connect_failed(inner: &Inner, id: ConnectionId, target: &Target) {
    inner.unregister(id);
    bump(&inner.stats_of(target.kind).send_errors);
    let _ = inner
        .events
        .send(TransportEvent::ConnectFailed {
            kind: target.kind,
            addr: target.addr,
        })
        .await;
}

/// Reads, frames and writes one stream connection until EOF, error, idle or shutdown.
async fn run_stream<S>(
    inner: &Inner,
    id: ConnectionId,
    kind: TransportKind,
    mut stream: S,
    remote: SocketAddr,
    local: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framer = StreamFramer::new(inner.config.limits);
    let mut shutdown = inner.shutdown.subscribe();
    let idle = inner.config.idle_timeout;
    loop {
        let buf: &mut BytesMut = framer.buffer_mut();
        buf.reserve(4096);
        tokio::select! {
            r = stream.read_buf(buf) => match r {
                Ok(0) => {
                    debug!("peer closed");
                    break;
                }
                Ok(_) => {
                    if !drain_frames(inner, &mut framer, &mut stream, id, kind, remote, local).await {
                        break;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "read error");
                    break;
                }
            },
            m = rx.recv() => match m {
                Some(bytes) => {
                    if let Err(e) = stream.write_all(&bytes).await {
                        bump(&inner.stats_of(kind).send_errors);
                        debug!(error = %e, "write error");
                        break;
                    }
                    bump(&inner.stats_of(kind).messages_sent);
                }
                None => break,
            },
            // A fresh sleep each turn: any read or write resets the idle clock.
            () = tokio::time::sleep(idle) => {
                debug!(idle_secs = idle.as_secs(), "idle close");
                break;
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    let _ = stream.shutdown().await;
}

/// Hands every complete frame to the owner. Returns `false` when the stream must close.
async fn drain_frames<S>(
    inner: &Inner,
    framer: &mut StreamFramer,
    stream: &mut S,
    id: ConnectionId,
    kind: TransportKind,
    remote: SocketAddr,
    local: SocketAddr,
) -> bool
where
    S: AsyncWrite + Unpin,
{
    loop {
        match framer.poll_frame() {
            Ok(None) => return true,
            Ok(Some(Frame::Ping)) => {
                bump(&inner.stats_of(kind).keepalives);
                // RFC 5626 §4.4.1: pong with a single CRLF.
                if stream.write_all(b"\r\n").await.is_err() {
                    return false;
                }
            }
            Ok(Some(Frame::Message(bytes))) => {
                inner
                    .deliver(Received {
                        bytes,
                        kind,
                        source: remote,
                        local,
                        connection: Some(id),
                    })
                    .await;
            }
            Err(e) => {
                bump(&inner.stats_of(kind).frame_errors);
                warn!(%remote, error = %e, "framing error, closing connection");
                // RFC 3261 §18.3: a stream message without Content-Length is an error;
                // answer 400 when the request can be answered, then close.
                if e == FrameError::MissingContentLength
                    && let Some(head) = framer.pending_head()
                    && let Some(resp) = crate::message::error_response(
                        head,
                        &crate::message::ParseError::MissingHeader("Content-Length"),
                    )
                {
                    let _ = stream.write_all(&resp.to_bytes()).await;
                }
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests;
