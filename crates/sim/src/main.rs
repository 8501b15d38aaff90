//! `whatsip-sim`: run the Meta simulator, or drive a running one through its control API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use whatsip_sim::scenario::{Scenario, SimFile};
use whatsip_sim::{Faults, Simulator};

#[derive(Parser)]
#[command(
    name = "whatsip-sim",
    version,
    about = "Simulator of Meta's side of the WhatsApp Business Calling API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the simulator (Graph API + control API on one 127.0.0.1 socket).
    Serve {
        /// TOML configuration (see crates/sim/sim.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address (overrides the file).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Webhook callback URL (overrides the file).
        #[arg(long)]
        webhook_url: Option<String>,
        /// File holding the app secret used to sign webhooks (overrides the file).
        #[arg(long)]
        app_secret_file: Option<PathBuf>,
        /// Accepted Graph bearer token (repeatable; overrides the file).
        #[arg(long)]
        access_token: Vec<String>,
        /// Scenario to run once the simulator is up.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// A simulated user calls a business number.
    Call {
        #[command(flatten)]
        sim: SimUrl,
        /// Caller wa_id.
        #[arg(long)]
        from: String,
        /// Business phone number id or display number.
        #[arg(long)]
        to: String,
        /// Hang up this many seconds after the business accepts.
        #[arg(long)]
        hang_up_after: Option<f64>,
        /// Give up if not accepted within this many seconds.
        #[arg(long)]
        give_up_after: Option<f64>,
        /// Press digits: `DIGITS@SECONDS` after the answer (repeatable).
        #[arg(long)]
        dtmf: Vec<String>,
        /// Wait until the call ends and print its final state.
        #[arg(long)]
        wait: bool,
    },
    /// The user hangs up a call.
    Hangup {
        #[command(flatten)]
        sim: SimUrl,
        call_id: String,
    },
    /// The user answers a ringing business call.
    Answer {
        #[command(flatten)]
        sim: SimUrl,
        call_id: String,
    },
    /// The user declines a ringing business call.
    Reject {
        #[command(flatten)]
        sim: SimUrl,
        call_id: String,
    },
    /// The user presses DTMF digits.
    Dtmf {
        #[command(flatten)]
        sim: SimUrl,
        call_id: String,
        digits: String,
    },
    /// Set a user's call permission directly (none | temporary | permanent).
    Permission {
        #[command(flatten)]
        sim: SimUrl,
        #[arg(long)]
        number: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        grant: String,
    },
    /// The user replies to a permission request (accept_temporary | accept_permanent | reject).
    PermissionReply {
        #[command(flatten)]
        sim: SimUrl,
        #[arg(long)]
        number: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        reply: String,
    },
    /// List calls.
    Calls {
        #[command(flatten)]
        sim: SimUrl,
    },
    /// List Graph requests the simulator received.
    Requests {
        #[command(flatten)]
        sim: SimUrl,
    },
    /// List webhook delivery attempts.
    Webhooks {
        #[command(flatten)]
        sim: SimUrl,
    },
    /// Replace the fault rules from a TOML or JSON file.
    Faults {
        #[command(flatten)]
        sim: SimUrl,
        file: PathBuf,
    },
    /// Run a scenario file against a running simulator.
    Scenario {
        #[command(flatten)]
        sim: SimUrl,
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct SimUrl {
    /// Base URL of a running simulator.
    #[arg(long, default_value = "http://127.0.0.1:8055")]
    sim: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            config,
            listen,
            webhook_url,
            app_secret_file,
            access_token,
            scenario,
        } => {
            serve(
                config,
                listen,
                webhook_url,
                app_secret_file,
                access_token,
                scenario,
            )
            .await
        }
        Cmd::Call {
            sim,
            from,
            to,
            hang_up_after,
            give_up_after,
            dtmf,
            wait,
        } => {
            let mut steps = Vec::new();
            for d in &dtmf {
                let (digits, at) = d.split_once('@').context("--dtmf takes DIGITS@SECONDS")?;
                let at: f64 = at.parse().context("--dtmf seconds")?;
                steps.push(json!({ "after_s": at, "digits": digits }));
            }
            let body = json!({ "from": from, "to": to, "hang_up_after_s": hang_up_after,
                "give_up_after_s": give_up_after, "dtmf": steps });
            let r = request(&sim, reqwest::Method::POST, "/_sim/calls", Some(body)).await?;
            output(&r);
            if wait {
                let id = r["call_id"].as_str().context("no call_id")?;
                // Bounded: at most one day of polling once a second.
                for _ in 0..86_400 {
                    let c = request(
                        &sim,
                        reqwest::Method::GET,
                        &format!("/_sim/calls/{id}"),
                        None,
                    )
                    .await?;
                    if c["state"] == "TERMINATED" {
                        output(&c);
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Ok(())
        }
        Cmd::Hangup { sim, call_id } => action(&sim, &call_id, "hangup", None).await,
        Cmd::Answer { sim, call_id } => action(&sim, &call_id, "answer", None).await,
        Cmd::Reject { sim, call_id } => action(&sim, &call_id, "reject", None).await,
        Cmd::Dtmf {
            sim,
            call_id,
            digits,
        } => action(&sim, &call_id, "dtmf", Some(json!({ "digits": digits }))).await,
        Cmd::Permission {
            sim,
            number,
            user,
            grant,
        } => {
            let body = json!({ "phone_number_id": number, "user": user, "grant": grant });
            output(&request(&sim, reqwest::Method::POST, "/_sim/permissions", Some(body)).await?);
            Ok(())
        }
        Cmd::PermissionReply {
            sim,
            number,
            user,
            reply,
        } => {
            let body = json!({ "phone_number_id": number, "user": user, "reply": reply });
            output(
                &request(
                    &sim,
                    reqwest::Method::POST,
                    "/_sim/permission_replies",
                    Some(body),
                )
                .await?,
            );
            Ok(())
        }
        Cmd::Calls { sim } => list(&sim, "/_sim/calls").await,
        Cmd::Requests { sim } => list(&sim, "/_sim/graph_requests").await,
        Cmd::Webhooks { sim } => list(&sim, "/_sim/webhooks").await,
        Cmd::Faults { sim, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let faults: Faults = if is_json(&file) {
                serde_json::from_str(&text)?
            } else {
                toml::from_str(&text).with_context(|| format!("parse {}", file.display()))?
            };
            let r = request(
                &sim,
                reqwest::Method::PUT,
                "/_sim/faults",
                Some(serde_json::to_value(faults)?),
            )
            .await?;
            output(&r);
            Ok(())
        }
        Cmd::Scenario { sim, file } => remote_scenario(&sim, &file).await,
    }
}

async fn serve(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    webhook_url: Option<String>,
    app_secret_file: Option<PathBuf>,
    access_token: Vec<String>,
    scenario: Option<PathBuf>,
) -> Result<()> {
    let mut file = match &config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            SimFile::from_toml(&text).with_context(|| format!("config {}", p.display()))?
        }
        None => SimFile::default(),
    };
    if let Some(l) = listen {
        file.listen = Some(l);
    } else if file.listen.is_none() {
        file.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8055)));
    }
    if let Some(u) = webhook_url {
        file.webhook.url = Some(u);
    }
    if !access_token.is_empty() {
        file.meta.access_tokens = access_token;
    }
    let secret_path = app_secret_file.or_else(|| file.webhook.app_secret_file.clone());
    let secret = match &secret_path {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("read app secret {}", p.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => {
            if file.webhook.url.is_some() {
                bail!("a webhook URL needs --app-secret-file (or webhook.app_secret_file)");
            }
            String::new()
        }
    };
    let scenario = match &scenario {
        Some(p) => Some(Scenario::from_toml(
            &std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        )?),
        None => None,
    };
    let sim = Simulator::start(file.into_config(secret)).await?;
    tracing::info!(base_url = %sim.base_url(), "simulator ready; Ctrl-C to stop");
    if let Some(s) = scenario {
        let h = sim.clone();
        tokio::spawn(async move {
            match h.run_scenario(&s).await {
                Ok(o) => tracing::info!(
                    placed = o.placed.len(),
                    refused = o.refused.len(),
                    "scenario done"
                ),
                Err(e) => tracing::error!(error = %e, "scenario failed"),
            }
        });
    }
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}

