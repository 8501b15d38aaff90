//! The embedded demo behind `whatsip demo`: one WhatsApp call, end to end, on 127.0.0.1.
//!
//! It starts three things with the embedded demo config ([`Config::demo`]):
//!
//! - the Meta simulator (`whatsip-sim`) on the demo's Graph address, its WhatsApp users
//!   holding a real WebRTC phone (ICE-lite, DTLS-SRTP, Opus, like Meta's side);
//! - the gateway ([`crate::runtime::Gateway`]);
//! - the stand-in PBX ([`crate::pbx_standin`]), which answers and echoes audio.
//!
//! Then a simulated WhatsApp user calls the business number: the gateway receives the
//! `connect` webhook, sends `pre_accept`, INVITEs the PBX, which rings and answers, sends
//! `accept`; the user's phone plays a 1 kHz tone and must hear it come back through the
//! PBX's echo (frequency and level measured at the phone), presses a key that must reach
//! the PBX as an RFC 4733 event, and hangs up. [`run_demo`] returns a [`DemoReport`]: the
//! merged timeline of the gateway's milestones, the PBX's SIP/RTP events and the phone's
//! observations, plus the audio and DTMF checks. `docs/demo.md` explains how to read it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use whatsip_sim::core::{BusinessNumber, CallState, CoreConfig, UserCall};
use whatsip_sim::{
    PhoneNumberId, SimConfig, SimHandle, Simulator, WaCallId, WaId, WebRtcPeerFactory,
    WebhookConfig,
};
use whatsip_sip::endpoint::SystemClock;
use whatsip_sip::transport::{ListenAddr, TransportKind};

use crate::config::{Config, DEMO_ACCESS_TOKEN, DEMO_APP_SECRET};
use crate::pbx_standin::{PbxEvent, PbxRecord, StandinPbx, StandinPbxConfig};
use crate::runtime::{CallMilestone, Gateway, GatewayHandle, MilestoneKind};

/// What the demo does. `Default`: a 1 kHz tone, key `5`, 30 s overall.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The tone the WhatsApp user's phone plays.
    pub tone_hz: f64,
    /// The key the user presses.
    pub digit: char,
    /// How long the whole demo may take.
    pub timeout: Duration,
    /// How long the user stays on the call after the key press, listening.
    pub talk_time: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            tone_hz: 1_000.0,
            digit: '5',
            timeout: Duration::from_secs(30),
            talk_time: Duration::from_millis(500),
        }
    }
}

/// Who saw a timeline event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The simulated WhatsApp user (what the demo made them do).
    User,
    /// The user's phone (what its media analysis observed).
    Phone,
    /// The gateway (its per-call milestones).
    Gateway,
    /// The stand-in PBX.
    Pbx,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Phone => "phone",
            Self::Gateway => "gateway",
            Self::Pbx => "pbx",
        })
    }
}

/// One line of the timeline.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    /// Time since the user placed the call.
    pub at: Duration,
    /// Who saw it.
    pub source: Source,
    /// What happened.
    pub what: String,
}

/// The tone the phone heard coming back.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioCheck {
    /// What the phone played.
    pub sent_hz: f64,
    /// The dominant frequency heard (`None`: nothing above silence came back).
    pub heard_hz: Option<f64>,
    /// Mean level of the frames carrying it.
    pub level_dbfs: Option<f64>,
    /// Frames carrying it.
    pub frames: u64,
    /// Whether it counts as the echo of the tone sent.
    pub passed: bool,
}

/// The demo's result.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Events of the call, in time order.
    pub timeline: Vec<TimelineEntry>,
    /// The round-trip audio check, once the call got that far.
    pub audio: Option<AudioCheck>,
    /// The key pressed and what the PBX decoded (`None`: nothing arrived).
    pub dtmf: Option<(char, Option<char>)>,
    /// The Graph `/calls` actions Meta (the simulator) received, in order.
    pub graph_actions: Vec<String>,
    /// `Err` with what went wrong when the demo failed.
    pub outcome: Result<(), String>,
}

