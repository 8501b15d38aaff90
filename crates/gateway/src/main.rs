//! The `whatsip` binary: `whatsip [--config FILE] [run|demo|check-config FILE]`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use whatsip_gateway::config::Config;

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), config) => match file.or(config) {
            Some(path) => check_config(&path),
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
    }
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}: ok", path.display());
            let _ = write_summary(&mut out, &cfg);
            ExitCode::SUCCESS
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

fn run(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_cfg) => {
            eprintln!(
                "{}: config ok; the SIP, media and Meta drivers are not wired yet",
                path.display()
            );
            ExitCode::from(2)
        }
        Err(e) => {
            for p in e.problems() {
                eprintln!("error: {p}");
            }
            eprintln!("{}: config refused, not starting", path.display());
            ExitCode::FAILURE
        }
    }
}

fn demo() -> ExitCode {
    match Config::demo() {
        Ok(_cfg) => {
            eprintln!(
                "demo config ok; the demo (simulator, gateway, stand-in PBX) is not wired yet"
            );
            ExitCode::from(2)
        }
        Err(e) => {
            // a bug: the embedded config is tested
            eprintln!("error: embedded demo config invalid: {e}");
            ExitCode::FAILURE
        }
    }
}
