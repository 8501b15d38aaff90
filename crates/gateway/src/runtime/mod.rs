//! The gateway's tokio runtime: binds every listener from the [`Config`] and drives one
//! task per call.
//!
//! ```text
//!  WebhookServer ──SideEvent──▶ ┌────────────┐ ──spawn──▶ call task (InboundCall core,
//!  SIP Endpoint ──requests────▶ │ dispatcher │ ──cmds───▶   WhatsApp leg, PBX INVITE,
//!                               └────────────┘              PBX media relay task)
//! ```
//!
//! - The **dispatcher** task owns the event streams of the webhook server and of the SIP
//!   endpoint. It routes a fresh `connect` through the dial plan and spawns a call task,
//!   hands `terminate` webhooks and in-dialog SIP requests to the call they belong to, and
//!   remembers ended call ids ([`crate::call::EndedCalls`]) so late or repeated webhooks
//!   never start a ghost call.
//! - Each **call task** owns one [`crate::call::InboundCall`] core and follows the drive
//!   loop of STYLE.md §1: feed one input with the clock read once, drain `poll_action`,
//!   carry each action out, re-arm the ring timer. Every task working for the call is
//!   instrumented with the span `call{wa_call_id, sip_call_id, dir}`.
//!
//! What a call did is published as [`CallMilestone`]s on a broadcast channel
//! ([`GatewayHandle::subscribe`]); the demo prints them as a timeline.

mod call;
mod clock;
mod dispatch;
mod milestone;
mod ops_admin;
mod ops_cdr;
mod outbound;
mod outbound_admin;
mod pbx;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span};
use whatsip_media::driver::SocketBuffers;
use whatsip_media::sdp::PortAllocator;
use whatsip_media::webrtc::{EndpointConfig as WebRtcConfig, WebRtcEndpoint};
use whatsip_meta::graph::ApiVersion;
use whatsip_meta::rt::{
    GraphClient, GraphClientConfig, GraphSide, TlsIdentity, WebhookServer, WebhookServerConfig,
};
use whatsip_meta::{AccessToken, AppSecret, GuardConfig, VerifyToken};
use whatsip_sip::endpoint::{Endpoint, EndpointConfig, PingTarget, TrunkUpdate};
use whatsip_sip::transport::{ListenAddr, Target, TlsSettings, TransportKind};

use crate::config::{Config, Transport};

pub use milestone::{CallMilestone, MilestoneKind};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A setting cannot be used as given (names the key).
    #[error("config `{key}`: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot start {what}: {reason}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The error text.
        reason: String,
    },
}

/// Starts the gateway.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Binds the webhook server, the SIP listeners and the WhatsApp media socket from
    /// `config` and starts the dispatcher. Returns once everything listens.
    pub async fn start(config: Config) -> Result<GatewayHandle, RuntimeError> {
        let config = Arc::new(config);
        let graph = GraphHandles::new(&config)?;
        let pbx_target = pbx_target(&config).await?;

        let (webhook, webhook_rx) = start_webhook(&config).await?;
        let (sip, sip_rx) = start_sip(&config, &pbx_target).await?;

        let mut ports = PortAllocator::new(config.media.rtp_ports.clone()).map_err(|e| {
            RuntimeError::Config {
                key: "media.rtp_port_min",
                reason: e.to_string(),
            }
        })?;
        let media_ip = media_ip(&config)?;
        let webrtc = start_webrtc(&config, &mut ports, media_ip).await?;

        let cdr = ops_cdr::CdrWriter::start(&config.cdr)?;
        let (milestones, _) = broadcast::channel(1024);
        let shared = Arc::new(call::Shared {
            config: config.clone(),
            sip: sip.clone(),
            trunk: std::sync::RwLock::new(pbx_target),
            webrtc,
            ports: Mutex::new(ports),
            media_ip,
            milestones: milestones.clone(),
            registry: call::Registry::default(),
            outbound_live: std::sync::atomic::AtomicUsize::new(0),
            cdr,
            metrics: Arc::new(crate::ops::metrics::Metrics::new()),
            health: ops_admin::Health::default(),
            graph: std::sync::RwLock::new(graph),
            live_config: crate::config::SharedConfig::new((*config).clone()),
            permissions: Arc::new(Mutex::new(crate::permission::PermissionTracker::new(
                (&config.outbound).into(),
            ))),
        });
        let (commands, commands_rx) = mpsc::channel(16);
        let dispatcher = dispatch::Dispatcher::new(shared.clone());
        let task = tokio::spawn(
            dispatcher
                .run(webhook_rx, sip_rx, commands_rx)
                .instrument(info_span!("dispatcher")),
        );
        info!(
            webhook = %webhook.local_addr(),
            sip = ?sip.transport().listen_addrs(),
            pbx = %shared.pbx_target().addr,
            "gateway started"
        );
        let admin = match config.admin.listen {
            Some(listen) => Some(
                ops_admin::AdminServer::start(
                    listen,
                    shared.clone(),
                    webhook.stats_handle(),
                    webhook.local_addr(),
                )
                .await?,
            ),
            None => None,
        };
        Ok(GatewayHandle {
            shared,
            webhook: Some(webhook),
            commands,
            task: Some(task),
            admin,
        })
    }
}

