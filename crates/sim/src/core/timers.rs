//! The core's timer table: one deadline per key, earliest first.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::ids::{PhoneNumberId, WaCallId, WaId};

/// Timers of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum CallTimer {
    /// User-initiated: the business did not `accept` in time (30–60 s, §2.1).
    AnswerTimeout,
    /// User-initiated: the scripted caller gives up before being answered.
    GiveUp,
    /// Business-initiated: nobody picked up (undocumented length, §10.2).
    RingTimeout,
    /// Business-initiated: the scripted user answers or declines.
    UserDecision,
    /// The scripted user hangs up an active call.
    HangUp,
    /// The scripted user presses the next DTMF digits.
    Dtmf,
    /// No business media for 20 s at start / 30 s mid-call (§6.4).
    MediaWatchdog,
}

/// What a deadline belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    Call(WaCallId, CallTimer),
    /// A scripted user's reply to a pending permission request.
    PermissionReply(PhoneNumberId, WaId),
}

#[derive(Default, Debug)]
pub(crate) struct Timers {
    by_time: BTreeSet<(Instant, TimerKey)>,
    by_key: HashMap<TimerKey, Instant>,
}

impl Timers {
    pub(crate) fn set(&mut self, key: TimerKey, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    pub(crate) fn cancel(&mut self, key: &TimerKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    pub(crate) fn cancel_call(&mut self, call: &WaCallId) {
        for t in [
            CallTimer::AnswerTimeout,
            CallTimer::GiveUp,
            CallTimer::RingTimeout,
            CallTimer::UserDecision,
            CallTimer::HangUp,
            CallTimer::Dtmf,
            CallTimer::MediaWatchdog,
        ] {
            self.cancel(&TimerKey::Call(call.clone(), t));
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}
