//! The `whatsip` binary: `whatsip [--config FILE] [run|demo|check-config FILE]`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use whatsip_gateway::config::Config;
use whatsip_gateway::{CallContext, Direction, E164, Route};

/// whatsip: a SIP B2BUA bridging WhatsApp Business calls into an Asterisk/FreeSWITCH PBX.
///
/// With no subcommand, `whatsip --config FILE` runs the gateway and plain `whatsip`
/// runs the embedded demo against the Meta simulator on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "whatsip", version)]
struct Cli {
    /// The TOML config file.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with --config FILE.
    Run,
    /// Run the embedded demo on 127.0.0.1 (simulator, gateway, stand-in PBX).
    Demo,
    /// Validate a config file and explain every problem with file, line and key.
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
        #[command(flatten)]
        trial: Trial,
    },
    /// Read call detail records: list, show, export (CSV/JSON).
    Cdr {
        /// The CDR database (defaults to `cdr.path` of --config).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        #[command(subcommand)]
        command: whatsip_gateway::ops::cdr_cli::CdrCommand,
    },
    /// Call permissions of WhatsApp users, through the running gateway's admin API.
    Permissions {
        /// The admin API (defaults to `admin.listen` of --config, else 127.0.0.1:9090).
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
        #[command(subcommand)]
        command: whatsip_gateway::permission_cli::PermissionCommand,
    },
}

/// Route one made-up call through the dial plan after checking the file.
#[derive(Debug, clap::Args)]
struct Trial {
    /// Route an inbound call from this WhatsApp number (E.164).
    #[arg(long, value_name = "NUMBER", conflicts_with = "try_outbound")]
    try_inbound: Option<String>,
    /// Route an outbound call to this dialled number (as the PBX would send it).
    #[arg(long, value_name = "DIALLED")]
    try_outbound: Option<String>,
    /// The business number (inbound: called; outbound: asserted by the PBX).
    #[arg(long, value_name = "NUMBER")]
    business: Option<String>,
    /// Call button payload.
    #[arg(long, value_name = "PAYLOAD")]
    cta: Option<String>,
    /// Deep-link payload.
    #[arg(long, value_name = "PAYLOAD")]
    deeplink: Option<String>,
    /// When the call happens, RFC 3339 (e.g. 2026-01-05T10:00:00Z); default now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file, trial }), config) => match file.or(config) {
            Some(path) => check_config(&path, &trial),
            None => {
                eprintln!("error: check-config needs a FILE (or --config FILE)");
                ExitCode::from(2)
            }
        },
        (Some(Command::Run), Some(path)) | (None, Some(path)) => run(&path),
        (Some(Command::Run), None) => {
            eprintln!("error: run needs --config FILE (or use `whatsip demo`)");
            ExitCode::from(2)
        }
        (Some(Command::Demo), _) | (None, None) => demo(),
        (Some(Command::Cdr { db, command }), config) => cdr(db, config, &command),
        (Some(Command::Permissions { admin, command }), config) => {
            permissions(admin, config, &command)
        }
    }
}

