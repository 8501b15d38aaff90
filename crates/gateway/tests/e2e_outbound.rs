//! End to end, on 127.0.0.1: SIPp as the PBX placing calls (UAC scenarios in
//! `tests/sipp/uac_wa_*.xml`) → the gateway runtime → whatsip-sim (Meta's Graph API and
//! webhooks, with a real WebRTC phone answering business offers).
//!
//! Each test asserts the SIP responses SIPp logged and the Graph requests the simulator
//! recorded: which were sent and, as importantly, which were not (no `connect` when the
//! gateway refuses a call before Meta).
//!
//! SIPp comes from `scripts/setup.sh` (Debian `sip-tester`). Without it a test fails when
//! `CI=true` and is skipped loudly otherwise. Tests run one at a time; waits are bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::cdr::{CdrExpect, PbxLeg};
use common::{
    BUSINESS, CUSTOMER as USER, PNID, SippRun, TempDir, TestEnv, WAIT, assert_released,
    assert_sipp_ok, free_port, meta_toml, run_sipp, sipp, sipp_scenario, start_sim,
};
use whatsip_cdr::{CallRecord, HangupSide, Outcome};
use whatsip_gateway::config::Config;
use whatsip_gateway::runtime::{Gateway, GatewayHandle};
use whatsip_sim::core::{
    BusinessCallBehaviour, CoreConfig, PermissionGrant, PermissionRequestBehaviour, UserBehaviour,
    UserProfile,
};
use whatsip_sim::{Faults, GraphFault, GraphFaultRule, PhoneNumberId, SimHandle, WaId};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

struct Harness {
    sim: SimHandle,
    phones: whatsip_sim::PhoneRegistry,
    gw: Option<GatewayHandle>,
    sip_port: u16,
    dir: TempDir,
    sipp: PathBuf,
}

/// Starts the simulator (user behaviour `on_call`, permission `grant`) and the gateway.
async fn harness(
    on_call: BusinessCallBehaviour,
    grant: Option<PermissionGrant>,
    auto_request: bool,
    faults: Faults,
) -> Option<Harness> {
    harness_with(on_call, grant, auto_request, faults, "", None).await
}

/// As [`harness`], with extra lines in `[pbx]`.
async fn harness_with(
    on_call: BusinessCallBehaviour,
    grant: Option<PermissionGrant>,
    auto_request: bool,
    faults: Faults,
    pbx_extra: &str,
    admin_port: Option<u16>,
) -> Option<Harness> {
    let sipp = sipp()?;
    let n = NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
    let dir = TempDir::new("whatsip-e2e-out");
    let webhook_port = free_port();
    let user = WaId::parse(USER).unwrap();
    let core = CoreConfig {
        users: vec![UserProfile {
            wa_id: user.clone(),
            name: "E2E User".into(),
            behaviour: UserBehaviour {
                on_business_call: on_call,
                on_permission_request: PermissionRequestBehaviour::Ignore,
            },
        }],
        ..CoreConfig::default()
    };
    let (sim, phones) = start_sim(core, faults, webhook_port).await;
    if let Some(grant) = grant {
        sim.set_permission(&PhoneNumberId::parse(PNID).unwrap(), &user, grant)
            .await
            .unwrap();
    }

    let sip_port = free_port();
    let range = 43_000 + 40 * (n % 100);
    let toml = format!(
        r#"{meta}
[[business_numbers]]
phone_number_id = "106540352242999"
number = "+12025550123"

[[sip.listen]]
transport = "udp"
address = "127.0.0.1:{sip_port}"

[pbx]
address = "127.0.0.1:{pbx_port}"
transport = "udp"
codecs = ["PCMU", "PCMA"]
options_ping_interval_s = 0
{pbx_extra}

{media}
[cdr]
path = "{cdr_db}"
rate_currency = "EUR"
rates = {{ "49" = "0.0600" }}

[admin]
listen = "{admin}"

[outbound]
ring_timeout_s = 8
auto_permission_request = {auto_request}
permission_request_text = "May we call you about your order?"

[[dialplan.rule]]
name = "out-us"
direction = "outbound"
customer = {{ regex = 'us(\d+)' }}
whatsapp_user = "+${{1}}"

[[dialplan.rule]]
name = "out-intl"
direction = "outbound"
customer = {{ regex = '\+(\d+)' }}
whatsapp_user = "+${{1}}"
from_business = "+4930901820"
auto_permission_request = {auto_request}
"#,
        meta = meta_toml(&sim.base_url(), webhook_port),
        pbx_port = free_port(),
        admin = admin_port
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_default(),
        media = common::media_toml(range),
        cdr_db = dir.0.join("cdr.db").display(),
    );
    let config = Config::from_toml(&toml, Path::new("e2e.toml"), &TestEnv).unwrap();
    let gw = Gateway::start(config).await.unwrap();
    Some(Harness {
        sim,
        phones,
        gw: Some(gw),
        sip_port,
        dir,
        sipp,
    })
}