impl DemoReport {
    /// Whether every step and check passed.
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
            && self.audio.as_ref().is_some_and(|a| a.passed)
            && self.dtmf.is_some_and(|(sent, got)| got == Some(sent))
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "timeline (seconds since the user tapped \"call\"):")?;
        for e in &self.timeline {
            writeln!(
                f,
                "  {:>7.3} s  {:<7}  {}",
                e.at.as_secs_f64(),
                e.source.to_string(),
                e.what
            )?;
        }
        if !self.graph_actions.is_empty() {
            writeln!(
                f,
                "graph actions received by Meta: {}",
                self.graph_actions.join(", ")
            )?;
        }
        match &self.audio {
            Some(a) => match (a.heard_hz, a.level_dbfs) {
                (Some(hz), Some(level)) => writeln!(
                    f,
                    "audio check: {:.0} Hz tone sent by the WhatsApp user came back at {hz:.0} Hz, level {level:.1} dBFS ({} frames): {}",
                    a.sent_hz,
                    a.frames,
                    if a.passed { "PASS" } else { "FAIL" }
                )?,
                _ => writeln!(
                    f,
                    "audio check: {:.0} Hz tone sent by the WhatsApp user never came back: FAIL",
                    a.sent_hz
                )?,
            },
            None => writeln!(f, "audio check: not reached: FAIL")?,
        }
        match self.dtmf {
            Some((sent, Some(got))) if got == sent => writeln!(
                f,
                "dtmf check: key {sent} pressed on WhatsApp reached the PBX as RFC 4733 event {got}: PASS"
            )?,
            Some((sent, Some(got))) => writeln!(
                f,
                "dtmf check: key {sent} pressed on WhatsApp reached the PBX as {got}: FAIL"
            )?,
            Some((sent, None)) => writeln!(
                f,
                "dtmf check: key {sent} pressed on WhatsApp never reached the PBX: FAIL"
            )?,
            None => writeln!(f, "dtmf check: not reached: FAIL")?,
        }
        match &self.outcome {
            Ok(()) if self.passed() => writeln!(f, "demo: PASS"),
            Ok(()) => writeln!(f, "demo: FAIL (see the checks above)"),
            Err(e) => writeln!(f, "demo: FAIL: {e}"),
        }
    }
}

/// The WhatsApp user of the demo.
const DEMO_USER: &str = "4915112345678";

/// Runs the demo (see the module docs). Never panics; a failure is in
/// [`DemoReport::outcome`] with the timeline up to that point.
pub async fn run_demo(options: DemoOptions) -> DemoReport {
    let mut demo = Demo::new(options.clone());
    let outcome = tokio::time::timeout(options.timeout, demo.run()).await;
    let outcome = match outcome {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timed out after {} s (at step: {})",
            options.timeout.as_secs(),
            demo.step
        )),
    };
    demo.finish(outcome).await
}

struct Demo {
    options: DemoOptions,
    t0: Instant,
    step: &'static str,
    sim: Option<SimHandle>,
    phones: Option<whatsip_sim::PhoneRegistry>,
    gateway: Option<GatewayHandle>,
    pbx: Option<StandinPbx>,
    milestones: Arc<Mutex<Vec<(Instant, CallMilestone)>>>,
    collector: Option<tokio::task::JoinHandle<()>>,
    own: Vec<(Instant, Source, String)>,
    audio: Option<AudioCheck>,
    dtmf: Option<(char, Option<char>)>,
}

impl Demo {
    fn new(options: DemoOptions) -> Self {
        Self {
            options,
            t0: SystemClock.now(),
            step: "starting",
            sim: None,
            phones: None,
            gateway: None,
            pbx: None,
            milestones: Arc::new(Mutex::new(Vec::new())),
            collector: None,
            own: Vec::new(),
            audio: None,
            dtmf: None,
        }
    }

    fn note(&mut self, source: Source, what: impl Into<String>) {
        self.own.push((SystemClock.now(), source, what.into()));
    }