async fn remote_scenario(sim: &SimUrl, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let s = Scenario::from_toml(&text)?;
    for p in &s.permissions {
        let body =
            json!({ "phone_number_id": p.phone_number_id, "user": p.user, "grant": p.grant });
        request(sim, reqwest::Method::POST, "/_sim/permissions", Some(body)).await?;
    }
    for u in &s.users {
        request(
            sim,
            reqwest::Method::POST,
            "/_sim/users",
            Some(serde_json::to_value(u)?),
        )
        .await?;
    }
    let start = tokio::time::Instant::from_std(whatsip_sim::SystemClock::new().now().0);
    for (at, to, call) in s.expand()? {
        tokio::time::sleep_until(start + at).await;
        let body = json!({
            "from": call.from, "to": to,
            "hang_up_after_s": call.hang_up_after.map(|d| d.as_secs_f64()),
            "give_up_after_s": call.give_up_after.map(|d| d.as_secs_f64()),
            "dtmf": call.dtmf,
        });
        match request(sim, reqwest::Method::POST, "/_sim/calls", Some(body)).await {
            Ok(v) => output(&v),
            Err(e) => output(&json!({ "from": call.from, "error": e.to_string() })),
        }
    }
    Ok(())
}

async fn action(sim: &SimUrl, id: &str, what: &str, body: Option<Value>) -> Result<()> {
    output(
        &request(
            sim,
            reqwest::Method::POST,
            &format!("/_sim/calls/{id}/{what}"),
            body,
        )
        .await?,
    );
    Ok(())
}

async fn list(sim: &SimUrl, path: &str) -> Result<()> {
    output(&request(sim, reqwest::Method::GET, path, None).await?);
    Ok(())
}

async fn request(
    sim: &SimUrl,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}{}", sim.sim.trim_end_matches('/'), path);
    let mut req = client.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("request {url}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{status}: {}",
            v["error"].as_str().unwrap_or(&v.to_string())
        );
    }
    Ok(v)
}

fn is_json(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some("json")
}

#[allow(clippy::print_stdout)]
fn output(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
