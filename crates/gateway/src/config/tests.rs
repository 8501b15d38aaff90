use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Secrets from a map instead of the process.
#[derive(Default)]
pub(crate) struct MapEnv {
    pub(crate) vars: HashMap<String, String>,
    pub(crate) files: HashMap<PathBuf, String>,
}

impl Environment for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
        })
    }
}

pub(crate) fn env() -> MapEnv {
    let mut e = MapEnv::default();
    e.vars
        .insert("WHATSIP_ACCESS_TOKEN".into(), "EAAG-token".into());
    e.vars
        .insert("WHATSIP_VERIFY_TOKEN".into(), "verify".into());
    e.files
        .insert("/etc/whatsip/app_secret".into(), "app-secret\n".into());
    e.files
        .insert("/etc/whatsip/pbx_password".into(), "pbx-pass\r\n".into());
    e
}

/// A minimal valid config; `extra` is appended.
pub(crate) const BASE: &str = r#"
[meta]
access_token = { env = "WHATSIP_ACCESS_TOKEN" }
app_secret = { file = "/etc/whatsip/app_secret" }
verify_token = { env = "WHATSIP_VERIFY_TOKEN" }

[[business_numbers]]
phone_number_id = "106540352242922"
number = "+4930901820"

[[business_numbers]]
phone_number_id = "106540352242923"
number = "15551441906"

[pbx]
address = "10.0.0.10"
"#;

pub(crate) fn load(extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("{BASE}{extra}"), Path::new("test.toml"), &env())
}

fn problems(extra: &str) -> std::collections::BTreeMap<String, String> {
    problem_keys(&load(extra).unwrap_err())
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/whatsip.example.toml")
}

#[test]
fn example_config_loads_with_every_section() {
    let cfg = Config::load_with(example_path(), &env()).unwrap();
    assert_eq!(cfg.meta.access_token.expose(), "EAAG-token");
    assert_eq!(
        cfg.meta.app_secret.expose(),
        "app-secret",
        "trailing newline of the file is dropped"
    );
    assert_eq!(cfg.meta.api_version, "v23.0");
    assert_eq!(cfg.business_numbers.len(), 2);
    assert!(cfg.business_numbers[0].business_initiated_calls);
    assert!(
        !cfg.business_numbers[1].business_initiated_calls,
        "+1 defaults to off (§7.2)"
    );
    assert_eq!(cfg.sip.listen.len(), 2);
    assert_eq!(
        (cfg.pbx.host.as_str(), cfg.pbx.port, cfg.pbx.transport),
        ("10.0.0.10", 5060, Transport::Udp)
    );
    assert_eq!(
        cfg.pbx.outbound_auth.as_ref().unwrap().password.expose(),
        "pbx-pass"
    );
    assert_eq!(cfg.pbx.codecs, vec![Codec::Pcma, Codec::Pcmu, Codec::G722]);
    assert_eq!(cfg.media.rtp_ports, 20000..=29999);
    assert_eq!(cfg.headers.cta_payload.as_deref(), Some("X-WA-CTA-Payload"));
    assert_eq!(cfg.outbound.rejected_status.code(), 603);
    assert_eq!(cfg.dialplan.len(), 5);
    assert!(
        cfg.warnings.is_empty(),
        "the example shows good practice: {:?}",
        cfg.warnings
    );
}

#[test]
fn demo_config_points_at_loopback() {
    let cfg = Config::demo().unwrap();
    assert!(cfg.meta.graph_base_url.starts_with("http://127.0.0.1:"));
    assert_eq!(cfg.meta.access_token.expose(), DEMO_ACCESS_TOKEN);
    assert!(cfg.webhook.listen.ip().is_loopback());
    assert!(cfg.sip.listen.iter().all(|l| l.address.ip().is_loopback()));
    assert_eq!(cfg.pbx.host, "127.0.0.1");
    assert!(cfg.media.bind.is_loopback());
    assert!(cfg.admin.listen.unwrap().ip().is_loopback());
}