impl Harness {
    /// Runs SIPp as the PBX placing one call to `service`; returns when SIPp exits.
    async fn place_call(&self, scenario: &str, service: &str, hold_ms: u64) -> SippRun {
        self.place_call_with(scenario, service, hold_ms, None, &[])
            .await
    }

    /// As [`Self::place_call`], with the PBX asserting `from` as the calling business and
    /// extra SIPp arguments.
    async fn place_call_with(
        &self,
        scenario: &str,
        service: &str,
        hold_ms: u64,
        from: Option<&str>,
        extra: &[&str],
    ) -> SippRun {
        let mut scenario = sipp_scenario(scenario);
        if let Some(from) = from {
            let xml = std::fs::read_to_string(&scenario)
                .unwrap()
                .replace("+4930901820", from);
            scenario = self.dir.0.join("from-variant.xml");
            std::fs::write(&scenario, xml).unwrap();
        }
        let messages = self.dir.0.join(format!("{service}-messages.log"));
        let errors = self.dir.0.join(format!("{service}-errors.log"));
        let _ = std::fs::remove_file(&messages);
        let mut args: Vec<String> = vec![
            format!("127.0.0.1:{}", self.sip_port),
            "-sf".into(),
            scenario.display().to_string(),
            "-s".into(),
            service.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-mi".into(),
            "127.0.0.1".into(),
            "-mp".into(),
            free_port().to_string(),
            "-rtp_echo".into(),
            "-t".into(),
            "u1".into(),
            "-m".into(),
            "1".into(),
            "-d".into(),
            hold_ms.to_string(),
            "-nostdin".into(),
            "-timeout".into(),
            "60s".into(),
            "-timeout_error".into(),
            "-trace_msg".into(),
            "-message_file".into(),
            messages.display().to_string(),
            "-trace_err".into(),
            "-error_file".into(),
            errors.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let sipp = self.sipp.clone();
        let dir = self.dir.0.clone();
        tokio::task::spawn_blocking(move || {
            run_sipp(
                &sipp,
                &args,
                &dir,
                &messages,
                &errors,
                None,
                Duration::from_secs(90),
            )
        })
        .await
        .unwrap()
    }

    /// Graph `/calls` actions, in order.
    fn call_actions(&self) -> Vec<String> {
        common::graph_actions(&self.sim)
    }

    /// Permission requests (`POST /messages`) sent.
    fn permission_requests(&self) -> usize {
        self.sim
            .graph_requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/messages") && r.method == "POST")
            .filter(|r| r.raw_body.contains("call_permission_request"))
            .count()
    }

    /// Every final CDR, read as soon as the gateway released every call (no live call, no
    /// RTP port): each must be committed by then.
    async fn released_cdrs(&self) -> Vec<CallRecord> {
        assert_released(self.gw.as_ref().unwrap()).await;
        common::cdr::final_records(&self.dir.0.join("cdr.db"))
    }

    /// The one final CDR of the call SIPp placed in `run` (found by its SIP Call-ID), read
    /// as soon as the gateway released the call.
    async fn cdr_of(&self, run: &SippRun) -> (CallRecord, PbxLeg) {
        let call_id = common::cdr::sip_call_id_in(&run.messages, "INVITE sip:")
            .unwrap_or_else(|| panic!("no INVITE in SIPp's log:\n{}", run.messages));
        assert_released(self.gw.as_ref().unwrap()).await;
        let r = common::cdr::record_for_sip(&self.dir.0.join("cdr.db"), &call_id);
        (r, PbxLeg::CallId(call_id))
    }

    /// Waits until no call and no RTP port is held, then shuts everything down.
    async fn finish(mut self) {
        let gw = self.gw.take().unwrap();
        assert_released(&gw).await;
        gw.shutdown().await;
        self.sim.shutdown().await;
    }
}

/// The status lines of the responses SIPp received.
fn received_statuses(run: &SippRun) -> Vec<u16> {
    run.messages
        .lines()
        .filter_map(|l| l.strip_prefix("SIP/2.0 "))
        .filter_map(|l| l.get(..3)?.parse().ok())
        .collect()
}

/// What the CDR of a call from the business to [`USER`], routed by `out-intl`, must say.
fn cdr(outcome: Outcome, leg: PbxLeg) -> CdrExpect {
    CdrExpect::outbound(BUSINESS, USER, outcome)
        .route("out-intl", None)
        .pbx_leg(leg)
}

/// The rate card's 0.0600 EUR a minute for +49, in micro-units.
const RATE_49: i64 = 60_000;

fn answer_behaviour() -> BusinessCallBehaviour {
    BusinessCallBehaviour::Answer {
        after: Duration::from_secs(1),
        hang_up_after: None,
        dtmf: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_user_answers_media_flows_pbx_hangs_up() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::Temporary),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    // audio while the call is up: the phone's tone goes to the PBX as PCMU, comes back
    // from SIPp's RTP echo and reaches the phone again as Opus
    let tone = async {
        let mut phone = None;
        for _ in 0..(WAIT.as_millis() / 50) {
            phone = h.phones.last();
            if phone.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let phone = phone.expect("the simulator created a phone");
        let (status, tone) = phone.wait_for(WAIT, common::tone_ok).await;
        if !tone {
            return (status, false, false, 0);
        }
        // the live business-initiated call is counted while media flows
        let live = h.gw.as_ref().map_or(0, |g| g.calls_in_progress());
        // DTMF both ways: the phone's digit (RFC 4733 PT 126) reaches the PBX as
        // telephone-event/8000, SIPp echoes it, and it reaches the phone again on PT 126
        let call = h
            .sim
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.user.as_str() == USER)
            .expect("the business-initiated call");
        h.sim.user_presses(&call.id, "7").await.unwrap();
        let (status, digit) = phone.wait_for(WAIT, |s| s.audio.digits.contains('7')).await;
        (status, true, digit, live)
    };
    let service = format!("+{USER}");
    let (run, (status, tone_ok, digit_ok, live)) =
        tokio::join!(h.place_call("uac_wa_answer.xml", &service, 8_000), tone);
    assert_sipp_ok(&run);
    assert_eq!(
        live, 1,
        "calls_in_progress() while the outbound call was up"
    );
    assert!(tone_ok, "tone not heard back at the phone: {status:?}");
    assert!(digit_ok, "digit not echoed back to the phone: {status:?}");
    let statuses = received_statuses(&run);
    assert!(statuses.contains(&180), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let m = &run.messages;
    assert!(
        m.contains("m=audio "),
        "200 OK carries the PBX-leg SDP answer: {m}"
    );
    // PBX BYE → terminate
    let term = h
        .sim
        .wait_for_graph_request(WAIT, |r| r.action.as_deref() == Some("terminate"))
        .await;
    assert!(term.is_ok(), "{:?}", h.call_actions());
    assert_eq!(h.call_actions(), ["connect", "terminate"]);
    let connect = h
        .sim
        .graph_requests()
        .into_iter()
        .find(|r| r.action.as_deref() == Some("connect"))
        .unwrap();
    assert_eq!(connect.body["to"], USER);
    assert_eq!(connect.body["session"]["sdp_type"], "offer");
    // the CDR: keyed by Meta's call id, answered, billed in 6-second pulses; the digit
    // pressed on the phone and its echo from the PBX are two digits carried
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Answered, leg)
        .meta_assigned()
        .rang()
        .answered("PCMU")
        .dtmf(2)
        .hangup(HangupSide::Pbx)
        .billed_at(RATE_49)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_user_rejects_603() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        BusinessCallBehaviour::Reject {
            after: Duration::from_secs(1),
        },
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    let statuses = received_statuses(&run);
    assert_eq!(statuses.last(), Some(&603), "{statuses:?}");
    assert!(statuses.contains(&180), "{statuses:?}");
    assert!(
        run.messages.contains("Reason: Q.850;cause=21"),
        "{}",
        run.messages
    );
    // REJECTED is followed by Meta's terminate webhook: no terminate from us
    assert_eq!(h.call_actions(), ["connect"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Rejected, leg)
        .meta_assigned()
        .rang()
        .hangup(HangupSide::WhatsApp)
        .sip_status(603)
        .billed_at(RATE_49)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_no_answer_480_and_terminate() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        BusinessCallBehaviour::Ignore,
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    let statuses = received_statuses(&run);
    assert_eq!(statuses.last(), Some(&480), "{statuses:?}");
    let term = h
        .sim
        .wait_for_graph_request(WAIT, |r| r.action.as_deref() == Some("terminate"))
        .await;
    assert!(term.is_ok(), "{:?}", h.call_actions());
    assert_eq!(h.call_actions(), ["connect", "terminate"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::NoAnswer, leg)
        .meta_assigned()
        .rang()
        .hangup(HangupSide::Gateway)
        .sip_status(480)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_no_permission_403_without_connect_or_request() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::None),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    assert_eq!(
        received_statuses(&run).last(),
        Some(&403),
        "{}",
        run.messages
    );
    assert!(run.messages.contains("Reason: "), "{}", run.messages);
    assert!(h.call_actions().is_empty(), "{:?}", h.call_actions());
    assert_eq!(h.permission_requests(), 0);
    // the permission was queried before refusing
    assert!(
        h.sim
            .graph_requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/call_permissions"))
    );
    // refused before Meta: keyed by the PBX Call-ID
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Refused, leg)
        .hangup(HangupSide::Gateway)
        .sip_status(403)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_no_permission_sends_request_then_rate_limit_refuses_next() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::None),
        true,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    for attempt in 0..3 {
        let run = h
            .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
            .await;
        assert_sipp_ok(&run);
        assert_eq!(
            received_statuses(&run).last(),
            Some(&403),
            "attempt {attempt}: {}",
            run.messages
        );
        let (r, leg) = h.cdr_of(&run).await;
        cdr(Outcome::Refused, leg)
            .hangup(HangupSide::Gateway)
            .sip_status(403)
            .check(&r);
    }
    assert_eq!(h.released_cdrs().await.len(), 3, "one record per attempt");
    h.sim
        .wait_for_graph_request(WAIT, |r| r.path.ends_with("/messages"))
        .await
        .unwrap();
    // 1 per 24 h: the first attempt sent the request, the second and third did not
    assert_eq!(h.permission_requests(), 1);
    assert!(h.call_actions().is_empty(), "{:?}", h.call_actions());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_permission_granted_by_webhook_then_call_connects() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::None),
        true,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_eq!(
        received_statuses(&run).last(),
        Some(&403),
        "{}",
        run.messages
    );
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Refused, leg)
        .hangup(HangupSide::Gateway)
        .sip_status(403)
        .check(&r);
    h.sim
        .wait_for_graph_request(WAIT, |r| r.path.ends_with("/messages"))
        .await
        .unwrap();
    assert_eq!(h.permission_requests(), 1);
    // the user accepts: the call_permission_reply webhook feeds the gateway's cache
    h.sim
        .user_replies_permission(
            &PhoneNumberId::parse(PNID).unwrap(),
            &WaId::parse(USER).unwrap(),
            whatsip_sim::core::PermissionReply::AcceptTemporary,
        )
        .await
        .unwrap();
    h.sim
        .wait_for_webhook(WAIT, |w| w.body.contains("call_permission_reply"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = h
        .place_call("uac_wa_answer.xml", &format!("+{USER}"), 2_000)
        .await;
    assert_sipp_ok(&run);
    assert!(received_statuses(&run).contains(&200), "{}", run.messages);
    h.sim
        .wait_for_graph_request(WAIT, |r| r.action.as_deref() == Some("terminate"))
        .await
        .unwrap();
    assert_eq!(h.call_actions(), ["connect", "terminate"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Answered, leg)
        .meta_assigned()
        .rang()
        .answered("PCMU")
        .hangup(HangupSide::Pbx)
        .billed_at(RATE_49)
        .check(&r);
    assert_eq!(h.released_cdrs().await.len(), 2, "one record per attempt");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_pbx_cancel_while_ringing_terminates_487() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        BusinessCallBehaviour::Ignore,
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_cancel.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    let statuses = received_statuses(&run);
    assert!(statuses.contains(&180), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&487), "{statuses:?}");
    let term = h
        .sim
        .wait_for_graph_request(WAIT, |r| r.action.as_deref() == Some("terminate"))
        .await;
    assert!(term.is_ok(), "{:?}", h.call_actions());
    assert_eq!(h.call_actions(), ["connect", "terminate"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Cancelled, leg)
        .meta_assigned()
        .rang()
        .hangup(HangupSide::Pbx)
        .sip_status(487)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_blocked_business_country_403_nothing_sent() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    // the PBX calls from +1 202…: business-initiated calls are unavailable there (§7.2)
    let run = h
        .place_call_with(
            "uac_wa_refused.xml",
            &format!("us{USER}"),
            0,
            Some("+12025550123"),
            &[],
        )
        .await;
    assert_sipp_ok(&run);
    let statuses = received_statuses(&run);
    assert_eq!(statuses.last(), Some(&403), "{statuses:?}");
    assert!(
        run.messages.contains("Reason: Q.850;cause=57"),
        "{}",
        run.messages
    );
    assert!(run.messages.contains("Warning: "), "{}", run.messages);
    assert!(
        h.sim.graph_requests().is_empty(),
        "{:?}",
        h.sim.graph_requests()
    );
    let (r, leg) = h.cdr_of(&run).await;
    CdrExpect::outbound("12025550123", USER, Outcome::Refused)
        .route("out-us", None)
        .pbx_leg(leg)
        .hangup(HangupSide::Gateway)
        .sip_status(403)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_meta_concurrency_error_503() {
    let _serial = SERIAL.lock().await;
    let faults = Faults {
        graph: vec![GraphFaultRule {
            endpoint: Some("calls".into()),
            action: Some("connect".into()),
            fault: GraphFault::Error { code: 138002 },
            times: Some(1),
        }],
        ..Faults::default()
    };
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::Permanent),
        false,
        faults,
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    assert_eq!(
        received_statuses(&run).last(),
        Some(&503),
        "{}",
        run.messages
    );
    assert!(run.messages.contains("138002"), "{}", run.messages);
    assert!(run.messages.contains("Retry-After: "), "{}", run.messages);
    assert_eq!(h.call_actions(), ["connect"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Failed, leg)
        .hangup(HangupSide::Gateway)
        .meta("connect failed", Some(138002))
        .sip_status(503)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_sip_info_dtmf_reaches_the_phone() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    let digit = async {
        let mut phone = None;
        for _ in 0..(WAIT.as_millis() / 50) {
            phone = h.phones.last();
            if phone.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let phone = phone.expect("the simulator created a phone");
        phone.wait_for(WAIT, |s| s.audio.digits.contains('5')).await
    };
    let service = format!("+{USER}");
    let (run, (status, ok)) = tokio::join!(h.place_call("uac_wa_info.xml", &service, 3_000), digit);
    assert_sipp_ok(&run);
    // SIP INFO Signal=5 became RFC 4733 telephone-event on PT 126 toward the phone
    assert!(ok, "INFO digit not detected at the phone: {status:?}");
    h.sim
        .wait_for_graph_request(WAIT, |r| r.action.as_deref() == Some("terminate"))
        .await
        .unwrap();
    // one INFO digit sent
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Answered, leg)
        .meta_assigned()
        .rang()
        .answered("PCMU")
        .dtmf(1)
        .hangup(HangupSide::Pbx)
        .billed_at(RATE_49)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_invite_from_outside_the_trunk_acl_is_refused() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness_with(
        answer_behaviour(),
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
        r#"allowed_sources = ["192.0.2.0/24"]"#,
        None,
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    assert_eq!(
        received_statuses(&run).last(),
        Some(&403),
        "{}",
        run.messages
    );
    assert!(
        h.sim.graph_requests().is_empty(),
        "{:?}",
        h.sim.graph_requests()
    );
    // not a trunk call attempt: refused at the SIP layer, no record (anyone on the network
    // could fill the store otherwise)
    let all = h.released_cdrs().await;
    assert!(all.is_empty(), "{all:#?}");
    h.finish().await;
}

/// The PBX must authenticate its INVITEs when `inbound_auth` is set. (SIPp cannot answer
/// the SHA-256 challenge whatsip lists first, so this checks the refusal side only: an
/// INVITE without credentials is challenged and nothing reaches Meta.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_invite_without_credentials_is_challenged() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness_with(
        answer_behaviour(),
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
        r#"inbound_auth = { username = "trunk", password = { env = "E2E_PBX_PASSWORD" } }"#,
        None,
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    assert_eq!(
        received_statuses(&run).last(),
        Some(&401),
        "{}",
        run.messages
    );
    assert!(
        run.messages.contains("WWW-Authenticate: Digest"),
        "{}",
        run.messages
    );
    assert!(
        h.sim.graph_requests().is_empty(),
        "{:?}",
        h.sim.graph_requests()
    );
    // not a trunk call attempt: refused at the SIP layer, no record (anyone on the network
    // could fill the store otherwise)
    let all = h.released_cdrs().await;
    assert!(all.is_empty(), "{all:#?}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_consent_guard_refuses_after_two_rejected_calls() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        BusinessCallBehaviour::Reject {
            after: Duration::from_millis(500),
        },
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    // [outbound] max_consecutive_unanswered defaults to 2 (Meta revokes at 4)
    for attempt in 0..2 {
        let run = h
            .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
            .await;
        assert_sipp_ok(&run);
        assert_eq!(
            received_statuses(&run).last(),
            Some(&603),
            "attempt {attempt}: {}",
            run.messages
        );
        let (r, leg) = h.cdr_of(&run).await;
        cdr(Outcome::Rejected, leg)
            .meta_assigned()
            .rang()
            .hangup(HangupSide::WhatsApp)
            .sip_status(603)
            .billed_at(RATE_49)
            .check(&r);
    }
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    assert_eq!(
        received_statuses(&run).last(),
        Some(&403),
        "{}",
        run.messages
    );
    assert!(
        run.messages.contains("consecutive unanswered calls"),
        "{}",
        run.messages
    );
    // two connects, none for the refused third call
    assert_eq!(h.call_actions(), ["connect", "connect"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Refused, leg)
        .hangup(HangupSide::Gateway)
        .sip_status(403)
        .reason("Consent guard")
        .check(&r);
    assert_eq!(h.released_cdrs().await.len(), 3, "one record per attempt");
    h.finish().await;
}

/// One HTTP/1.1 request to the admin API; returns (status, body).
async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap()
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_admin_shows_permission_and_sends_request_by_hand() {
    let _serial = SERIAL.lock().await;
    let admin = free_port();
    let Some(h) = harness_with(
        answer_behaviour(),
        Some(PermissionGrant::None),
        false,
        Faults::default(),
        "",
        Some(admin),
    )
    .await
    else {
        return;
    };
    let path = format!("/permissions/+4930901820/+{USER}");
    let (status, body) = http(admin, "GET", &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"unknown""#), "{body}");

    // a call teaches the gateway that there is no permission (GET call_permissions)
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_eq!(
        received_statuses(&run).last(),
        Some(&403),
        "{}",
        run.messages
    );
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Refused, leg)
        .hangup(HangupSide::Gateway)
        .sip_status(403)
        .check(&r);
    let (status, body) = http(admin, "GET", &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"no_permission""#), "{body}");
    assert!(body.contains(r#""may_request":true"#), "{body}");
    assert_eq!(h.permission_requests(), 0);

    // by hand: sent once, then the 1-per-24-h limit refuses
    let (status, body) = http(admin, "POST", &format!("{path}/request")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.permission_requests(), 1);
    let (status, body) = http(admin, "POST", &format!("{path}/request")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("24 h"), "{body}");
    assert_eq!(h.permission_requests(), 1);
    let (status, _) = http(admin, "GET", "/permissions/+4930900000/+4915112345678").await;
    assert_eq!(status, 404);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_meta_138006_maps_to_403_and_requests_permission() {
    let _serial = SERIAL.lock().await;
    // the cache (GET call_permissions) says temporary, but Meta refuses the connect
    let faults = Faults {
        graph: vec![GraphFaultRule {
            endpoint: Some("calls".into()),
            action: Some("connect".into()),
            fault: GraphFault::Error { code: 138006 },
            times: Some(1),
        }],
        ..Faults::default()
    };
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::Temporary),
        true,
        faults,
    )
    .await
    else {
        return;
    };
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_sipp_ok(&run);
    assert_eq!(
        received_statuses(&run).last(),
        Some(&403),
        "{}",
        run.messages
    );
    assert!(run.messages.contains("138006"), "{}", run.messages);
    assert_eq!(h.call_actions(), ["connect"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Failed, leg)
        .hangup(HangupSide::Gateway)
        .meta("connect failed", Some(138006))
        .sip_status(403)
        .check(&r);
    h.sim
        .wait_for_graph_request(WAIT, |r| r.path.ends_with("/messages"))
        .await
        .unwrap();
    assert_eq!(h.permission_requests(), 1);
    // the stale cache was corrected: the next call is refused before Meta
    let run = h
        .place_call("uac_wa_refused.xml", &format!("+{USER}"), 0)
        .await;
    assert_eq!(
        received_statuses(&run).last(),
        Some(&403),
        "{}",
        run.messages
    );
    assert_eq!(h.call_actions(), ["connect"]);
    let (r, leg) = h.cdr_of(&run).await;
    cdr(Outcome::Refused, leg)
        .hangup(HangupSide::Gateway)
        .sip_status(403)
        .check(&r);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_permissions_cli_shows_and_requests() {
    use whatsip_gateway::permission_cli::{PermissionCliError, PermissionCommand, run};
    let _serial = SERIAL.lock().await;
    let admin = free_port();
    let Some(h) = harness_with(
        answer_behaviour(),
        Some(PermissionGrant::None),
        false,
        Faults::default(),
        "",
        Some(admin),
    )
    .await
    else {
        return;
    };
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], admin).into();
    let cli = |cmd: PermissionCommand| {
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            run(addr, &cmd, &mut out).map(|()| String::from_utf8(out).unwrap())
        })
    };
    let shown = cli(PermissionCommand::Show {
        business: "+4930901820".into(),
        user: format!("+{USER}"),
    })
    .await
    .unwrap()
    .unwrap();
    assert!(shown.contains(r#""status":"unknown""#), "{shown}");
    let sent = cli(PermissionCommand::Request {
        business: "+4930901820".into(),
        user: USER.into(),
    })
    .await
    .unwrap()
    .unwrap();
    assert!(sent.contains(r#""sent":true"#), "{sent}");
    assert_eq!(h.permission_requests(), 1);
    let refused = cli(PermissionCommand::Request {
        business: "+4930901820".into(),
        user: USER.into(),
    })
    .await
    .unwrap();
    assert!(
        matches!(
            refused,
            Err(PermissionCliError::Refused { status: 409, .. })
        ),
        "{refused:?}"
    );
    assert_eq!(h.permission_requests(), 1);
    // no call was placed: no record
    let all = h.released_cdrs().await;
    assert!(all.is_empty(), "{all:#?}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_out_dialled_number_without_rule_is_refused_with_its_cdr() {
    let _serial = SERIAL.lock().await;
    let Some(h) = harness(
        answer_behaviour(),
        Some(PermissionGrant::Permanent),
        false,
        Faults::default(),
    )
    .await
    else {
        return;
    };
    // no outbound rule matches `nomatch123`: refused before a call task exists
    let run = h.place_call("uac_wa_refused.xml", "nomatch123", 0).await;
    assert_sipp_ok(&run);
    let status = *received_statuses(&run).last().expect("a final response");
    assert!((400..700).contains(&status), "{}", run.messages);
    assert!(
        h.sim.graph_requests().is_empty(),
        "{:?}",
        h.sim.graph_requests()
    );
    // the trunk's attempt still gets its one record
    let (r, leg) = h.cdr_of(&run).await;
    CdrExpect::outbound(BUSINESS, "nomatch123", Outcome::Refused)
        .pbx_leg(leg)
        .hangup(HangupSide::Gateway)
        .sip_status(status)
        .reason(&status.to_string())
        .check(&r);
    h.finish().await;
}