    async fn run(&mut self) -> Result<(), String> {
        self.step = "loading the embedded demo config";
        let config = Config::demo().map_err(|e| format!("embedded demo config invalid: {e}"))?;

        self.step = "starting the stand-in PBX";
        let pbx_addr = std::net::SocketAddr::new(
            config
                .pbx
                .host
                .parse()
                .map_err(|_| "the demo pbx address is not an IP".to_owned())?,
            config.pbx.port,
        );
        let pbx = StandinPbx::start(StandinPbxConfig {
            listen: vec![ListenAddr {
                kind: TransportKind::Udp,
                addr: pbx_addr,
            }],
            ..StandinPbxConfig::default()
        })
        .await
        .map_err(|e| format!("{e} (is another demo running on {pbx_addr}?)"))?;
        self.pbx = Some(pbx);

        self.step = "starting the Meta simulator";
        let graph = config.meta.graph_base_url.clone();
        let sim_listen = graph
            .strip_prefix("http://")
            .and_then(|h| h.trim_end_matches('/').parse().ok())
            .ok_or_else(|| format!("demo graph_base_url {graph} is not http://ip:port"))?;
        let business = config
            .business_numbers
            .first()
            .ok_or("the demo config has no business number")?;
        let pnid = PhoneNumberId::parse(business.phone_number_id.as_str())
            .map_err(|e| format!("demo phone number id: {e}"))?;
        let factory = WebRtcPeerFactory::new(Some(self.options.tone_hz));
        self.phones = Some(factory.registry());
        let core = CoreConfig {
            access_tokens: vec![DEMO_ACCESS_TOKEN.to_owned()],
            numbers: vec![BusinessNumber {
                phone_number_id: pnid.clone(),
                display_phone_number: business.number.digits().to_owned(),
                ..BusinessNumber::default()
            }],
            ..CoreConfig::default()
        };
        let sim = Simulator::start(SimConfig {
            listen: sim_listen,
            core,
            webhook: WebhookConfig {
                url: Some(format!(
                    "http://{}{}",
                    config.webhook.listen, config.webhook.path
                )),
                app_secret: DEMO_APP_SECRET.to_owned(),
                ..WebhookConfig::default()
            },
            peers: Arc::new(factory),
            ..SimConfig::default()
        })
        .await
        .map_err(|e| format!("simulator on {sim_listen}: {e} (is another demo running?)"))?;
        self.sim = Some(sim.clone());

        self.step = "starting the gateway";
        let gateway = Gateway::start(config)
            .await
            .map_err(|e| format!("gateway: {e}"))?;
        let mut rx = gateway.subscribe();
        let log = self.milestones.clone();
        self.collector = Some(tokio::spawn(async move {
            while let Ok(m) = rx.recv().await {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() < 1000 {
                    log.push((SystemClock.now(), m));
                }
            }
        }));
        self.gateway = Some(gateway);

        self.step = "placing the call";
        self.t0 = SystemClock.now();
        let user = WaId::parse(DEMO_USER).map_err(|e| format!("demo user: {e}"))?;
        let mut call = UserCall::new(user, pnid);
        call.cta_payload = Some("demo-button".to_owned());
        self.note(
            Source::User,
            "taps \"call\" (Meta sends the connect webhook)",
        );
        let id = sim
            .user_calls(call)
            .await
            .map_err(|e| format!("the simulated user could not call: {e}"))?;

        self.step = "waiting for the PBX to answer and the gateway to accept";
        sim.wait_for_call_state(&id, CallState::Active, Duration::from_secs(15))
            .await
            .map_err(|e| format!("the call never became active at Meta: {e}"))?;

        self.step = "checking the echoed audio";
        self.check_audio().await?;

        self.step = "pressing a key";
        self.check_dtmf(&sim, &id).await?;

        tokio::time::sleep(self.options.talk_time).await;

        self.step = "hanging up";
        self.note(Source::User, "hangs up (Meta sends the terminate webhook)");
        sim.user_hangs_up(&id)
            .await
            .map_err(|e| format!("the simulated user could not hang up: {e}"))?;
        let pbx = self.pbx.as_ref().ok_or("pbx gone")?;
        pbx.wait_for(Duration::from_secs(10), |e| {
            matches!(e, PbxEvent::ByeReceived { .. })
        })
        .await
        .ok_or("the PBX never got a BYE after the user hung up")?;
        self.step = "waiting for the gateway to release the call";
        for _ in 0..200 {
            if self
                .gateway
                .as_ref()
                .is_some_and(|g| g.calls_in_progress() == 0)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err("the gateway still holds the call after the hang-up".to_owned())
    }

    async fn check_audio(&mut self) -> Result<(), String> {
        let sent_hz = self.options.tone_hz;
        let phone = self
            .phones
            .as_ref()
            .and_then(whatsip_sim::PhoneRegistry::last)
            .ok_or("the simulator created no phone")?;
        self.note(
            Source::Phone,
            format!("plays a {sent_hz:.0} Hz tone at -12 dBFS (Opus)"),
        );
        let near = move |hz: f64| (hz - sent_hz).abs() <= 25.0;
        // half a second of the tone, so the level is an average and not one frame
        let (status, ok) = phone
            .wait_for(Duration::from_secs(10), |s| {
                s.audio
                    .tone
                    .as_ref()
                    .is_some_and(|t| near(t.freq_hz) && t.frames >= 25)
            })
            .await;
        let tone = status.and_then(|s| s.audio.tone);
        let check = AudioCheck {
            sent_hz,
            heard_hz: tone.as_ref().map(|t| t.freq_hz),
            level_dbfs: tone.as_ref().map(|t| t.level_dbfs),
            frames: tone.as_ref().map_or(0, |t| t.frames),
            // within 25 Hz (the analysis resolution) and clearly above silence
            passed: ok && tone.as_ref().is_some_and(|t| t.level_dbfs > -40.0),
        };
        if let (Some(hz), Some(level)) = (check.heard_hz, check.level_dbfs) {
            self.note(
                Source::Phone,
                format!("hears the echo: {hz:.0} Hz at {level:.1} dBFS"),
            );
        }
        let passed = check.passed;
        self.audio = Some(check);
        if passed {
            Ok(())
        } else {
            Err("the tone did not come back through the PBX's echo".to_owned())
        }
    }

    async fn check_dtmf(&mut self, sim: &SimHandle, id: &WaCallId) -> Result<(), String> {
        let digit = self.options.digit;
        self.note(
            Source::User,
            format!("presses {digit} (RFC 4733 on the WebRTC leg)"),
        );
        sim.user_presses(id, &digit.to_string())
            .await
            .map_err(|e| format!("the simulated user could not press {digit}: {e}"))?;
        let pbx = self.pbx.as_ref().ok_or("pbx gone")?;
        let got = pbx
            .wait_for(Duration::from_secs(10), |e| {
                matches!(e, PbxEvent::Digit { .. })
            })
            .await
            .and_then(|r| match r.event {
                PbxEvent::Digit { digit, .. } => Some(digit),
                _ => None,
            });
        self.dtmf = Some((digit, got));
        match got {
            Some(d) if d == digit => Ok(()),
            Some(d) => Err(format!("the PBX decoded {d}, not {digit}")),
            None => Err(format!("key {digit} never reached the PBX")),
        }
    }

    /// Stops everything (bounded) and builds the report.
    async fn finish(mut self, outcome: Result<(), String>) -> DemoReport {
        let graph_actions = self
            .sim
            .as_ref()
            .map(|s| {
                s.graph_requests()
                    .into_iter()
                    .filter(|r| r.path.ends_with("/calls") && r.method == "POST")
                    .filter_map(|r| r.action)
                    .collect()
            })
            .unwrap_or_default();
        let bound = Duration::from_secs(5);
        if let Some(g) = self.gateway.take() {
            let _ = tokio::time::timeout(bound, g.shutdown()).await;
        }
        if let Some(c) = self.collector.take() {
            c.abort();
        }
        if let Some(s) = self.sim.take() {
            let _ = tokio::time::timeout(bound, s.shutdown()).await;
        }
        let pbx_records = match self.pbx.take() {
            Some(p) => tokio::time::timeout(bound, p.stop())
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let mut entries: Vec<(Instant, Source, String)> = std::mem::take(&mut self.own);
        let milestones = self
            .milestones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        entries.extend(
            milestones
                .into_iter()
                .map(|(at, m)| (at, Source::Gateway, milestone_text(&m.kind))),
        );
        entries.extend(
            pbx_records
                .iter()
                .filter_map(|r| pbx_text(r).map(|t| (r.at, Source::Pbx, t))),
        );
        entries.sort_by_key(|(at, _, _)| *at);
        let t0 = self.t0;
        DemoReport {
            timeline: entries
                .into_iter()
                .map(|(at, source, what)| TimelineEntry {
                    at: at.saturating_duration_since(t0),
                    source,
                    what,
                })
                .collect(),
            audio: self.audio,
            dtmf: self.dtmf,
            graph_actions,
            outcome,
        }
    }
}

fn milestone_text(kind: &MilestoneKind) -> String {
    match kind {
        MilestoneKind::OfferReceived => "webhook connect received (Meta's SDP offer)".to_owned(),
        MilestoneKind::PreAccepted => "pre_accept ok (ICE/DTLS may start)".to_owned(),
        MilestoneKind::InviteSent { uri, .. } => format!("INVITE sent to {uri}"),
        MilestoneKind::Provisional { status } => format!("{status} received from the PBX"),
        MilestoneKind::Answered { codec } => {
            format!("200 OK received from the PBX ({codec}), ACK sent")
        }
        MilestoneKind::Accepted => "accept ok, media flows both ways".to_owned(),
        MilestoneKind::MediaConnected => "WebRTC media up (ICE + DTLS-SRTP)".to_owned(),
        MilestoneKind::Dtmf {
            digit,
            from_whatsapp: true,
        } => format!("DTMF {digit} relayed WhatsApp -> PBX (RFC 4733)"),
        MilestoneKind::Ended { reason, .. } => format!("call ended ({reason}): BYE/terminate done"),
        other => other.to_string(),
    }
}

fn pbx_text(r: &PbxRecord) -> Option<String> {
    Some(match &r.event {
        PbxEvent::Invite { request, .. } => {
            let wa: Vec<String> = request
                .headers
                .iter()
                .filter(|h| h.name.as_str().to_ascii_lowercase().starts_with("x-wa-"))
                .map(|h| format!("{}: {}", h.name.as_str(), shorten(&h.value)))
                .collect();
            if wa.is_empty() {
                "INVITE received".to_owned()
            } else {
                format!("INVITE received ({})", wa.join(", "))
            }
        }
        PbxEvent::Ringing { .. } => "180 Ringing sent".to_owned(),
        PbxEvent::Answered { codec, .. } => {
            format!("200 OK sent (answer: {})", codec.encoding_name())
        }
        PbxEvent::Refused { status, reason, .. } => format!("refused with {status}: {reason}"),
        PbxEvent::Acked { .. } => "ACK received".to_owned(),
        PbxEvent::MediaStarted { source, .. } => {
            format!("first RTP from {source}, echoing it back")
        }
        PbxEvent::Digit { digit, .. } => format!("DTMF {digit} received (RFC 4733)"),
        PbxEvent::Cancelled { .. } => "CANCEL received".to_owned(),
        PbxEvent::ByeReceived { .. } => "BYE received, 200 OK sent".to_owned(),
        PbxEvent::ByeSent { status, .. } => format!("BYE sent ({status:?})"),
        PbxEvent::Ended {
            rtp_received,
            rtp_echoed,
            ..
        } => format!("call over: {rtp_received} RTP packets received, {rtp_echoed} echoed"),
        _ => return None,
    })
}

/// Long values (Meta's call ids are ~100 characters) cut for a readable timeline.
fn shorten(v: &str) -> String {
    const MAX: usize = 32;
    match v.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DemoReport {
        DemoReport {
            timeline: vec![TimelineEntry {
                at: Duration::from_millis(1500),
                source: Source::Pbx,
                what: "BYE received, 200 OK sent".into(),
            }],
            audio: Some(AudioCheck {
                sent_hz: 1000.0,
                heard_hz: Some(1000.0),
                level_dbfs: Some(-12.44),
                frames: 30,
                passed: true,
            }),
            dtmf: Some(('5', Some('5'))),
            graph_actions: vec!["pre_accept".into(), "accept".into()],
            outcome: Ok(()),
        }
    }

    #[test]
    fn report_passes_only_when_the_call_and_both_checks_passed() {
        let ok = report();
        assert!(ok.passed());
        let text = ok.to_string();
        assert!(text.contains("    1.500 s  pbx      BYE received, 200 OK sent\n"));
        assert!(text.contains(
            "audio check: 1000 Hz tone sent by the WhatsApp user came back at 1000 Hz, level -12.4 dBFS (30 frames): PASS"
        ));
        assert!(text.ends_with("demo: PASS\n"));

        let mut wrong_digit = report();
        wrong_digit.dtmf = Some(('5', Some('6')));
        assert!(!wrong_digit.passed());
        assert!(wrong_digit.to_string().contains("as 6: FAIL"));

        let mut silent = report();
        silent.audio = Some(AudioCheck {
            heard_hz: None,
            level_dbfs: None,
            frames: 0,
            passed: false,
            ..report().audio.unwrap()
        });
        silent.outcome = Err("the tone did not come back through the PBX's echo".into());
        assert!(!silent.passed());
        let text = silent.to_string();
        assert!(text.contains("never came back: FAIL"));
        assert!(text.ends_with("demo: FAIL: the tone did not come back through the PBX's echo\n"));
    }

    #[test]
    fn long_header_values_are_cut_on_a_char_boundary() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(40);
        assert_eq!(shorten(&long), format!("{}…", "é".repeat(32)));
    }
}
