//! The TOML configuration: read once into serde structs that refuse unknown keys, then
//! converted into validated types. Every problem names the file, line, column and key.
//!
//! Secrets (Meta access token, app secret, webhook verify token, SIP digest passwords) are
//! never written inline: they come from `{ env = "VAR" }` or `{ file = "/path" }`, are
//! resolved at load, and print `<redacted>` in `Debug`.
//!
//! Only the gateway reads files or env (STYLE.md §7); the [`Environment`] trait is the seam
//! tests and the embedded demo use instead of the process environment.

pub(crate) mod error;
pub(crate) mod raw;
mod secret;
mod shared;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::dialplan::{self, DialPlan, DialPlanDefaults};
use crate::types::{E164, PhoneNumberId, SipStatus};
pub(crate) use error::cut;
pub use error::{ConfigError, Location, Problem};
use error::{Diag, location_of};
use raw::{RawConfig, S};
pub use secret::{Environment, ProcessEnvironment, Secret};
pub use shared::{Reloaded, SharedConfig};

/// The embedded demo config: the gateway against the Meta simulator on 127.0.0.1.
pub const DEMO_TOML: &str = include_str!("../../../../config/demo.toml");
/// Access token the demo config expects (the simulator accepts it).
pub const DEMO_ACCESS_TOKEN: &str = "demo-access-token";
/// App secret the demo config and the simulator share for webhook signatures.
pub const DEMO_APP_SECRET: &str = "demo-app-secret";
/// Webhook verify token of the demo.
pub const DEMO_VERIFY_TOKEN: &str = "demo-verify-token";

/// Business-initiated calling is unavailable for business numbers with these country
/// codes (Calling API notes §7.2, Mar 2026: USA and Canada (+1), Egypt, Vietnam, Nigeria).
pub const BIC_BLOCKED_COUNTRY_CODES: [&str; 4] = ["1", "20", "84", "234"];

/// The validated configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where it was loaded from (`<embedded demo>` for the demo).
    pub source: PathBuf,
    /// Graph API and webhook credentials.
    pub meta: MetaConfig,
    /// The business numbers this gateway serves.
    pub business_numbers: Vec<BusinessNumber>,
    /// Webhook HTTP listener.
    pub webhook: WebhookConfig,
    /// SIP listeners.
    pub sip: SipConfig,
    /// The PBX trunk.
    pub pbx: PbxConfig,
    /// RTP and WebRTC media.
    pub media: MediaConfig,
    /// SIP header names carrying the WhatsApp context to the PBX.
    pub headers: ContextHeaders,
    /// Logging.
    pub logging: LoggingConfig,
    /// Call detail records.
    pub cdr: CdrConfig,
    /// Admin and metrics HTTP listener.
    pub admin: AdminConfig,
    /// Business-initiated call policy (permissions, consent guard).
    pub outbound: OutboundPolicy,
    /// The compiled dial plan.
    pub dialplan: DialPlan,
    /// Legal but suspicious settings (shown by `check-config`, logged at start).
    pub warnings: Vec<Problem>,
}

/// `[meta]`.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// e.g. `https://graph.facebook.com` (no trailing slash).
    pub graph_base_url: String,
    /// e.g. `v23.0`.
    pub api_version: String,
    /// The WhatsApp Business Account id, if given.
    pub waba_id: Option<String>,
    /// `Authorization: Bearer` token for the Graph API.
    pub access_token: Secret,
    /// App secret: key of the `X-Hub-Signature-256` HMAC on webhooks.
    pub app_secret: Secret,
    /// Token compared with `hub.verify_token` in the subscription handshake.
    pub verify_token: Secret,
    /// Timeout of one Graph request.
    pub request_timeout: Duration,
}

/// One `[[business_numbers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessNumber {
    /// The Graph id used in `POST /<PHONE_NUMBER_ID>/calls`.
    pub phone_number_id: PhoneNumberId,
    /// The number itself.
    pub number: E164,
    /// A label for logs and the admin API.
    pub label: Option<String>,
    /// Whether the PBX may place business-initiated calls from this number.
    pub business_initiated_calls: bool,
}

/// Paths of a PEM certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[webhook]`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Callback path, e.g. `/webhook`.
    pub path: String,
    /// TLS on the listener; without it run behind a TLS-terminating proxy (Meta requires a
    /// valid certificate).
    pub tls: Option<TlsFiles>,
    /// `connect` webhooks older than this (by their `timestamp`) are ignored as stale.
    pub max_event_age: Duration,
}

/// SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Self::Udp),
            "tcp" => Some(Self::Tcp),
            "tls" => Some(Self::Tls),
            _ => None,
        }
    }

    /// Default port: 5061 for TLS, 5060 otherwise.
    pub fn default_port(self) -> u16 {
        if self == Self::Tls { 5061 } else { 5060 }
    }
}

/// One `[[sip.listen]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipListen {
    /// Transport.
    pub transport: Transport,
    /// Address.
    pub address: SocketAddr,
    /// Certificate and key, TLS only.
    pub tls: Option<TlsFiles>,
}

/// `[sip]`.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// Listeners.
    pub listen: Vec<SipListen>,
    /// `User-Agent` / `Server` header value.
    pub user_agent: String,
    /// Host written into Via/Contact when it differs from the bound address (NAT).
    pub advertised_host: Option<String>,
}

