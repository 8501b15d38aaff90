//! The outbound direction: SIPp as the PBX places business-initiated calls through whatsip
//! (`scripts/bench/uac_pcap.xml`, RTP from a pcap generated at run start) to simulated
//! WhatsApp users who pick up at once with their WebRTC phones.
//!
//! The driver does not dial these calls, so it follows them: a watcher polls the simulator's
//! call list, counts the live calls and keeps each user's phone probe (the registry keeps the
//! latest 1024 phones only). Per-call outcomes join three views: the gateway's milestones
//! (by the `PbxInvite` milestone's user), the simulator's call, and the phone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use whatsip_sim::core::{CallState, Direction as SimDirection};
use whatsip_sim::{PhoneNumberId, PhoneProbe, PhoneRegistry, SimHandle, WaId};

use super::Clock;

/// The WhatsApp user of outbound call `i` (0-based), digits only. Inbound callers are
/// `49151…`, so the two directions never share a user.
pub(crate) fn user_number(i: usize) -> String {
    format!("49172{:08}", i + 1)
}

/// SIPp's injection file: one user per call, in call order (`[field0]`).
pub(crate) fn write_users_csv(path: &Path, total: usize) -> Result<(), String> {
    let mut s = String::with_capacity(16 + total * 16);
    s.push_str("SEQUENTIAL\n");
    for i in 0..total {
        s.push_str(&user_number(i));
        s.push_str(";\n");
    }
    std::fs::write(path, s).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every outbound user accepts call permission for the business number, as if asked
/// earlier: the simulator records it and sends the `call_permission_reply` webhook, so the
/// gateway knows the permission and does not query Graph while the call is set up. Waits
/// (bounded) until the gateway took the webhooks.
pub(crate) async fn grant_permissions(
    sim: &SimHandle,
    pnid: &PhoneNumberId,
    total: usize,
) -> Result<(), String> {
    let users: Vec<WaId> = (0..total)
        .map(|i| WaId::parse(&user_number(i)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    for chunk in users.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for user in chunk {
            let sim = sim.clone();
            let pnid = pnid.clone();
            let user = user.clone();
            set.spawn(async move {
                sim.user_replies_permission(
                    &pnid,
                    &user,
                    whatsip_sim::core::PermissionReply::AcceptPermanent,
                )
                .await
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())?
                .map_err(|e| format!("permission: {e}"))?;
        }
    }
    // bounded: 60 s for the webhooks to be delivered (answered 200 by the gateway)
    for _ in 0..300 {
        let delivered = sim
            .webhooks()
            .iter()
            .filter(|w| {
                w.labels.iter().any(|l| l == "call_permission_reply")
                    && matches!(w.outcome, whatsip_sim::DeliveryOutcome::Status(200))
            })
            .count();
        if delivered >= total {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the gateway did not take {total} call_permission_reply webhooks within 60 s"
    ))
}

/// One outbound call as the simulator and the phone saw it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Watched {
    pub(crate) wa_call_id: String,
    pub(crate) active: bool,
    pub(crate) terminated: bool,
    pub(crate) end: Option<String>,
    pub(crate) probe: Option<PhoneProbe>,
    /// The phone reported ICE + DTLS up at least once.
    pub(crate) connected: bool,
}

/// Live outbound calls (answered at the simulator, not ended) and outbound calls seen and
/// not yet ended, updated by the watcher.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) live: AtomicUsize,
    pub(crate) open: AtomicUsize,
    pub(crate) seen: AtomicUsize,
}

/// Polls the simulator every 250 ms (up to 1 s once it holds thousands of calls: each poll
/// copies every call's snapshot) until `stop` is set or one hour passed; returns the
/// outbound calls by user (digits).
pub(crate) fn spawn_watcher(
    sim: Arc<SimHandle>,
    phones: PhoneRegistry,
    counts: Arc<Counts>,
    stop: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<HashMap<String, Watched>> {
    tokio::spawn(async move {
        let mut calls: HashMap<String, Watched> = HashMap::new();
        let started = Clock::mono();
        // bounded: one hour
        for _ in 0..14_400u32 {
            if started.elapsed() > Duration::from_secs(3_600) {
                break;
            }
            let last = stop.load(Ordering::Relaxed) != 0;
            let snapshot = sim.calls();
            let pause = Duration::from_millis(250 + (snapshot.len() as u64 / 4).min(750));
            for c in snapshot {
                if c.direction != SimDirection::BusinessInitiated {
                    continue;
                }
                let user = c.user.as_str().to_owned();
                let w = calls.entry(user).or_default();
                if w.terminated {
                    continue;
                }
                w.wa_call_id = c.id.as_str().to_owned();
                if c.state == CallState::Active {
                    w.active = true;
                }
                if w.probe.is_none() && matches!(c.state, CallState::Active | CallState::Ringing) {
                    w.probe = phones.find(&c.user);
                }
                if !w.connected
                    && let Some(s) = w.probe.as_ref().and_then(PhoneProbe::status)
                {
                    w.connected = s.connected;
                }
                if c.state == CallState::Terminated {
                    w.terminated = true;
                    w.end = c.end.map(|e| format!("{:?}", e.reason));
                }
            }
            let live = calls.values().filter(|w| w.active && !w.terminated).count();
            let open = calls.values().filter(|w| !w.terminated).count();
            counts.live.store(live, Ordering::Relaxed);
            counts.open.store(open, Ordering::Relaxed);
            counts.seen.store(calls.len(), Ordering::Relaxed);
            if last {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        calls
    })
}

/// SIPp's statistics file (`-trace_stat`, `;`-separated): the last row's value of a column
/// whose name starts with `name` (`TotalCallCreated`, `SuccessfulCall(C)`, `FailedCall(C)`).
pub(crate) fn sipp_stat(csv: &str, name: &str) -> Option<u64> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let col = header.iter().position(|h| h.trim() == name)?;
    last.get(col)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_distinct_valid_numbers_in_sipp_order() {
        assert_eq!(user_number(0), "4917200000001");
        assert!(WaId::parse(&user_number(99_999)).is_ok());
        let dir = std::env::temp_dir().join(format!("bench-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("users.csv");
        write_users_csv(&p, 3).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            text,
            "SEQUENTIAL\n4917200000001;\n4917200000002;\n4917200000003;\n"
        );
    }

    #[test]
    fn sipp_stat_reads_the_last_row() {
        let csv = "StartTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);\n\
                   t0;1;0;0;\n\
                   t1;5;4;1;\n";
        assert_eq!(sipp_stat(csv, "TotalCallCreated"), Some(5));
        assert_eq!(sipp_stat(csv, "SuccessfulCall(C)"), Some(4));
        assert_eq!(sipp_stat(csv, "FailedCall(C)"), Some(1));
        assert_eq!(sipp_stat(csv, "Nope"), None);
    }
}