#[test]
fn minimal_config_takes_documented_defaults() {
    let cfg = load("").unwrap();
    assert_eq!(cfg.meta.graph_base_url, "https://graph.facebook.com");
    assert_eq!(cfg.meta.request_timeout, Duration::from_secs(10));
    assert_eq!(cfg.webhook.path, "/webhook");
    assert_eq!(cfg.sip.listen.len(), 2);
    assert_eq!(cfg.pbx.port, 5060);
    assert_eq!(cfg.pbx.options_ping_interval, Some(Duration::from_secs(30)));
    assert!(cfg.pbx.allowed_sources[0].contains("10.0.0.10".parse().unwrap()));
    assert!(!cfg.pbx.allowed_sources[0].contains("10.0.0.11".parse().unwrap()));
    assert_eq!(cfg.media.ptime, Duration::from_millis(20));
    assert_eq!(cfg.headers.call_id.as_deref(), Some("X-WA-Call-Id"));
    assert_eq!(cfg.logging.format, LogFormat::Text);
    assert!(cfg.logging.redact_phone_numbers);
    assert_eq!(cfg.outbound.max_consecutive_unanswered, 2);
    assert!(cfg.dialplan.is_empty());
}

#[test]
fn secrets_debug_print_redacted() {
    let cfg = load("").unwrap();
    let dump = format!("{cfg:?}");
    assert!(!dump.contains("EAAG-token"), "{dump}");
    assert!(!dump.contains("app-secret"));
    assert!(dump.contains("<redacted>"));
}

#[test]
fn inline_secret_is_refused_with_how_to_fix() {
    let src = BASE.replace(
        r#"access_token = { env = "WHATSIP_ACCESS_TOKEN" }"#,
        r#"access_token = "EAAG-inline""#,
    );
    let err = Config::from_toml(&src, Path::new("t.toml"), &env()).unwrap_err();
    let p = problem_keys(&err);
    assert!(
        p["meta.access_token"].contains("inline secrets are not allowed"),
        "{p:?}"
    );
    assert!(
        !err.to_string().contains("EAAG-inline"),
        "the value must not be echoed"
    );
}

