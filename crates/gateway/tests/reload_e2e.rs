//! A config reload (what SIGHUP does) moves the PBX trunk and rotates the Meta credentials
//! for new calls while a live call keeps its trunk: simulator → whatsip (in process) →
//! SIPp as two PBXes.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use whatsip_gateway::Config;
use whatsip_gateway::config::Environment;
use whatsip_gateway::runtime::Gateway;

/// Secrets the config names, changeable between loads (a rotation).
struct RotatingEnv(Mutex<(String, String, String)>);

impl Environment for RotatingEnv {
    fn var(&self, name: &str) -> Option<String> {
        let g = self.0.lock().unwrap();
        match name {
            "E2E_TOKEN" => Some(g.0.clone()),
            "E2E_SECRET" => Some(g.1.clone()),
            "E2E_VERIFY" => Some(g.2.clone()),
            _ => None,
        }
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_the_trunk_and_rotates_credentials_for_new_calls_only() {
    let mut opts = InboundOpts::new(Kind::Udp, Some("uas_wa_echo.xml"));
    opts.in_process = false;
    opts.rtp_base = 45_000;
    let Some(mut h) = inbound_harness(opts).await else {
        return;
    };
    // The config as a file, so a reload re-reads it.
    let dir = TempDir::new("whatsip-reload");
    let path = dir.0.join("whatsip.toml");
    std::fs::write(&path, &h.toml).unwrap();
    let env = RotatingEnv(Mutex::new((
        "e2e-token".into(),
        APP_SECRET.into(),
        "e2e-verify".into(),
    )));
    let gw = Gateway::start(Config::load_with(&path, &env).unwrap())
        .await
        .unwrap();

    // Call 1 reaches PBX A and stays up.
    let first = h.user_calls().await;
    h.wait_active(&first).await;
    let before_reload = h.sim.graph_requests().len();

    // PBX B on another port; the file now points the trunk and the rule there, and the
    // secrets rotate.
    let sipp_b_port = free_port();
    let sipp_b_dir = TempDir::new("whatsip-reload-b");
    let sipp_b = start_sipp_uas(
        sipp().unwrap(),
        Kind::Udp,
        "uas_wa_echo.xml",
        sipp_b_port,
        free_port(),
        &sipp_b_dir.0,
        1,
        Arc::new(AtomicBool::new(false)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // the first `address = "127.0.0.1:…"` line is a SIP listener; find the [pbx] one
    let pbx_section = h.toml.split("[pbx]").nth(1).unwrap();
    let pbx_a_port = pbx_section
        .lines()
        .find_map(|l| l.strip_prefix("address = \"127.0.0.1:"))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let moved = h.toml.replace(
        &format!("127.0.0.1:{pbx_a_port}"),
        &format!("127.0.0.1:{sipp_b_port}"),
    );
    assert_ne!(moved, h.toml);
    std::fs::write(&path, &moved).unwrap();
    *env.0.lock().unwrap() = (
        "e2e-token-rotated".into(),
        APP_SECRET.into(), // the simulator signs with this one: keep it
        "e2e-verify-rotated".into(),
    );
    let restart = gw.reload_config_with(&env).await.unwrap();
    assert!(
        restart.is_empty(),
        "trunk and credentials apply without a restart: {restart:?}"
    );
    let old = h.sim.verify_webhook("e2e-verify").await.unwrap();
    assert_eq!(old.status, 403, "old verify token refused: {old:?}");
    let new = h.sim.verify_webhook("e2e-verify-rotated").await.unwrap();
    assert!(new.verified, "new verify token accepted: {new:?}");

    // Call 2 goes to PBX B with the new token.
    let second = h.user_calls_from("4915187654321").await;
    h.wait_active(&second).await;

    // Both users hang up: call 1's BYE must reach PBX A, which still serves it.
    h.sim.user_hangs_up(&first).await.unwrap();
    h.sim.user_hangs_up(&second).await.unwrap();
    let run_a = h.sipp_result().await;
    assert_sipp_ok(&run_a);
    assert!(
        run_a.messages.contains("BYE sip:"),
        "PBX A got call 1's BYE after the reload"
    );
    let run_b = tokio::task::spawn_blocking(move || sipp_b.join().unwrap())
        .await
        .unwrap();
    assert_sipp_ok(&run_b);
    assert!(
        run_b.messages.contains("INVITE sip:"),
        "PBX B got call 2's INVITE"
    );
    assert!(
        !run_a.messages.contains("4915187654321"),
        "call 2 never went to PBX A"
    );

    // Graph requests: old token before the reload, the rotated one after.
    let graph = h.sim.graph_requests();
    let tokens: Vec<_> = graph
        .iter()
        .map(|r| (r.call_id.clone(), r.bearer.clone().unwrap_or_default()))
        .collect();
    assert!(
        tokens[..before_reload]
            .iter()
            .all(|(_, t)| t == "e2e-token"),
        "{tokens:?}"
    );
    let after: Vec<_> = tokens[before_reload..]
        .iter()
        .filter(|(id, _)| id.as_deref() == Some(second.as_str()))
        .collect();
    assert!(!after.is_empty(), "call 2 used the Graph API: {tokens:?}");
    assert!(
        after.iter().all(|(_, t)| t == "e2e-token-rotated"),
        "{tokens:?}"
    );

    assert_released(&gw).await;

    // A broken file is refused and the running config stays (trunk B).
    std::fs::write(&path, "[pbx]\naddress = ").unwrap();
    assert!(gw.reload_config_with(&env).await.is_err());
    let text = gw.metrics().encode();
    assert!(
        text.contains("whatsip_config_reloads_total{result=\"applied\"} 1")
            && text.contains("whatsip_config_reloads_total{result=\"refused\"} 1"),
        "{text}"
    );
    gw.shutdown().await;
    h.sim.shutdown().await;
}