/// Digest credentials.
#[derive(Debug, Clone)]
pub struct DigestCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Realm (inbound: the realm whatsip challenges with; outbound: accept only this realm).
    pub realm: Option<String>,
}

/// An IP network for source ACLs, e.g. `10.0.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

/// An audio codec on the PBX leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 (16 kHz audio, 8 kHz RTP clock).
    G722,
    /// Opus passed through from WhatsApp untouched when the PBX takes it.
    Opus,
}

impl Codec {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pcmu" | "g711u" | "ulaw" => Some(Self::Pcmu),
            "pcma" | "g711a" | "alaw" => Some(Self::Pcma),
            "g722" | "g.722" => Some(Self::G722),
            "opus" => Some(Self::Opus),
            _ => None,
        }
    }
}

/// `[pbx]`.
#[derive(Debug, Clone)]
pub struct PbxConfig {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport toward the PBX.
    pub transport: Transport,
    /// Domain for generated URIs (defaults to `host`).
    pub domain: String,
    /// Credentials whatsip answers the PBX's challenges with.
    pub outbound_auth: Option<DigestCredentials>,
    /// Credentials whatsip challenges INVITEs from the PBX with.
    pub inbound_auth: Option<DigestCredentials>,
    /// Source networks from which INVITEs are accepted (empty: any, then `inbound_auth` is required).
    pub allowed_sources: Vec<IpNet>,
    /// Codecs offered to / accepted from the PBX, in preference order.
    pub codecs: Vec<Codec>,
    /// OPTIONS keepalive toward the PBX; `None` when off.
    pub options_ping_interval: Option<Duration>,
    /// With `transport = "tls"`: the PEM file of the CA certificates trusted for the PBX's
    /// certificate ([`DEFAULT_TLS_CA`], the system bundle, unless set); `None` otherwise.
    pub tls_ca: Option<PathBuf>,
}

/// The CA bundle a TLS trunk trusts when `pbx.tls_ca` is not set (Debian's
/// `ca-certificates` package).
pub const DEFAULT_TLS_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `[media]`.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address RTP and ICE sockets bind to.
    pub bind: IpAddr,
    /// Address announced in SDP and ICE candidates when behind NAT.
    pub public_address: Option<IpAddr>,
    /// RTP port range (even start; RTP on even, RTCP on odd ports).
    pub rtp_ports: RangeInclusive<u16>,
    /// Opus encoder complexity 0 to 10.
    pub opus_complexity: u8,
    /// Packet time toward the PBX.
    pub ptime: Duration,
    /// Shared WhatsApp (WebRTC) sockets, each with its own worker task, on consecutive RTP
    /// pairs at the start of `rtp_ports`.
    pub webrtc_sockets: usize,
    /// `SO_RCVBUF`/`SO_SNDBUF` requested on each WhatsApp socket; 0 keeps the kernel default.
    pub webrtc_socket_buffer_bytes: usize,
    /// `SO_RCVBUF`/`SO_SNDBUF` requested on each call's PBX RTP socket; 0 keeps the kernel
    /// default.
    pub rtp_socket_buffer_bytes: usize,
    /// When transcoding: frames the jitter buffer of each leg holds before play-out
    /// (0: play what has arrived at the next tick; the far end de-jitters). Opus
    /// pass-through forwards packets as they arrive and has none.
    pub jitter_buffer_frames: usize,
}

/// Default of `media.webrtc_sockets`: one per core the process may use, at most 8.
#[must_use]
pub fn default_webrtc_sockets() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8))
}

/// `[headers]`: names of the SIP headers carrying WhatsApp context; `None` when disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextHeaders {
    /// The WhatsApp call id.
    pub call_id: Option<String>,
    /// The customer's number (E.164).
    pub customer_number: Option<String>,
    /// The customer's WhatsApp profile name.
    pub customer_name: Option<String>,
    /// The call button payload.
    pub cta_payload: Option<String>,
    /// The deep-link payload.
    pub deeplink_payload: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[logging]`.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// Format.
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,whatsip::wire=trace`.
    pub level: String,
    /// Mask phone numbers and names at `info` and above.
    pub redact_phone_numbers: bool,
}

/// `[cdr]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrConfig {
    /// The SQLite CDR database; `None` disables CDRs, `:memory:` keeps them in memory.
    pub path: Option<PathBuf>,
    /// Append-only JSON-lines export of final records, for log shippers.
    pub jsonl_path: Option<PathBuf>,
    /// Per-minute prices by country calling code for business-initiated calls.
    pub rate_card: Option<whatsip_cdr::RateCard>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Admin and metrics listener; `None` disables it.
    pub listen: Option<SocketAddr>,
    /// On SIGTERM, how long live calls may go on before they are ended.
    pub drain_timeout: Duration,
}