/// A running gateway. Dropping it without [`GatewayHandle::shutdown`] aborts the
/// dispatcher; live calls then end when their legs notice.
#[derive(Debug)]
pub struct GatewayHandle {
    shared: Arc<call::Shared>,
    webhook: Option<WebhookServer>,
    commands: mpsc::Sender<dispatch::Command>,
    task: Option<JoinHandle<()>>,
    admin: Option<ops_admin::AdminServer>,
}

impl GatewayHandle {
    /// Milestones of every call from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallMilestone> {
        self.shared.milestones.subscribe()
    }

    /// Calls whose task is still running (both legs not yet released), both directions.
    pub fn calls_in_progress(&self) -> usize {
        self.shared.registry.len()
            + self
                .shared
                .outbound_live
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Re-reads the config file (SIGHUP) and applies it to new calls: the dial plan, the
    /// PBX trunk (address, transport, OPTIONS ping, digest credentials both ways), the Meta
    /// credentials (access token, app secret, verify token), the Graph API settings and the
    /// business numbers. Live calls keep the config, trunk and Graph side they started
    /// with (a rotated access token reaches their later Graph requests too). Returns the
    /// changed keys that only a restart applies (listeners, port ranges, log format). On
    /// error nothing changes.
    pub async fn reload_config(&self) -> Result<Vec<&'static str>, ReloadError> {
        self.reload_config_with(&crate::config::ProcessEnvironment)
            .await
    }

    /// [`GatewayHandle::reload_config`] with secrets resolved through `env`.
    pub async fn reload_config_with(
        &self,
        env: &dyn crate::config::Environment,
    ) -> Result<Vec<&'static str>, ReloadError> {
        let result = self.apply_reload(env).await;
        let label = crate::ops::metrics::ReloadLabels {
            result: if result.is_ok() { "applied" } else { "refused" },
        };
        self.shared
            .metrics
            .config_reloads
            .get_or_create(&label)
            .inc();
        result
    }

    async fn apply_reload(
        &self,
        env: &dyn crate::config::Environment,
    ) -> Result<Vec<&'static str>, ReloadError> {
        let old = self.shared.live();
        // Everything that can fail is prepared before anything is swapped.
        let new = Arc::new(crate::config::Config::load_with(&old.source, env)?);
        let trunk = pbx_target(&new).await?;
        let graph = if old.meta.graph_base_url == new.meta.graph_base_url
            && old.meta.api_version == new.meta.api_version
            && old.meta.request_timeout == new.meta.request_timeout
        {
            let client = self.shared.graph_client();
            client.set_access_token(AccessToken::new(new.meta.access_token.expose()));
            GraphHandles::with_client(&new, client)?
        } else {
            GraphHandles::new(&new)?
        };
        let update = trunk_update(&new, &trunk);
        let r = self.shared.live_config.replace(new.clone());
        *self
            .shared
            .trunk
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = trunk;
        *self
            .shared
            .graph
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = graph;
        if let Err(e) = self.shared.sip.update_trunk(update).await {
            tracing::warn!(error = %e, "sip endpoint did not take the new trunk settings");
        }
        if let Some(w) = &self.webhook {
            w.set_credentials(
                AppSecret::new(new.meta.app_secret.expose()),
                VerifyToken::new(new.meta.verify_token.expose()),
            );
        }
        let changed = changed_sections(&old, &new);
        info!(
            dial_plan_rules = new.dialplan.len(),
            business_numbers = new.business_numbers.len(),
            pbx = %self.shared.pbx_target().addr,
            ?changed,
            restart_required = ?r.restart_required,
            "config reloaded"
        );
        Ok(r.restart_required)
    }

    /// The admin server's address (`/metrics`, `/healthz`, `/readyz`), if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(ops_admin::AdminServer::local_addr)
    }

    /// The gateway's Prometheus metrics.
    pub fn metrics(&self) -> Arc<crate::ops::metrics::Metrics> {
        self.shared.metrics.clone()
    }

    /// PBX-leg RTP port pairs currently allocated (the WhatsApp socket's pair not counted).
    pub fn media_ports_in_use(&self) -> usize {
        self.shared
            .ports
            .lock()
            .map_or(0, |p| p.in_use().saturating_sub(1))
    }

    /// The webhook listener's address.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook.as_ref().map(WebhookServer::local_addr)
    }

    /// The SIP listeners' addresses.
    pub fn sip_addrs(&self) -> Vec<(TransportKind, SocketAddr)> {
        self.shared
            .sip
            .transport()
            .listen_addrs()
            .iter()
            .map(|l| (l.kind, l.addr))
            .collect()
    }

    /// The SIGTERM path: stops taking new calls (new `connect` webhooks get `reject`, new
    /// INVITEs 503 with Retry-After), lets live calls finish for up to `limit`, then
    /// [`GatewayHandle::shutdown`] ends the rest on both legs (their CDRs are written).
    pub async fn drain(self, limit: Duration) {
        if self.commands.send(dispatch::Command::Drain).await.is_ok() {
            let commands = self.commands.clone();
            let live = || async {
                let (reply, rx) = oneshot::channel();
                if commands
                    .send(dispatch::Command::LiveTasks { reply })
                    .await
                    .is_err()
                {
                    return 0;
                }
                rx.await.unwrap_or(0)
            };
            let waited = tokio::time::timeout(limit, async {
                while live().await > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            match waited {
                Ok(()) => info!("drained: no live call left"),
                Err(_) => info!(
                    calls = self.calls_in_progress(),
                    "drain time over: ending the remaining calls"
                ),
            }
        }
        self.shutdown().await;
    }

    /// Stops taking calls, ends every live call on both legs (BYE/CANCEL toward the PBX,
    /// `terminate`/`reject` toward Meta), then closes the listeners.
    pub async fn shutdown(mut self) {
        let (done, rx) = oneshot::channel();
        if self
            .commands
            .send(dispatch::Command::Shutdown { done })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(40), rx).await;
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(w) = self.webhook.take() {
            w.shutdown().await;
        }
        self.shared.sip.shutdown().await;
        if let Some(admin) = self.admin.take() {
            admin.shutdown().await;
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Why a config reload was refused (the running config stays as it was).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file does not load or validate.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The new settings cannot be applied (unresolvable PBX host, bad Graph URL, ...).
    #[error(transparent)]
    Apply(#[from] RuntimeError),
}

/// The Graph API client and the WhatsApp side of each business number.
#[derive(Debug, Clone)]
pub(crate) struct GraphHandles {
    client: GraphClient,
    /// By phone-number id.
    pub(crate) sides: Arc<HashMap<String, GraphSide>>,
}

impl GraphHandles {
    fn new(config: &Config) -> Result<Self, RuntimeError> {
        Self::with_client(config, graph_client(config)?)
    }

    fn with_client(config: &Config, client: GraphClient) -> Result<Self, RuntimeError> {
        let mut sides = HashMap::new();
        for b in &config.business_numbers {
            let id =
                whatsip_meta::PhoneNumberId::parse(b.phone_number_id.as_str()).map_err(|e| {
                    RuntimeError::Config {
                        key: "business_numbers.phone_number_id",
                        reason: e.to_string(),
                    }
                })?;
            sides.insert(
                b.phone_number_id.as_str().to_owned(),
                GraphSide::new(client.clone(), id),
            );
        }
        Ok(Self {
            client,
            sides: Arc::new(sides),
        })
    }

    pub(crate) fn client(&self) -> GraphClient {
        self.client.clone()
    }
}

fn graph_client(config: &Config) -> Result<GraphClient, RuntimeError> {
    let api_version =
        ApiVersion::parse(&config.meta.api_version).map_err(|e| RuntimeError::Config {
            key: "meta.api_version",
            reason: e.to_string(),
        })?;
    GraphClient::new(
        GraphClientConfig {
            base_url: config.meta.graph_base_url.clone(),
            api_version,
            request_timeout: config.meta.request_timeout,
            ..GraphClientConfig::default()
        },
        AccessToken::new(config.meta.access_token.expose()),
    )
    .map_err(|e| RuntimeError::Config {
        key: "meta.graph_base_url",
        reason: e.to_string(),
    })
}

/// The config sections that differ (for the reload log line).
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check(
        "dialplan",
        format!("{:?}", old.dialplan) != format!("{:?}", new.dialplan),
    );
    check("pbx", format!("{:?}", old.pbx) != format!("{:?}", new.pbx));
    // Debug of the secrets is redacted: compare the values themselves
    check(
        "meta",
        format!("{:?}", old.meta) != format!("{:?}", new.meta)
            || old.meta.access_token.expose() != new.meta.access_token.expose()
            || old.meta.app_secret.expose() != new.meta.app_secret.expose()
            || old.meta.verify_token.expose() != new.meta.verify_token.expose(),
    );
    check(
        "business_numbers",
        format!("{:?}", old.business_numbers) != format!("{:?}", new.business_numbers),
    );
    check(
        "outbound",
        format!("{:?}", old.outbound) != format!("{:?}", new.outbound),
    );
    check(
        "headers",
        format!("{:?}", old.headers) != format!("{:?}", new.headers),
    );
    changed
}

async fn start_webhook(
    config: &Config,
) -> Result<(WebhookServer, mpsc::Receiver<whatsip_meta::WebhookEvent>), RuntimeError> {
    let tls = match &config.webhook.tls {
        Some(files) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| RuntimeError::Config {
                    key: "webhook.tls_cert",
                    reason: format!("{}: {e}", p.display()),
                })
            };
            let (cert, key) = (read(&files.cert)?, read(&files.key)?);
            Some(
                TlsIdentity::from_pem(&cert, &key).map_err(|e| RuntimeError::Config {
                    key: "webhook.tls_cert",
                    reason: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let server_config = WebhookServerConfig {
        listen: config.webhook.listen,
        path: config.webhook.path.clone(),
        guard: GuardConfig {
            max_connect_age: config.webhook.max_event_age,
            ..GuardConfig::default()
        },
        tls,
        ..WebhookServerConfig::default()
    };
    WebhookServer::bind(
        server_config,
        AppSecret::new(config.meta.app_secret.expose()),
        VerifyToken::new(config.meta.verify_token.expose()),
    )
    .await
    .map_err(|e| RuntimeError::Bind {
        what: "webhook server",
        reason: e.to_string(),
    })
}

pub(crate) fn transport_kind(t: Transport) -> TransportKind {
    match t {
        Transport::Udp => TransportKind::Udp,
        Transport::Tcp => TransportKind::Tcp,
        Transport::Tls => TransportKind::Tls,
    }
}

async fn pbx_target(config: &Config) -> Result<Target, RuntimeError> {
    let kind = transport_kind(config.pbx.transport);
    let addr = tokio::net::lookup_host((config.pbx.host.as_str(), config.pbx.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| RuntimeError::Config {
            key: "pbx.address",
            reason: format!("cannot resolve {}", config.pbx.host),
        })?;
    let mut target = Target::new(kind, addr);
    if kind == TransportKind::Tls && config.pbx.host.parse::<IpAddr>().is_err() {
        target.server_name = Some(config.pbx.host.clone());
    }
    Ok(target)
}

async fn start_sip(
    config: &Config,
    pbx: &Target,
) -> Result<
    (
        Endpoint,
        mpsc::Receiver<whatsip_sip::endpoint::EndpointEvent>,
    ),
    RuntimeError,
> {
    let mut ep = EndpointConfig {
        user_agent: config.sip.user_agent.clone(),
        advertised_ip: config
            .sip
            .advertised_host
            .as_deref()
            .and_then(|h| h.parse().ok()),
        shutdown_grace: Duration::from_secs(5),
        ..EndpointConfig::default()
    };
    for l in &config.sip.listen {
        ep.transport.listen.push(ListenAddr {
            kind: transport_kind(l.transport),
            addr: l.address,
        });
        if let Some(files) = &l.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| RuntimeError::Config {
                    key: "sip.listen.tls_cert",
                    reason: format!("{}: {e}", p.display()),
                })
            };
            let (cert, key) = (read(&files.cert)?, read(&files.key)?);
            ep.transport.tls = Some(TlsSettings::from_pem(&cert, &key, None).map_err(|e| {
                RuntimeError::Config {
                    key: "sip.listen.tls_cert",
                    reason: e.to_string(),
                }
            })?);
        }
    }
    // A TLS trunk: trust the configured CA certificates for the PBX's certificate.
    if let Some(ca_path) = &config.pbx.tls_ca {
        let ca = std::fs::read(ca_path).map_err(|e| RuntimeError::Config {
            key: "pbx.tls_ca",
            reason: format!("{}: {e}", ca_path.display()),
        })?;
        let client = TlsSettings::client_from_pem(&ca).map_err(|e| RuntimeError::Config {
            key: "pbx.tls_ca",
            reason: format!("{}: {e}", ca_path.display()),
        })?;
        let tls = ep.transport.tls.get_or_insert_with(TlsSettings::default);
        tls.client = client.client;
    }
    let trunk = trunk_update(config, pbx);
    ep.ping = trunk.ping;
    ep.credentials = trunk.credentials;
    ep.server_auth = trunk.server_auth;
    Endpoint::start(ep).await.map_err(|e| RuntimeError::Bind {
        what: "sip endpoint",
        reason: e.to_string(),
    })
}

/// The SIP endpoint's trunk settings from `config`: OPTIONS ping of the PBX, the
/// credentials answering its challenges, and the account its INVITEs must authenticate as.
fn trunk_update(config: &Config, pbx: &Target) -> TrunkUpdate {
    let mut update = TrunkUpdate::default();
    if let Some(interval) = config.pbx.options_ping_interval
        && let Ok(uri) = whatsip_sip::Uri::parse(&format!("sip:{}", config.pbx.domain))
    {
        update.ping.push(PingTarget {
            target: pbx.clone(),
            uri,
            interval,
        });
    }
    if let Some(auth) = &config.pbx.outbound_auth {
        update.credentials = Some(whatsip_sip::endpoint::TrunkCredentials {
            username: auth.username.clone(),
            password: auth.password.expose().to_owned(),
            realm: auth.realm.clone(),
        });
    }
    // INVITEs from the PBX (business-initiated calls) must answer a digest challenge
    if let Some(auth) = &config.pbx.inbound_auth {
        update.server_auth = Some(whatsip_sip::endpoint::ServerAuth::new(
            auth.realm.as_deref().unwrap_or(&config.pbx.domain),
            &auth.username,
            auth.password.expose(),
        ));
    }
    update
}

fn media_ip(config: &Config) -> Result<IpAddr, RuntimeError> {
    match config.media.public_address {
        Some(ip) => Ok(ip),
        None if !config.media.bind.is_unspecified() => Ok(config.media.bind),
        None => Err(RuntimeError::Config {
            key: "media.public_address",
            reason: "needed when media.bind is an unspecified address (it goes into SDP and ICE)"
                .into(),
        }),
    }
}

async fn start_webrtc(
    config: &Config,
    ports: &mut PortAllocator,
    media_ip: IpAddr,
) -> Result<WebRtcEndpoint, RuntimeError> {
    // The first `media.webrtc_sockets` ports of the RTP range (whole pairs, consecutive)
    // carry every WhatsApp call: each socket has its own worker task, so receiving and
    // decrypting spread over cores; calls are told apart by ICE ufrag. Firewalls need only
    // the configured range.
    let n = config.media.webrtc_sockets.max(1);
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n.div_ceil(2) {
        let port = ports.allocate().map_err(|e| RuntimeError::Config {
            key: "media.webrtc_sockets",
            reason: e.to_string(),
        })?;
        for p in [port, port + 1].into_iter().take(n - sockets.len()) {
            sockets.push((
                SocketAddr::new(config.media.bind, p),
                Some(SocketAddr::new(media_ip, p)),
            ));
        }
    }
    let cfg = WebRtcConfig {
        sockets,
        buffers: SocketBuffers::both(config.media.webrtc_socket_buffer_bytes),
        ..WebRtcConfig::default()
    };
    WebRtcEndpoint::bind(cfg)
        .await
        .map_err(|e| RuntimeError::Bind {
            what: "whatsapp media socket",
            reason: e.to_string(),
        })
}