fn permissions(
    admin: Option<std::net::SocketAddr>,
    config: Option<PathBuf>,
    command: &whatsip_gateway::permission_cli::PermissionCommand,
) -> ExitCode {
    let admin = match (admin, config) {
        (Some(a), _) => a,
        (None, Some(path)) => match Config::load(&path) {
            Ok(cfg) => match cfg.admin.listen {
                Some(a) => a,
                None => {
                    eprintln!("error: the admin API is disabled in {}", path.display());
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => std::net::SocketAddr::from(([127, 0, 0, 1], 9090)),
    };
    let mut out = std::io::stdout();
    match whatsip_gateway::permission_cli::run(admin, command, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cdr(
    db: Option<PathBuf>,
    config: Option<PathBuf>,
    command: &whatsip_gateway::ops::cdr_cli::CdrCommand,
) -> ExitCode {
    let db = match (db, config) {
        (Some(db), _) => db,
        (None, Some(path)) => match Config::load(&path) {
            Ok(cfg) => match cfg.cdr.path {
                Some(p) => p,
                None => {
                    eprintln!("error: {} has no cdr.path", path.display());
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                for p in e.problems() {
                    eprintln!("error: {p}");
                }
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            eprintln!("error: cdr needs --db FILE (or --config FILE with cdr.path)");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match whatsip_gateway::ops::cdr_cli::run_cdr_command(&db, command, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path, trial: &Trial) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            let mut out = std::io::stdout().lock();
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            let _ = writeln!(out, "{}: ok", path.display());
            let _ = write_summary(&mut out, &cfg);
            match try_route(&cfg, trial) {
                Ok(Some(route)) => {
                    let _ = writeln!(out, "route: {route}");
                    ExitCode::SUCCESS
                }
                Ok(None) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => {
            let problems = e.problems();
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!(
                "{}: {} problem(s), config refused",
                path.display(),
                problems.len()
            );
            ExitCode::FAILURE
        }
    }
}

fn write_summary(out: &mut impl std::io::Write, cfg: &Config) -> std::io::Result<()> {
    for b in &cfg.business_numbers {
        writeln!(
            out,
            "  business number {} (phone_number_id {}){}, business-initiated calls {}",
            b.number,
            b.phone_number_id,
            b.label
                .as_deref()
                .map(|l| format!(" \"{l}\""))
                .unwrap_or_default(),
            if b.business_initiated_calls {
                "allowed"
            } else {
                "off"
            }
        )?;
    }
    writeln!(
        out,
        "  webhook {}{} ({})",
        cfg.webhook.listen,
        cfg.webhook.path,
        if cfg.webhook.tls.is_some() {
            "tls"
        } else {
            "plain http"
        }
    )?;
    for l in &cfg.sip.listen {
        writeln!(out, "  sip listen {:?} {}", l.transport, l.address)?;
    }
    writeln!(
        out,
        "  pbx {}:{} {:?}, codecs {:?}",
        cfg.pbx.host, cfg.pbx.port, cfg.pbx.transport, cfg.pbx.codecs
    )?;
    writeln!(
        out,
        "  media {} ports {}-{}",
        cfg.media.bind,
        cfg.media.rtp_ports.start(),
        cfg.media.rtp_ports.end()
    )?;
    writeln!(out, "  dial plan: {} rule(s)", cfg.dialplan.len())?;
    Ok(())
}

fn try_route(cfg: &Config, trial: &Trial) -> Result<Option<Route>, String> {
    let (direction, customer) = match (&trial.try_inbound, &trial.try_outbound) {
        (Some(n), _) => {
            let n = E164::parse(n).map_err(|e| format!("--try-inbound {n}: {e}"))?;
            (Direction::Inbound, n.to_string())
        }
        (None, Some(d)) => (Direction::Outbound, d.clone()),
        (None, None) => return Ok(None),
    };
    let business = match &trial.business {
        Some(b) => Some(E164::parse(b).map_err(|e| format!("--business {b}: {e}"))?),
        None if direction == Direction::Inbound => {
            cfg.business_numbers.first().map(|b| b.number.clone())
        }
        None => None,
    };
    let now = match &trial.at {
        Some(t) => t
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("--at {t}: {e}"))?,
        // the CLI is a driver: reading the wall clock here is allowed (STYLE.md §1)
        None => jiff::Timestamp::now(),
    };
    let ctx = CallContext {
        direction,
        business,
        customer,
        cta_payload: trial.cta.clone(),
        deeplink_payload: trial.deeplink.clone(),
        now,
    };
    Ok(Some(cfg.dialplan.route(&ctx)))
}

fn run(path: &Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            for p in e.problems() {
                eprintln!("error: {p}");
            }
            eprintln!("{}: config refused, not starting", path.display());
            return ExitCode::FAILURE;
        }
    };
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    init_logging(&cfg);
    let drain = cfg.admin.drain_timeout;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let gateway = match whatsip_gateway::runtime::Gateway::start(cfg).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if wait_for_stop_signal(&gateway).await {
            tracing::info!(drain_s = drain.as_secs(), "SIGTERM: draining");
            gateway.drain(drain).await;
        } else {
            tracing::info!("stopping: ending live calls");
            gateway.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}

/// SIGTERM (`true`: drain live calls first) or Ctrl-C (`false`: end them now). SIGHUP
/// reloads the config on the way.
async fn wait_for_stop_signal(gateway: &whatsip_gateway::runtime::GatewayHandle) -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            loop {
                tokio::select! {
                    _ = term.recv() => return true,
                    _ = tokio::signal::ctrl_c() => return false,
                    _ = hup.recv() => match gateway.reload_config().await {
                        Ok(restart) if restart.is_empty() => {
                            tracing::info!("SIGHUP: config reloaded");
                        }
                        Ok(restart) => tracing::warn!(
                            ?restart,
                            "SIGHUP: config reloaded; these changes need a restart"
                        ),
                        Err(whatsip_gateway::runtime::ReloadError::Config(e)) => {
                            for p in e.problems() {
                                tracing::error!(problem = %p, "SIGHUP: config refused, keeping the old one");
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "SIGHUP: config refused, keeping the old one");
                        }
                    },
                }
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    false
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.logging.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.logging.format {
        whatsip_gateway::config::LogFormat::Json => builder.json().try_init(),
        whatsip_gateway::config::LogFormat::Text => builder.try_init(),
    };
}

fn demo() -> ExitCode {
    use whatsip_gateway::demo::{DemoOptions, run_demo};
    // Quiet logs: the demo's report is the point, and its failures are in it
    // (RUST_LOG=warn or info shows the gateway's log lines).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "whatsip demo: Meta simulator (WebRTC phone) -> whatsip -> stand-in PBX (answer + echo), all on 127.0.0.1"
    );
    let _ = out.flush();
    let report = runtime.block_on(run_demo(DemoOptions::default()));
    let _ = write!(out, "{report}");
    let _ = out.flush();
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
