//! The README's run command: `./scripts/demo.sh` runs `whatsip demo`. This test runs the same
//! binary and subcommand (and plain `whatsip`, which must do the same with no config file),
//! and checks the call's timeline, the audio and DTMF checks and the exit status.
//!
//! The demo binds the embedded demo config's fixed ports on 127.0.0.1 (Graph 18080, webhook
//! 18081, SIP 15060, PBX 15070, RTP 40000–40999), which no other test uses; both runs happen
//! one after the other in this one test so they never overlap.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Hard bound on one demo run: the demo bounds itself at 30 s; a debug build on a loaded
/// 2-core machine gets generous slack on top.
const LIMIT: Duration = Duration::from_secs(120);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_whatsip(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start whatsip");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let steps = LIMIT.as_millis() / 50;
    let mut code = None;
    let mut finished = false;
    for _ in 0..steps {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    let run = Run {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        finished,
        "whatsip {args:?} still running after {LIMIT:?}; stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

fn assert_demo_passed(args: &[&str]) {
    let run = run_whatsip(args);
    let out = &run.stdout;
    let context = format!("whatsip {args:?}\nstdout:\n{out}\nstderr:\n{}", run.stderr);
    assert_eq!(run.code, Some(0), "{context}");
    // The timeline, in the order the call goes (each line is "<seconds> s  <source>  <what>").
    let milestones = [
        "user     taps \"call\"",
        "gateway  webhook connect received",
        "gateway  pre_accept ok",
        "gateway  INVITE sent to sip:echo@127.0.0.1:15070",
        "pbx      INVITE received (X-WA-Call-Id: wacid.",
        "pbx      180 Ringing sent",
        "gateway  180 received from the PBX",
        "pbx      200 OK sent (answer: PCMU)",
        "gateway  200 OK received from the PBX (PCMU), ACK sent",
        "gateway  accept ok",
        "phone    hears the echo: 1000 Hz",
        "user     presses 5",
        "pbx      DTMF 5 received (RFC 4733)",
        "user     hangs up",
        "pbx      BYE received",
        "gateway  call ended (whatsapp hangup)",
    ];
    // Each source's lines come in this order. Across sources only the presence is checked:
    // the gateway's milestones are stamped when the demo reads them, which on a loaded
    // machine can be after the PBX's record of the same exchange.
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for m in milestones {
        let pos = out
            .find(m)
            .unwrap_or_else(|| panic!("timeline lacks {m:?}\n{context}"));
        let source = m.split_whitespace().next().unwrap();
        let prev = last.insert(source, pos).unwrap_or(0);
        assert!(pos >= prev, "{m:?} out of order\n{context}");
    }
    assert!(
        out.contains("X-WA-Customer-Number: +4915112345678"),
        "{context}"
    );
    assert!(
        out.contains("graph actions received by Meta: pre_accept, accept"),
        "{context}"
    );
    assert!(
        out.contains(
            "audio check: 1000 Hz tone sent by the WhatsApp user came back at 1000 Hz, level -"
        ),
        "{context}"
    );
    let audio = out.lines().find(|l| l.starts_with("audio check:")).unwrap();
    assert!(audio.ends_with(": PASS"), "{context}");
    assert!(
        out.contains(
            "dtmf check: key 5 pressed on WhatsApp reached the PBX as RFC 4733 event 5: PASS"
        ),
        "{context}"
    );
    assert!(out.trim_end().ends_with("demo: PASS"), "{context}");
}

#[test]
fn readme_demo_command_runs_the_call_end_to_end() {
    // the README's script runs exactly this binary and subcommand
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/demo.sh");
    let script = std::fs::read_to_string(&script).expect("scripts/demo.sh");
    assert!(
        script.contains("-p whatsip-gateway --bin whatsip -- demo"),
        "scripts/demo.sh no longer runs `whatsip demo`:\n{script}"
    );
    assert_demo_passed(&["demo"]);
    // no config file and no subcommand: the same demo
    assert_demo_passed(&[]);

    // The PBX's port is taken: a clear failure naming the address, exit 1, no hang.
    let squatter = std::net::UdpSocket::bind("127.0.0.1:15070").expect("bind the demo pbx port");
    let run = run_whatsip(&["demo"]);
    drop(squatter);
    assert_eq!(
        run.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("demo: FAIL: stand-in pbx") && run.stdout.contains("127.0.0.1:15070"),
        "{}",
        run.stdout
    );
}