/// `[outbound]`: business-initiated call policy.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    /// Default for rules: send `call_permission_request` when the user has not granted permission.
    pub auto_permission_request: bool,
    /// Body text of that request.
    pub permission_request_text: Option<String>,
    /// Refuse calls to a user after this many consecutive unanswered or rejected ones
    /// (Meta nudges the user at 2 and revokes permission at 4).
    pub max_consecutive_unanswered: u32,
    /// Cap on connected business-initiated calls per user per 24 h (Meta's is 100).
    pub max_connected_calls_per_user_per_day: u32,
    /// How long the WhatsApp user may ring before the PBX gets 480.
    pub ring_timeout: Duration,
    /// SIP status sent to the PBX when the user declines: 603 or 486.
    pub rejected_status: SipStatus,
    /// Send generated ringback as early media (183) while the user's phone rings.
    pub early_ringback: bool,
}

impl Config {
    /// Reads and validates `path`, resolving secrets from the process environment and files.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, &ProcessEnvironment)
    }

    /// Like [`Config::load`] with secrets resolved through `env`.
    pub fn load_with(path: impl AsRef<Path>, env: &dyn Environment) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&src, path, env)
    }

    /// Parses `src` as if read from `origin`.
    pub fn from_toml(src: &str, origin: &Path, env: &dyn Environment) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| syntax_error(&e, src, origin))?;
        let mut diag = Diag::new(origin, src);
        let cfg = convert(&raw, origin, env, &mut diag);
        match cfg {
            Some(mut cfg) if diag.is_clean() => {
                cfg.warnings = diag.take_warnings();
                Ok(cfg)
            }
            _ => Err(ConfigError::Invalid(diag.into_problems())),
        }
    }

    /// The embedded demo config (`config/demo.toml`) with the demo secrets.
    pub fn demo() -> Result<Self, ConfigError> {
        Self::from_toml(
            DEMO_TOML,
            Path::new("<embedded demo>"),
            &secret::DemoEnvironment,
        )
    }

    /// The business number with this Graph id.
    pub fn business_by_id(&self, id: &PhoneNumberId) -> Option<&BusinessNumber> {
        self.business_numbers
            .iter()
            .find(|b| &b.phone_number_id == id)
    }

    /// The business number entry for this number.
    pub fn business_by_number(&self, number: &E164) -> Option<&BusinessNumber> {
        self.business_numbers.iter().find(|b| &b.number == number)
    }
}

fn syntax_error(e: &toml::de::Error, src: &str, origin: &Path) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let at = location_of(origin, src, span.start);
    let key = src
        .get(span.clone())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 64 && !k.contains('\n'))
        .map(str::to_owned);
    let message = e.message().trim().to_owned();
    let (key, message) = match key {
        Some(k) if message.starts_with("unknown field") => {
            let full = match enclosing_table(src, span.start) {
                Some(table) => format!("{table}.{k}"),
                None => k,
            };
            let message = format!("unknown key `{full}`: {message}");
            (Some(full), message)
        }
        other => (other, message),
    };
    ConfigError::Syntax { at, key, message }
}

/// The `[table]` or `[[array]]` header above byte `offset`, for naming unknown keys.
fn enclosing_table(src: &str, offset: usize) -> Option<String> {
    let before = src.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    before[..line_start].lines().rev().find_map(|line| {
        let t = line.trim();
        let inner = t
            .strip_prefix("[[")
            .and_then(|x| x.split_once("]]"))
            .map(|(x, _)| x)
            .or_else(|| {
                t.strip_prefix('[')
                    .and_then(|x| x.split_once(']'))
                    .map(|(x, _)| x)
            })?;
        Some(inner.trim().to_owned())
    })
}

/// RFC 3261 `token` characters.
pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

// --- conversion --------------------------------------------------------------------------

fn span_of<T>(s: &Option<S<T>>) -> std::ops::Range<usize> {
    s.as_ref().map_or(0..0, Spanned::span)
}

fn socket(v: &S<String>, key: &str, diag: &mut Diag<'_>) -> Option<SocketAddr> {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diag.error(
                v.span(),
                key,
                format!(
                    "`{}` is not an address like 0.0.0.0:5060 or [::]:5060",
                    cut(v.get_ref())
                ),
            );
            None
        }
    }
}

fn ip(v: &S<String>, key: &str, diag: &mut Diag<'_>) -> Option<IpAddr> {
    match v.get_ref().parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diag.error(
                v.span(),
                key,
                format!("`{}` is not an IP address", cut(v.get_ref())),
            );
            None
        }
    }
}

fn tls_files(
    cert: &Option<S<String>>,
    key: &Option<S<String>>,
    k: &str,
    span: std::ops::Range<usize>,
    diag: &mut Diag<'_>,
) -> Option<TlsFiles> {
    match (cert, key) {
        (None, None) => None,
        (Some(c), Some(kf)) => {
            for (f, name) in [(c, "tls_cert"), (kf, "tls_key")] {
                if let Err(e) = std::fs::metadata(f.get_ref()) {
                    diag.error(
                        f.span(),
                        format!("{k}.{name}"),
                        format!("cannot read `{}`: {e}", cut(f.get_ref())),
                    );
                }
            }
            Some(TlsFiles {
                cert: PathBuf::from(c.get_ref()),
                key: PathBuf::from(kf.get_ref()),
            })
        }
        _ => {
            diag.error(span, k, "give both `tls_cert` and `tls_key`, or neither");
            None
        }
    }
}

