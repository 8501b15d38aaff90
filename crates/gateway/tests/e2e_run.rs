//! `whatsip run --config FILE` starts the gateway from a file (secrets from files), listens
//! on the configured webhook and SIP addresses, and exits cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::Read as _;
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port")
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn run_starts_listening_and_stops_on_sigterm() {
    let dir = TempDir(std::env::temp_dir().join(format!("whatsip-run-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    for (name, value) in [("token", "t0k"), ("secret", "s3cret"), ("verify", "v")] {
        std::fs::write(dir.0.join(name), format!("{value}\n")).unwrap();
    }
    let (webhook, sip, pbx) = (free_port(), free_port(), free_port());
    let config = dir.0.join("whatsip.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[meta]
graph_base_url = "http://127.0.0.1:9"
access_token = {{ file = "{d}/token" }}
app_secret = {{ file = "{d}/secret" }}
verify_token = {{ file = "{d}/verify" }}

[[business_numbers]]
phone_number_id = "106540352242922"
number = "+4930901820"

[webhook]
listen = "127.0.0.1:{webhook}"

[[sip.listen]]
transport = "tcp"
address = "127.0.0.1:{sip}"

[pbx]
address = "127.0.0.1:{pbx}"
transport = "tcp"
options_ping_interval_s = 0

[media]
bind = "127.0.0.1"
rtp_port_min = 45200
rtp_port_max = 45239

[admin]
listen = ""

[[dialplan.rule]]
name = "all"
direction = "inbound"
target = "sip:2000@127.0.0.1"
"#,
            d = dir.0.display()
        ),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // bounded: 20 s for the listeners to come up
    let mut up = false;
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", webhook)).is_ok()
            && TcpStream::connect(("127.0.0.1", sip)).is_ok()
        {
            up = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let mut status = None;
    for _ in 0..400 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(up, "gateway never listened:\n{stderr}");
    let status = status.expect("gateway did not stop on SIGTERM");
    assert!(status.success(), "exit {status:?}:\n{stderr}");
    assert!(stderr.contains("gateway started"), "{stderr}");
    // secrets never reach the log
    assert!(
        !stderr.contains("s3cret") && !stderr.contains("t0k"),
        "{stderr}"
    );
}