#[test]
fn missing_and_unresolvable_secrets_name_the_key() {
    let src = BASE.replace("access_token = { env = \"WHATSIP_ACCESS_TOKEN\" }\n", "");
    let p = problem_keys(&Config::from_toml(&src, Path::new("t.toml"), &env()).unwrap_err());
    assert!(p["meta.access_token"].contains("missing secret"), "{p:?}");

    let src = BASE.replace("WHATSIP_ACCESS_TOKEN", "NOT_SET_ANYWHERE");
    let p = problem_keys(&Config::from_toml(&src, Path::new("t.toml"), &env()).unwrap_err());
    assert!(
        p["meta.access_token"].contains("`NOT_SET_ANYWHERE` is not set"),
        "{p:?}"
    );

    let src = BASE.replace("/etc/whatsip/app_secret", "/nonexistent/secret");
    let p = problem_keys(&Config::from_toml(&src, Path::new("t.toml"), &env()).unwrap_err());
    assert!(
        p["meta.app_secret"].contains("cannot read secret file"),
        "{p:?}"
    );

    let src = BASE.replace(r#"{ env = "WHATSIP_VERIFY_TOKEN" }"#, "{}");
    let p = problem_keys(&Config::from_toml(&src, Path::new("t.toml"), &env()).unwrap_err());
    assert!(p["meta.verify_token"].contains("no secret source"), "{p:?}");
}

#[test]
fn unknown_key_is_a_syntax_error_with_line_and_key() {
    let err = load("\n[media]\nrtp_port_mni = 20000\n").unwrap_err();
    let ConfigError::Syntax { at, key, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(key.as_deref(), Some("media.rtp_port_mni"));
    assert!(
        message.contains("unknown key `media.rtp_port_mni`"),
        "{message}"
    );
    let expected_line = BASE.lines().count() + 3;
    assert_eq!((at.line, at.column), (expected_line, 1), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("test.toml:{expected_line}:1:")),
        "{err}"
    );
}

#[test]
fn bad_toml_syntax_reports_position() {
    let err =
        Config::from_toml("[meta\naccess_token = 1", Path::new("t.toml"), &env()).unwrap_err();
    let ConfigError::Syntax { at, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(at.line, 1);
}

#[test]
fn semantic_errors_are_all_reported_with_locations() {
    let err = load(
        r#"
[media]
rtp_port_min = 20001
opus_complexity = 11
ptime_ms = 25
[logging]
format = "xml"
[outbound]
max_consecutive_unanswered = 4
rejected_status = 404
"#,
    )
    .unwrap_err();
    let p = problem_keys(&err);
    for key in [
        "media.rtp_port_min",
        "media.opus_complexity",
        "media.ptime_ms",
        "logging.format",
        "outbound.max_consecutive_unanswered",
        "outbound.rejected_status",
    ] {
        assert!(p.contains_key(key), "{key} missing from {p:?}");
    }
    let ConfigError::Invalid(list) = &err else {
        panic!()
    };
    let ptime = list.iter().find(|x| x.key == "media.ptime_ms").unwrap();
    assert_eq!(ptime.at.line, BASE.lines().count() + 5);
    assert_eq!(ptime.at.column, 12);
}

#[test]
fn pbx_host_name_without_acl_or_auth_is_refused() {
    let src = BASE.replace(
        r#"address = "10.0.0.10""#,
        r#"address = "pbx.example.com:5080""#,
    );
    let p = problem_keys(&Config::from_toml(&src, Path::new("t.toml"), &env()).unwrap_err());
    assert!(
        p["pbx.allowed_sources"].contains("anyone could place calls"),
        "{p:?}"
    );
    let ok = format!("{src}allowed_sources = [\"192.0.2.0/24\"]\n");
    let cfg = Config::from_toml(&ok, Path::new("t.toml"), &env()).unwrap();
    assert_eq!(
        (cfg.pbx.host.as_str(), cfg.pbx.port),
        ("pbx.example.com", 5080)
    );
    assert!(cfg.pbx.allowed_sources[0].contains("192.0.2.77".parse().unwrap()));
}

#[test]
fn bad_header_names_and_tls_listener_without_cert_are_refused() {
    let p = problems(
        "[headers]\ncall_id = \"X WA\"\n[[sip.listen]]\ntransport = \"tls\"\naddress = \"0.0.0.0:5061\"\n",
    );
    assert!(p.contains_key("headers.call_id"), "{p:?}");
    assert!(p["sip.listen[0]"].contains("needs `tls_cert`"), "{p:?}");
}

#[test]
fn duplicate_business_numbers_are_refused() {
    let p = problems(
        "[[business_numbers]]\nphone_number_id = \"106540352242922\"\nnumber = \"+4930901820\"\n",
    );
    assert!(
        p["business_numbers[2].phone_number_id"].contains("twice"),
        "{p:?}"
    );
}

#[test]
fn ip_net_matches_prefixes_and_v4_mapped_v6() {
    let n = IpNet::parse("10.1.0.0/16").unwrap();
    assert!(n.contains("10.1.255.1".parse().unwrap()));
    assert!(!n.contains("10.2.0.1".parse().unwrap()));
    assert!(n.contains("::ffff:10.1.2.3".parse::<IpAddr>().unwrap()));
    assert!(
        IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("192.0.2.1".parse().unwrap())
    );
    assert!(
        IpNet::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::1".parse().unwrap())
    );
    assert!(IpNet::parse("10.0.0.0/33").is_none());
    assert!(IpNet::parse("pbx").is_none());
}

mod fuzzish {
    use proptest::prelude::*;

    use super::*;

    fn example() -> String {
        std::fs::read_to_string(example_path()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Nothing in a config file can panic the loader: random edits of the example
        /// (byte replacement, truncation, line duplication) give Ok or an error.
        #[test]
        fn config_loader_never_panics_on_edited_example(
            pos in 0usize..10_000,
            byte in any::<u8>(),
            cut_at in 0usize..10_000,
            dup_line in 0usize..300,
        ) {
            let mut text = example().into_bytes();
            let p = pos % text.len();
            text[p] = byte;
            let mut text = String::from_utf8_lossy(&text).into_owned();
            if cut_at % 3 == 0 {
                let mut c = cut_at % text.len();
                while !text.is_char_boundary(c) { c -= 1; }
                text.truncate(c);
            }
            let lines: Vec<&str> = text.lines().collect();
            if let Some(l) = lines.get(dup_line % lines.len().max(1)) {
                text = format!("{text}\n{l}\n");
            }
            let _ = Config::from_toml(&text, Path::new("fuzz.toml"), &env());
        }

        /// Any value in a dial plan regex, template or schedule slot is refused cleanly or accepted.
        #[test]
        fn dialplan_values_never_panic(value in "\\PC{0,40}") {
            let v = value.replace('\'', "");
            for tpl in [
                format!("[[dialplan.rule]]\ndirection = \"inbound\"\ncustomer = {{ regex = '{v}' }}\ntarget = \"sip:a@b\"\n"),
                format!("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = '{v}'\n"),
                format!("[schedules.s]\ntime_zone = '{v}'\n"),
                format!("[schedules.s]\ntime_zone = \"UTC\"\nopen = ['{v}']\n"),
            ] {
                let _ = load(&tpl);
            }
        }
    }
}

#[test]
fn suspicious_settings_are_warnings_not_errors() {
    let cfg = load(
        r#"
[webhook]
listen = "0.0.0.0:8080"
[admin]
listen = "0.0.0.0:9090"
[[dialplan.rule]]
direction = "inbound"
target = "sip:a@pbx"
ring_timeout_s = 30
fallback = [{ on = ["any"], target = "sip:b@pbx", ring_timeout_s = 30 }]
"#,
    )
    .unwrap();
    let keys: Vec<&str> = cfg.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "webhook.listen",
            "admin.listen",
            "dialplan.rule[0].fallback"
        ],
        "{:?}",
        cfg.warnings
    );
    assert!(cfg.warnings[2].message.contains("60 s in total"));
    assert!(
        load("").unwrap().warnings.is_empty(),
        "defaults warn about nothing"
    );
}

#[test]
fn media_socket_count_and_buffers_default_and_validate() {
    let cfg = load("").unwrap();
    assert_eq!(cfg.media.webrtc_sockets, super::default_webrtc_sockets());
    assert!((1..=8).contains(&cfg.media.webrtc_sockets));
    assert_eq!(cfg.media.webrtc_socket_buffer_bytes, 4 << 20);
    assert_eq!(cfg.media.rtp_socket_buffer_bytes, 1 << 20);
    let cfg = load(
        "[media]\nwebrtc_sockets = 3\nwebrtc_socket_buffer_bytes = 0\nrtp_socket_buffer_bytes = 65536\n",
    )
    .unwrap();
    assert_eq!(cfg.media.webrtc_sockets, 3);
    assert_eq!(cfg.media.webrtc_socket_buffer_bytes, 0);
    assert_eq!(cfg.media.rtp_socket_buffer_bytes, 65_536);
    let p = problems(
        "[media]\nwebrtc_sockets = 0\nwebrtc_socket_buffer_bytes = 100\nrtp_socket_buffer_bytes = 2147483648\n",
    );
    for key in [
        "media.webrtc_sockets",
        "media.webrtc_socket_buffer_bytes",
        "media.rtp_socket_buffer_bytes",
    ] {
        assert!(p.contains_key(key), "{key} missing from {p:?}");
    }
    // four sockets need two pairs; a four-pair range keeps two for calls, a two-pair one none
    assert!(
        load("[media]\nwebrtc_sockets = 4\nrtp_port_min = 30000\nrtp_port_max = 30007\n").is_ok()
    );
    let p = problems("[media]\nwebrtc_sockets = 4\nrtp_port_min = 30000\nrtp_port_max = 30003\n");
    assert!(p.contains_key("media.webrtc_sockets"), "{p:?}");
}

#[test]
fn tls_trunk_trusts_the_configured_ca_and_tls_ca_needs_tls() {
    let ca = std::env::temp_dir().join(format!("whatsip-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, "not checked at load").unwrap();
    let cfg = load(&format!(
        "transport = \"tls\"\ntls_ca = \"{}\"\n",
        ca.display()
    ))
    .unwrap();
    assert_eq!(cfg.pbx.tls_ca.as_deref(), Some(ca.as_path()));
    assert_eq!(cfg.pbx.port, 5061, "the TLS default port");
    let _ = std::fs::remove_file(&ca);

    let p = problems("transport = \"tls\"\ntls_ca = \"/nonexistent/ca.pem\"\n");
    assert!(p["pbx.tls_ca"].contains("cannot read"), "{p:?}");
    let p = problems("tls_ca = \"/etc/hostname\"\n");
    assert!(p["pbx.tls_ca"].contains("only applies"), "{p:?}");
    assert_eq!(load("").unwrap().pbx.tls_ca, None, "udp trunk: no CA");
}

#[test]
fn jitter_buffer_frames_default_and_bounds() {
    assert_eq!(load("").unwrap().media.jitter_buffer_frames, 2);
    let cfg = load("[media]\njitter_buffer_frames = 0\n").unwrap();
    assert_eq!(cfg.media.jitter_buffer_frames, 0);
    let p = problems("[media]\njitter_buffer_frames = 11\n");
    assert!(p.contains_key("media.jitter_buffer_frames"), "{p:?}");
}
