//! Tokio driver for the simulated phone: one UDP socket, one task, a 20 ms ticker.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::{AudioReport, PhoneAudio, PhonePeer};
use crate::webrtc::{WaLegEvent, WaLegStats};

/// The phone's UDP socket, bound before the SDP is written (its address is the candidate).
#[derive(Debug)]
pub struct PhoneSocket {
    socket: UdpSocket,
}

impl PhoneSocket {
    /// Binds `addr` (use port 0 for an ephemeral port).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind(addr).await?,
        })
    }

    /// The bound address (put it in [`PhoneConfig::candidates`](super::PhoneConfig)).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// What the test or simulator can ask a running phone to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PhoneCommand {
    /// Send these digits as RFC 4733 events.
    SendDigits(String),
    /// Change the tone (`None`: silence).
    SetTone(Option<f64>),
    /// Stop sending audio packets entirely (to test no-media timeouts).
    Mute(bool),
    /// End the call.
    HangUp,
}

/// A snapshot of a running phone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhoneStatus {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The call ended (closed or failed).
    pub terminated: bool,
    /// Failure reason, if it failed.
    pub failure: Option<String>,
    /// Analysis of what was received.
    pub audio: AudioReport,
    /// Transport counters.
    pub stats: WaLegStats,
}

/// Handle to a running phone task.
#[derive(Debug)]
pub struct PhoneHandle {
    cmd: mpsc::Sender<PhoneCommand>,
    status: watch::Receiver<PhoneStatus>,
    task: JoinHandle<()>,
}

impl PhoneHandle {
    /// Sends a command to the phone.
    pub async fn command(&self, cmd: PhoneCommand) {
        let _ = self.cmd.send(cmd).await;
    }

    /// The latest status.
    pub fn status(&self) -> PhoneStatus {
        self.status.borrow().clone()
    }

    /// Waits until `pred` holds for the status, or `timeout` passes; returns the last status
    /// and whether `pred` held.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&PhoneStatus) -> bool,
    ) -> (PhoneStatus, bool) {
        let ok = {
            let res = tokio::time::timeout(timeout, self.status.wait_for(|s| pred(s))).await;
            matches!(res, Ok(Ok(_)))
        };
        (self.status(), ok)
    }

    /// Stops the task.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for PhoneHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `peer` (already negotiated) and `audio` on `socket` until the call ends.
pub fn run_phone(socket: PhoneSocket, peer: PhonePeer, audio: PhoneAudio) -> PhoneHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (status_tx, status_rx) = watch::channel(PhoneStatus::default());
    let task = tokio::spawn(phone_task(socket.socket, peer, audio, cmd_rx, status_tx));
    PhoneHandle {
        cmd: cmd_tx,
        status: status_rx,
        task,
    }
}

/// How often a light phone publishes its status while nothing but packets change.
const LIGHT_PUBLISH: Duration = Duration::from_millis(250);

/// The only place this driver reads the clock (STYLE.md §1).
struct SystemClock;

impl SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now() -> Instant {
        Instant::now()
    }
}

async fn phone_task(
    socket: UdpSocket,
    mut peer: PhonePeer,
    mut audio: PhoneAudio,
    mut cmd: mpsc::Receiver<PhoneCommand>,
    status: watch::Sender<PhoneStatus>,
) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 2048];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut muted = false;
    let mut failure = None;
    let mut cmd_open = true;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    // a light (load-generator) phone publishes its status at most every 250 ms, plus on any
    // change of connection state: cloning the report per packet costs more than the packet
    let light = audio.is_light();
    let mut last_publish: Option<Instant> = None;
    let mut last_connected = false;
    loop {
        // Drain and publish.
        while let Some(d) = peer.poll_datagram() {
            if let Err(e) = socket.try_send_to(&d.contents, d.destination) {
                trace!(error = %e, "phone send failed");
            }
        }
        let now_events = SystemClock::now();
        let mut changed = false;
        while let Some(e) = peer.poll_event() {
            match e {
                WaLegEvent::Rtp(p) => audio.handle_rtp(&p, now_events),
                WaLegEvent::Failed { reason } => failure = Some(reason),
                _ => {}
            }
            changed = true;
        }
        let state_changed =
            peer.is_connected() != last_connected || peer.is_terminated() || failure.is_some();
        if light
            && changed
            && !state_changed
            && last_publish.is_some_and(|t| now_events.saturating_duration_since(t) < LIGHT_PUBLISH)
        {
            changed = false;
        }
        if changed || peer.is_terminated() {
            last_publish = Some(now_events);
            last_connected = peer.is_connected();
            status.send_replace(PhoneStatus {
                connected: peer.is_connected(),
                terminated: peer.is_terminated(),
                failure: failure.clone(),
                audio: audio.report(),
                stats: peer.stats().clone(),
            });
        }
        if peer.is_terminated() {
            debug!("phone call ended");
            return;
        }
        let deadline = peer
            .poll_timeout()
            .unwrap_or_else(|| SystemClock::now() + Duration::from_secs(3600));
        sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = r {
                    peer.handle_datagram(SystemClock::now(), source, local, &buf[..n]);
                }
            }
            c = cmd.recv(), if cmd_open => {
                let now = SystemClock::now();
                match c {
                    Some(PhoneCommand::SendDigits(d)) => audio.send_digits(&d),
                    Some(PhoneCommand::SetTone(t)) => audio.set_tone(t),
                    Some(PhoneCommand::Mute(m)) => muted = m,
                    Some(PhoneCommand::HangUp) => peer.hang_up(now),
                    None => cmd_open = false,
                }
            }
            _ = ticker.tick() => {
                let now = SystemClock::now();
                if peer.is_connected() && !muted {
                    for p in audio.handle_tick(now) {
                        // Not connected yet or closing: the frame is dropped, like a real phone.
                        let _ = peer.send_rtp(&p, now);
                    }
                }
                // Only when str0m has something due: its own deadlines are the `sleep` arm's
                // job, and a timeout pass per 20 ms tick was a large share of an idle (muted or
                // signalling-only) phone's CPU.
                if peer.poll_timeout().is_some_and(|t| t <= now) {
                    peer.handle_timeout(now);
                }
            }
            () = &mut sleep => {
                peer.handle_timeout(SystemClock::now());
            }
        }
    }
}