fn bounded<T: Copy + PartialOrd + std::fmt::Display>(
    v: &S<T>,
    lo: T,
    hi: T,
    key: &str,
    unit: &str,
    diag: &mut Diag<'_>,
) -> T {
    let x = *v.get_ref();
    if x < lo || x > hi {
        diag.error(
            v.span(),
            key,
            format!("must be {lo} to {hi}{unit}, got {x}"),
        );
    }
    x
}

fn convert(
    raw: &RawConfig,
    origin: &Path,
    env: &dyn Environment,
    diag: &mut Diag<'_>,
) -> Option<Config> {
    // --- meta
    let meta = match &raw.meta {
        None => {
            diag.error(
                0..0,
                "meta",
                "missing [meta] section (Graph API credentials)",
            );
            None
        }
        Some(m) => {
            let span = m.span();
            let m = m.get_ref();
            let graph_base_url = m.graph_base_url.as_ref().map_or_else(
                || "https://graph.facebook.com".to_owned(),
                |u| {
                    let v = u.get_ref().trim_end_matches('/').to_owned();
                    if !(v.starts_with("https://") || v.starts_with("http://"))
                        || v.contains(char::is_whitespace)
                    {
                        diag.error(
                            u.span(),
                            "meta.graph_base_url",
                            format!("`{}` is not an http(s) URL", cut(&v)),
                        );
                    }
                    v
                },
            );
            let api_version = m.api_version.as_ref().map_or_else(
                || "v23.0".to_owned(),
                |v| {
                    let s = v.get_ref().clone();
                    let ok = s
                        .strip_prefix('v')
                        .and_then(|r| r.split_once('.'))
                        .is_some_and(|(a, b)| {
                            !a.is_empty()
                                && !b.is_empty()
                                && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
                        });
                    if !ok {
                        diag.error(
                            v.span(),
                            "meta.api_version",
                            format!("`{}` is not a Graph version like v23.0", cut(&s)),
                        );
                    }
                    s
                },
            );
            let access_token = secret::resolve(
                &m.access_token,
                span.clone(),
                "meta.access_token",
                env,
                diag,
            );
            let app_secret =
                secret::resolve(&m.app_secret, span.clone(), "meta.app_secret", env, diag);
            let verify_token =
                secret::resolve(&m.verify_token, span, "meta.verify_token", env, diag);
            let request_timeout =
                Duration::from_millis(m.request_timeout_ms.as_ref().map_or(10_000, |t| {
                    bounded(t, 100, 120_000, "meta.request_timeout_ms", " ms", diag)
                }));
            match (access_token, app_secret, verify_token) {
                (Some(access_token), Some(app_secret), Some(verify_token)) => Some(MetaConfig {
                    graph_base_url,
                    api_version,
                    waba_id: m.waba_id.as_ref().map(|w| w.get_ref().clone()),
                    access_token,
                    app_secret,
                    verify_token,
                    request_timeout,
                }),
                _ => None,
            }
        }
    };

    // --- business numbers
    let mut business_numbers: Vec<BusinessNumber> = Vec::new();
    if raw.business_numbers.is_empty() {
        diag.error(
            0..0,
            "business_numbers",
            "no [[business_numbers]]: give at least one phone_number_id and number",
        );
    }
    for (i, b) in raw.business_numbers.iter().enumerate() {
        let key = |f: &str| format!("business_numbers[{i}].{f}");
        let r = b.get_ref();
        let id = PhoneNumberId::parse(r.phone_number_id.get_ref());
        if id.is_none() {
            diag.error(
                r.phone_number_id.span(),
                key("phone_number_id"),
                format!(
                    "`{}` is not a numeric Graph id",
                    cut(r.phone_number_id.get_ref())
                ),
            );
        }
        let number = match E164::parse(r.number.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                diag.error(
                    r.number.span(),
                    key("number"),
                    format!("`{}`: {e}", cut(r.number.get_ref())),
                );
                None
            }
        };
        let (Some(id), Some(number)) = (id, number) else {
            continue;
        };
        if business_numbers.iter().any(|x| x.phone_number_id == id) {
            diag.error(
                r.phone_number_id.span(),
                key("phone_number_id"),
                format!("phone_number_id {id} appears twice"),
            );
        }
        if business_numbers.iter().any(|x| x.number == number) {
            diag.error(
                r.number.span(),
                key("number"),
                format!("{number} appears twice"),
            );
        }
        let blocked = BIC_BLOCKED_COUNTRY_CODES
            .iter()
            .any(|cc| number.digits().starts_with(cc));
        business_numbers.push(BusinessNumber {
            phone_number_id: id,
            label: r.label.clone(),
            business_initiated_calls: r.business_initiated_calls.unwrap_or(!blocked),
            number,
        });
    }

    // --- webhook
    let webhook = {
        let w = raw.webhook.as_ref();
        let r = w.map(Spanned::get_ref);
        let listen = r
            .and_then(|r| r.listen.as_ref())
            .map_or(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))), |l| {
                socket(l, "webhook.listen", diag)
            });
        let path = r.and_then(|r| r.path.as_ref()).map_or_else(
            || "/webhook".to_owned(),
            |p| {
                if !p.get_ref().starts_with('/') || p.get_ref().contains(char::is_whitespace) {
                    diag.error(
                        p.span(),
                        "webhook.path",
                        "must start with `/` and contain no spaces",
                    );
                }
                p.get_ref().clone()
            },
        );
        let tls = r.and_then(|r| {
            tls_files(
                &r.tls_cert,
                &r.tls_key,
                "webhook",
                w.map_or(0..0, Spanned::span),
                diag,
            )
        });
        let max_event_age =
            Duration::from_secs(r.and_then(|r| r.max_event_age_s.as_ref()).map_or(60, |v| {
                bounded(v, 1, 86_400, "webhook.max_event_age_s", " s", diag)
            }));
        if let (Some(l), None) = (listen, &tls)
            && !l.ip().is_loopback()
        {
            diag.warn(
                r.and_then(|r| r.listen.as_ref()).map_or(0..0, Spanned::span),
                "webhook.listen",
                format!("plain HTTP on {l}: Meta only calls HTTPS URLs with a valid certificate, so put a TLS proxy in front or set tls_cert/tls_key"),
            );
        }
        listen.map(|listen| WebhookConfig {
            listen,
            path,
            tls,
            max_event_age,
        })
    };

    // --- sip
    let sip = {
        let r = raw.sip.as_ref().map(Spanned::get_ref);
        let mut listen = Vec::new();
        match r.map(|r| r.listen.as_slice()) {
            Some(l) if !l.is_empty() => {
                for (i, entry) in l.iter().enumerate() {
                    let key = format!("sip.listen[{i}]");
                    let e = entry.get_ref();
                    let Some(transport) = Transport::parse(e.transport.get_ref()) else {
                        diag.error(
                            e.transport.span(),
                            format!("{key}.transport"),
                            format!("`{}` is not udp, tcp or tls", cut(e.transport.get_ref())),
                        );
                        continue;
                    };
                    let Some(address) = socket(&e.address, &format!("{key}.address"), diag) else {
                        continue;
                    };
                    let tls = tls_files(&e.tls_cert, &e.tls_key, &key, entry.span(), diag);
                    match (transport, &tls) {
                        (Transport::Tls, None) => diag.error(
                            entry.span(),
                            key,
                            "a tls listener needs `tls_cert` and `tls_key`",
                        ),
                        (Transport::Udp | Transport::Tcp, Some(_)) => diag.error(
                            entry.span(),
                            key,
                            "`tls_cert`/`tls_key` only apply to transport = \"tls\"",
                        ),
                        _ => {}
                    }
                    listen.push(SipListen {
                        transport,
                        address,
                        tls,
                    });
                }
            }
            _ => {
                let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5060));
                listen.push(SipListen {
                    transport: Transport::Udp,
                    address: any,
                    tls: None,
                });
                listen.push(SipListen {
                    transport: Transport::Tcp,
                    address: any,
                    tls: None,
                });
            }
        }
        let user_agent = r.and_then(|r| r.user_agent.as_ref()).map_or_else(
            || concat!("whatsip/", env!("CARGO_PKG_VERSION")).to_owned(),
            |u| {
                if u.get_ref().chars().any(char::is_control) {
                    diag.error(
                        u.span(),
                        "sip.user_agent",
                        "control characters are not allowed",
                    );
                }
                u.get_ref().clone()
            },
        );
        SipConfig {
            listen,
            user_agent,
            advertised_host: r
                .and_then(|r| r.advertised_host.as_ref())
                .map(|h| h.get_ref().clone()),
        }
    };

    // --- pbx
    let pbx = match &raw.pbx {
        None => {
            diag.error(
                0..0,
                "pbx",
                "missing [pbx] section (the trunk: address = \"host:port\")",
            );
            None
        }
        Some(p) => pbx(p, env, diag),
    };

    // --- media
    let media = {
        let r = raw.media.as_ref().map(Spanned::get_ref);
        let bind = r
            .and_then(|r| r.bind.as_ref())
            .map_or(Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), |b| {
                ip(b, "media.bind", diag)
            });
        let public_address = r
            .and_then(|r| r.public_address.as_ref())
            .and_then(|p| ip(p, "media.public_address", diag));
        let min = r.and_then(|r| r.rtp_port_min.as_ref()).map_or(20_000, |v| {
            bounded(v, 1024, 65_534, "media.rtp_port_min", "", diag)
        });
        let max = r.and_then(|r| r.rtp_port_max.as_ref()).map_or(29_999, |v| {
            bounded(v, 1025, 65_535, "media.rtp_port_max", "", diag)
        });
        if !min.is_multiple_of(2) {
            diag.error(
                span_of(&r.and_then(|r| r.rtp_port_min.as_ref()).cloned()),
                "media.rtp_port_min",
                "must be even (RTP on even ports, RTCP on the next odd one)",
            );
        }
        if max < min + 3 {
            diag.error(
                span_of(&r.and_then(|r| r.rtp_port_max.as_ref()).cloned()),
                "media.rtp_port_max",
                format!("range {min}-{max} holds fewer than two RTP/RTCP pairs"),
            );
        }
        let opus_complexity = r
            .and_then(|r| r.opus_complexity.as_ref())
            .map_or(5, |v| bounded(v, 0, 10, "media.opus_complexity", "", diag));
        let ptime_ms = r.and_then(|r| r.ptime_ms.as_ref()).map_or(20, |v| {
            let x = *v.get_ref();
            if ![10, 20, 30, 40, 60].contains(&x) {
                diag.error(
                    v.span(),
                    "media.ptime_ms",
                    format!("must be 10, 20, 30, 40 or 60, got {x}"),
                );
            }
            x
        });
        let webrtc_sockets = r
            .and_then(|r| r.webrtc_sockets.as_ref())
            .map_or(default_webrtc_sockets(), |v| {
                bounded(v, 1, 64, "media.webrtc_sockets", "", diag) as usize
            });
        // The pool must keep at least one pair for calls once the WhatsApp sockets are
        // carved off its start.
        if max >= min && (max - min).div_ceil(2) <= (webrtc_sockets as u32).div_ceil(2) {
            diag.error(
                span_of(&r.and_then(|r| r.webrtc_sockets.as_ref()).cloned()),
                "media.webrtc_sockets",
                format!("{webrtc_sockets} sockets leave no RTP pair of {min}-{max} for PBX legs"),
            );
        }
        let buffer = |v: Option<&S<u64>>, default: usize, key: &str, diag: &mut Diag<'_>| {
            v.map_or(default, |v| {
                let x = *v.get_ref();
                if x != 0 && !(4096..=1 << 30).contains(&x) {
                    diag.error(
                        v.span(),
                        key,
                        format!("must be 0 (kernel default) or 4096 to 1073741824 bytes, got {x}"),
                    );
                }
                usize::try_from(x).unwrap_or(default)
            })
        };
        let webrtc_socket_buffer_bytes = buffer(
            r.and_then(|r| r.webrtc_socket_buffer_bytes.as_ref()),
            4 << 20,
            "media.webrtc_socket_buffer_bytes",
            diag,
        );
        let rtp_socket_buffer_bytes = buffer(
            r.and_then(|r| r.rtp_socket_buffer_bytes.as_ref()),
            1 << 20,
            "media.rtp_socket_buffer_bytes",
            diag,
        );
        let jitter_buffer_frames = r
            .and_then(|r| r.jitter_buffer_frames.as_ref())
            .map_or(2, |v| {
                bounded(v, 0, 10, "media.jitter_buffer_frames", " frames", diag) as usize
            });
        bind.map(|bind| MediaConfig {
            bind,
            public_address,
            rtp_ports: u16::try_from(min).unwrap_or(20_000)..=u16::try_from(max).unwrap_or(29_999),
            opus_complexity: u8::try_from(opus_complexity).unwrap_or(5),
            ptime: Duration::from_millis(u64::from(ptime_ms)),
            webrtc_sockets,
            webrtc_socket_buffer_bytes,
            rtp_socket_buffer_bytes,
            jitter_buffer_frames,
        })
    };

    // --- headers
    let headers = {
        let r = raw.headers.as_ref().map(Spanned::get_ref);
        let mut h = |v: Option<&S<String>>, default: &str, key: &str| -> Option<String> {
            match v {
                None => Some(default.to_owned()),
                Some(v) if v.get_ref().is_empty() => None,
                Some(v) => {
                    if !is_header_name(v.get_ref()) {
                        diag.error(v.span(), key, format!("`{}` is not a valid SIP header name (token characters only); \"\" disables it", cut(v.get_ref())));
                    }
                    Some(v.get_ref().clone())
                }
            }
        };
        ContextHeaders {
            call_id: h(
                r.and_then(|r| r.call_id.as_ref()),
                "X-WA-Call-Id",
                "headers.call_id",
            ),
            customer_number: h(
                r.and_then(|r| r.customer_number.as_ref()),
                "X-WA-Customer-Number",
                "headers.customer_number",
            ),
            customer_name: h(
                r.and_then(|r| r.customer_name.as_ref()),
                "X-WA-Customer-Name",
                "headers.customer_name",
            ),
            cta_payload: h(
                r.and_then(|r| r.cta_payload.as_ref()),
                "X-WA-CTA-Payload",
                "headers.cta_payload",
            ),
            deeplink_payload: h(
                r.and_then(|r| r.deeplink_payload.as_ref()),
                "X-WA-Deeplink-Payload",
                "headers.deeplink_payload",
            ),
        }
    };

    // --- logging
    let logging = {
        let r = raw.logging.as_ref().map(Spanned::get_ref);
        let format = match r.and_then(|r| r.format.as_ref()) {
            None => LogFormat::Text,
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    diag.error(
                        f.span(),
                        "logging.format",
                        format!("`{}` is not \"text\" or \"json\"", cut(other)),
                    );
                    LogFormat::Text
                }
            },
        };
        let level = r.and_then(|r| r.level.as_ref()).map_or_else(
            || "info".to_owned(),
            |l| {
                if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(l.get_ref()) {
                    diag.error(l.span(), "logging.level", format!("`{}` is not a log filter like \"info\" or \"info,whatsip::wire=trace\": {e}", cut(l.get_ref())));
                }
                l.get_ref().clone()
            },
        );
        LoggingConfig {
            format,
            level,
            redact_phone_numbers: r.and_then(|r| r.redact_phone_numbers).unwrap_or(true),
        }
    };

    let cdr = CdrConfig {
        path: raw
            .cdr
            .as_ref()
            .and_then(|c| c.get_ref().path.as_ref())
            .map(|p| PathBuf::from(p.get_ref())),
        jsonl_path: raw
            .cdr
            .as_ref()
            .and_then(|c| c.get_ref().jsonl_path.as_ref())
            .map(|p| PathBuf::from(p.get_ref())),
        rate_card: raw.cdr.as_ref().and_then(|c| {
            let c = c.get_ref();
            if c.rates.is_empty() {
                return None;
            }
            let currency = c
                .rate_currency
                .as_ref()
                .map_or("USD", |v| v.get_ref().as_str());
            let rates = c
                .rates
                .iter()
                .map(|(k, v)| (k.as_str(), v.get_ref().as_str()));
            match whatsip_cdr::RateCard::new(currency, rates) {
                Ok(card) => Some(card),
                Err(e) => {
                    let span = c.rates.values().next().map_or(0..0, |v| v.span());
                    diag.error(span, "cdr.rates", e.to_string());
                    None
                }
            }
        }),
    };
    let admin = AdminConfig {
        listen: match raw.admin.as_ref().and_then(|a| a.get_ref().listen.as_ref()) {
            None => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9090))),
            Some(l) if l.get_ref().is_empty() => None,
            Some(l) => {
                let addr = socket(l, "admin.listen", diag);
                if addr.is_some_and(|a| !a.ip().is_loopback()) {
                    diag.warn(l.span(), "admin.listen", "the admin API (permission requests, call state) is reachable from the network; it has no authentication");
                }
                addr
            }
        },
        drain_timeout: Duration::from_secs(
            raw.admin
                .as_ref()
                .and_then(|a| a.get_ref().drain_timeout_s.as_ref())
                .map_or(30, |v| *v.get_ref()),
        ),
    };

    // --- outbound
    let outbound = {
        let r = raw.outbound.as_ref().map(Spanned::get_ref);
        let text = r.and_then(|r| r.permission_request_text.as_ref()).map(|t| {
            if t.get_ref().chars().count() > 1024 {
                diag.error(
                    t.span(),
                    "outbound.permission_request_text",
                    "at most 1024 characters",
                );
            }
            t.get_ref().clone()
        });
        let rejected_status =
            r.and_then(|r| r.rejected_status.as_ref())
                .map_or(SipStatus::from_const(603), |s| {
                    let code = *s.get_ref();
                    if code != 603 && code != 486 {
                        diag.error(
                            s.span(),
                            "outbound.rejected_status",
                            format!("must be 603 (Decline) or 486 (Busy Here), got {code}"),
                        );
                    }
                    SipStatus::new(code).unwrap_or(SipStatus::from_const(603))
                });
        OutboundPolicy {
            auto_permission_request: r.and_then(|r| r.auto_permission_request).unwrap_or(false),
            permission_request_text: text,
            max_consecutive_unanswered: r
                .and_then(|r| r.max_consecutive_unanswered.as_ref())
                .map_or(2, |v| {
                    bounded(
                        v,
                        1,
                        3,
                        "outbound.max_consecutive_unanswered",
                        " (Meta revokes permission at 4)",
                        diag,
                    )
                }),
            max_connected_calls_per_user_per_day: r
                .and_then(|r| r.max_connected_calls_per_user_per_day.as_ref())
                .map_or(100, |v| {
                    bounded(
                        v,
                        1,
                        100,
                        "outbound.max_connected_calls_per_user_per_day",
                        " (Meta's limit is 100)",
                        diag,
                    )
                }),
            ring_timeout: Duration::from_secs(
                r.and_then(|r| r.ring_timeout_s.as_ref()).map_or(45, |v| {
                    bounded(v, 1, 300, "outbound.ring_timeout_s", " s", diag)
                }),
            ),
            rejected_status,
            early_ringback: r.and_then(|r| r.early_ringback).unwrap_or(true),
        }
    };

    // --- dial plan
    let schedules = dialplan::compile_schedules(&raw.schedules, diag);
    let numbers: Vec<E164> = business_numbers.iter().map(|b| b.number.clone()).collect();
    let bic: Vec<E164> = business_numbers
        .iter()
        .filter(|b| b.business_initiated_calls)
        .map(|b| b.number.clone())
        .collect();
    let defaults = DialPlanDefaults {
        business_numbers: &numbers,
        business_initiated_numbers: &bic,
        auto_permission_request: outbound.auto_permission_request,
    };
    let dialplan = dialplan::compile(
        raw.dialplan.as_ref(),
        &raw.schedules,
        &schedules,
        &defaults,
        diag,
    );

    Some(Config {
        source: origin.to_path_buf(),
        meta: meta?,
        business_numbers,
        webhook: webhook?,
        sip,
        pbx: pbx?,
        media: media?,
        headers,
        logging,
        cdr,
        admin,
        outbound,
        dialplan,
        warnings: Vec::new(),
    })
}

