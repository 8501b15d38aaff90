//! Runs the built `whatsip` binary's `check-config` on good and broken files.
#![allow(clippy::unwrap_used)] // a test crate: helpers outside #[test] fns unwrap too

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("check_config")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A valid config whose secrets come from a file in `d` and the env var set by `run`.
fn good(d: &Path) -> String {
    let secret = d.join("app_secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    format!(
        r#"[meta]
access_token = {{ env = "WHATSIP_TEST_TOKEN" }}
app_secret = {{ file = "{}" }}
verify_token = {{ env = "WHATSIP_TEST_TOKEN" }}

[[business_numbers]]
phone_number_id = "106540352242922"
number = "+4930901820"

[pbx]
address = "10.0.0.10:5060"

[schedules.office]
time_zone = "Europe/Berlin"
open = ["mon-fri 09:00-17:00"]

[[dialplan.rule]]
name = "de"
direction = "inbound"
customer = {{ regex = '\+49(\d+)' }}
schedule = "office"
target = "sip:${{1}}@pbx.example.com"
"#,
        secret.display()
    )
}

fn check(name: &str, body: impl FnOnce(&Path) -> String) -> (Output, PathBuf) {
    let d = dir(name);
    let file = d.join("whatsip.toml");
    std::fs::write(&file, body(&d)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .arg("check-config")
        .arg(&file)
        .env("WHATSIP_TEST_TOKEN", "token")
        .output()
        .unwrap();
    (out, file)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The line number (1-based) of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn check_config_good_file_exits_0_with_summary() {
    let (out, file) = check("good", good);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}: ok", file.display())),
        "{stdout}"
    );
    assert!(stdout.contains("dial plan: 1 rule(s)"), "{stdout}");
    assert!(
        !stdout.contains("s3cret") && !stdout.contains("token"),
        "secrets never printed"
    );
}

fn assert_refused(
    name: &str,
    broken: impl FnOnce(String) -> String,
    needle: &str,
    key: &str,
    message: &str,
) {
    let mut text = String::new();
    let (out, file) = check(name, |d| {
        text = broken(good(d));
        text.clone()
    });
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let line = line_of(&text, needle);
    let at = format!("{}:{line}:", file.display());
    assert!(err.contains(&at), "expected location {at} in:\n{err}");
    assert!(err.contains(key), "expected key {key} in:\n{err}");
    assert!(err.contains(message), "expected `{message}` in:\n{err}");
    assert!(err.contains("config refused"), "{err}");
}

#[test]
fn check_config_bad_toml_syntax() {
    assert_refused("syntax", |g| g.replace("[pbx]", "[pbx"), "[pbx", "", "");
}

#[test]
fn check_config_unknown_key() {
    assert_refused(
        "unknown",
        |g| g.replace("[pbx]\n", "[pbx]\ntransprot = \"udp\"\n"),
        "transprot",
        "transprot",
        "unknown key",
    );
}

#[test]
fn check_config_bad_regex() {
    assert_refused(
        "regex",
        |g| g.replace(r"'\+49(\d+)'", r"'\+49(\d+'"),
        "regex =",
        "dialplan.rule[0].customer.regex",
        "bad regex",
    );
}

#[test]
fn check_config_bad_time_zone() {
    assert_refused(
        "tz",
        |g| g.replace("Europe/Berlin", "Europe/Berln"),
        "Europe/Berln",
        "schedules.office.time_zone",
        "unknown time zone",
    );
}

#[test]
fn check_config_bad_uri_template() {
    assert_refused(
        "template",
        |g| g.replace("sip:${1}@", "sip:${2}@"),
        "target =",
        "dialplan.rule[0].target",
        "capture 2",
    );
}

#[test]
fn check_config_missing_secret_source() {
    assert_refused(
        "secret",
        |g| {
            g.replace(
                r#"verify_token = { env = "WHATSIP_TEST_TOKEN" }"#,
                r#"verify_token = "inline""#,
            )
        },
        "verify_token",
        "meta.verify_token",
        "inline secrets are not allowed",
    );
    assert_refused(
        "secret-unset",
        |g| {
            g.replace(
                r#"access_token = { env = "WHATSIP_TEST_TOKEN" }"#,
                r#"access_token = { env = "WHATSIP_NEVER_SET_X" }"#,
            )
        },
        "access_token",
        "meta.access_token",
        "is not set",
    );
}

#[test]
fn check_config_missing_file_exits_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .args(["check-config", "/nonexistent/whatsip.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_takes_global_config_flag() {
    let (_, file) = check("global", good);
    let out = Command::new(env!("CARGO_BIN_EXE_whatsip"))
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .env("WHATSIP_TEST_TOKEN", "token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn check_config_try_routes_a_made_up_call() {
    let (_, file) = check("try", good);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_whatsip"))
            .arg("check-config")
            .arg(&file)
            .args(args)
            .env("WHATSIP_TEST_TOKEN", "token")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    // Monday 11:00 in Berlin: open
    assert_eq!(
        run(&[
            "--try-inbound",
            "+493012345",
            "--at",
            "2026-01-05T10:00:00Z"
        ]),
        "route: rule `de`: ring sip:3012345@pbx.example.com for 30 s"
    );
    // Monday 18:00: closed, default closed action rejects
    assert_eq!(
        run(&[
            "--try-inbound",
            "+493012345",
            "--at",
            "2026-01-05T17:00:00Z"
        ]),
        "route: rule `de`: reject (ClosedHours)"
    );
    assert_eq!(
        run(&[
            "--try-inbound",
            "+441234567890",
            "--at",
            "2026-01-05T10:00:00Z"
        ]),
        "route: no rule matches: reject"
    );
}