fn pbx(p: &S<raw::RawPbx>, env: &dyn Environment, diag: &mut Diag<'_>) -> Option<PbxConfig> {
    let r = p.get_ref();
    let transport = match &r.transport {
        None => Transport::Udp,
        Some(t) => Transport::parse(t.get_ref()).unwrap_or_else(|| {
            diag.error(
                t.span(),
                "pbx.transport",
                format!("`{}` is not udp, tcp or tls", cut(t.get_ref())),
            );
            Transport::Udp
        }),
    };
    let (host, port) = match split_host_port(r.address.get_ref(), transport.default_port()) {
        Some(hp) => hp,
        None => {
            diag.error(
                r.address.span(),
                "pbx.address",
                format!(
                    "`{}` is not `host`, `host:port` or `[v6]:port`",
                    cut(r.address.get_ref())
                ),
            );
            return None;
        }
    };
    let digest = |d: &Option<S<raw::RawDigest>>,
                  key: &str,
                  diag: &mut Diag<'_>|
     -> Option<DigestCredentials> {
        let d = d.as_ref()?;
        let password = secret::resolve(
            &d.get_ref().password,
            d.span(),
            &format!("{key}.password"),
            env,
            diag,
        )?;
        Some(DigestCredentials {
            username: d.get_ref().username.get_ref().clone(),
            password,
            realm: d.get_ref().realm.as_ref().map(|x| x.get_ref().clone()),
        })
    };
    let outbound_auth = digest(&r.outbound_auth, "pbx.outbound_auth", diag);
    let inbound_auth = digest(&r.inbound_auth, "pbx.inbound_auth", diag);
    let mut allowed_sources = Vec::new();
    for (i, s) in r.allowed_sources.iter().enumerate() {
        match IpNet::parse(s.get_ref()) {
            Some(n) => allowed_sources.push(n),
            None => diag.error(
                s.span(),
                format!("pbx.allowed_sources[{i}]"),
                format!(
                    "`{}` is not an address or network like 10.0.0.0/24",
                    cut(s.get_ref())
                ),
            ),
        }
    }
    if allowed_sources.is_empty() {
        if let Ok(ip) = host.parse::<IpAddr>() {
            allowed_sources.push(IpNet {
                addr: ip,
                prefix: if ip.is_ipv4() { 32 } else { 128 },
            });
        } else if r.inbound_auth.is_none() {
            diag.error(
                p.span(),
                "pbx.allowed_sources",
                "the PBX address is a host name, so give `allowed_sources` (IP networks) or `inbound_auth`: otherwise anyone could place calls through whatsip",
            );
        }
    }
    let codecs = match &r.codecs {
        None => vec![Codec::Pcma, Codec::Pcmu, Codec::G722],
        Some(list) => {
            let mut out = Vec::new();
            for c in list.get_ref() {
                match Codec::parse(c.get_ref()) {
                    Some(codec) if out.contains(&codec) => diag.error(
                        c.span(),
                        "pbx.codecs",
                        format!("{} listed twice", c.get_ref()),
                    ),
                    Some(codec) => out.push(codec),
                    None => diag.error(
                        c.span(),
                        "pbx.codecs",
                        format!("`{}` is not PCMU, PCMA, G722 or opus", cut(c.get_ref())),
                    ),
                }
            }
            if out.is_empty() {
                diag.error(list.span(), "pbx.codecs", "list at least one codec");
            }
            out
        }
    };
    let options_ping_interval = match &r.options_ping_interval_s {
        None => Some(Duration::from_secs(30)),
        Some(v) if *v.get_ref() == 0 => None,
        Some(v) => Some(Duration::from_secs(bounded(
            v,
            1,
            3600,
            "pbx.options_ping_interval_s",
            " s (0 = off)",
            diag,
        ))),
    };
    let tls_ca = match (&r.tls_ca, transport) {
        (Some(ca), Transport::Tls) => {
            if let Err(e) = std::fs::metadata(ca.get_ref()) {
                diag.error(
                    ca.span(),
                    "pbx.tls_ca",
                    format!("cannot read `{}`: {e}", cut(ca.get_ref())),
                );
            }
            Some(PathBuf::from(ca.get_ref()))
        }
        (None, Transport::Tls) => {
            if let Err(e) = std::fs::metadata(DEFAULT_TLS_CA) {
                diag.error(
                    r.address.span(),
                    "pbx.tls_ca",
                    format!(
                        "a TLS trunk needs CA certificates to check the PBX's certificate: set `tls_ca` to a PEM file (the default {DEFAULT_TLS_CA} cannot be read: {e}; install ca-certificates)"
                    ),
                );
            }
            Some(PathBuf::from(DEFAULT_TLS_CA))
        }
        (Some(ca), _) => {
            diag.error(
                ca.span(),
                "pbx.tls_ca",
                "`tls_ca` only applies to transport = \"tls\"",
            );
            None
        }
        (None, _) => None,
    };
    let domain = r
        .domain
        .as_ref()
        .map_or_else(|| host.clone(), |d| d.get_ref().clone());
    Some(PbxConfig {
        host,
        port,
        transport,
        domain,
        outbound_auth,
        inbound_auth,
        allowed_sources,
        codecs,
        options_ping_interval,
        tls_ca,
    })
}

fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip.to_string(), default_port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (s, default_port),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then(|| (host.to_owned(), port))
}

/// Problems as a map from key to message, for tests.
#[cfg(test)]
pub(crate) fn problem_keys(e: &ConfigError) -> std::collections::BTreeMap<String, String> {
    match e {
        ConfigError::Invalid(p) => p
            .iter()
            .map(|p| (p.key.clone(), p.message.clone()))
            .collect(),
        other => std::collections::BTreeMap::from([("<syntax>".to_owned(), other.to_string())]),
    }
}

#[cfg(test)]
pub(crate) mod tests;
