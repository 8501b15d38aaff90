//! Deduplication and out-of-order protection for webhook events (reference §1.1: Meta
//! delivers at least once and out of order; `terminate` can arrive before `connect`).
//!
//! [`CallEventGuard`] is a sans-IO core: it is fed each event with the monotonic `now` and
//! the wall-clock time, and answers a [`Verdict`]. Only [`Verdict::Fresh`] events may be acted
//! on. It remembers:
//!
//! - every event's dedup key (call id + event/status + `timestamp`; message id for message
//!   events) for `dedup_ttl`, so re-deliveries are [`Verdict::Duplicate`];
//! - every call id it saw `connect` for, so a second `connect` for the same call is a duplicate
//!   even with another `timestamp`;
//! - every call id it saw `terminate` for, for `ended_ttl`, so a late `connect` or status for
//!   a call that already ended never starts a call: the first `connect` of a call whose
//!   `terminate` overtook it is [`Verdict::ConnectAfterTerminate`] (the attempt can still be
//!   recorded), anything later [`Verdict::AlreadyEnded`].
//!
//! A `connect` older than `max_connect_age` by its `timestamp` against the wall clock is
//! [`Verdict::Stale`]: the user gave up long ago (Meta allows 30–60 s to answer), so acting
//! on it would ring a PBX for a call nobody is on. Other events are not aged: a late
//! `terminate` still ends a call, a late permission reply is still true.
//!
//! Memory is bounded by `max_entries` per table; when full, the oldest entries go first.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
//! use whatsip_meta::{CallEventGuard, GuardConfig, Verdict};
//! # use whatsip_meta::{AppSecret, VerifiedWebhook, webhook_sign};
//! # let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"calls","value":{"calls":[
//! #   {"id":"wacid.X","from":"1","to":"2","event":"terminate","timestamp":"1000"},
//! #   {"id":"wacid.X","from":"1","to":"2","event":"connect","timestamp":"999","session":{"sdp_type":"offer","sdp":"v=0"}}]}}]}]}"#;
//! # let secret = AppSecret::new("s");
//! # let sig = webhook_sign(body, &secret);
//! let parsed = VerifiedWebhook::from_parts(Some(sig.as_bytes()), body.to_vec(), &secret)?.parse()?;
//! let mut guard = CallEventGuard::new(GuardConfig::default());
//! let now = Instant::now(); // a driver reads the clock once per turn
//! let wall = UNIX_EPOCH + Duration::from_secs(1001);
//! // terminate arrived first, then its connect: the connect must not start a call.
//! assert_eq!(guard.handle_event(&parsed.events[0].event, now, wall), Verdict::Fresh);
//! assert_eq!(
//!     guard.handle_event(&parsed.events[1].event, now, wall),
//!     Verdict::ConnectAfterTerminate
//! );
//! # Ok::<(), whatsip_meta::WebhookError>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant, SystemTime};

use crate::event::Event;
use crate::id::{UnixTime, WaCallId};

/// Guard settings; `Default` is the production value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// How long a dedup key is remembered (default 30 min; Meta re-sends after its ~20 s
    /// timeout, and a backlog can replay later).
    pub dedup_ttl: Duration,
    /// How long an ended call id is remembered (default 30 min).
    pub ended_ttl: Duration,
    /// A `connect` older than this is stale (default 60 s, Meta's upper answer window).
    pub max_connect_age: Duration,
    /// Upper bound on entries per table (default 100 000).
    pub max_entries: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            dedup_ttl: Duration::from_secs(30 * 60),
            ended_ttl: Duration::from_secs(30 * 60),
            max_connect_age: Duration::from_secs(60),
            max_entries: 100_000,
        }
    }
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// New: act on it.
    Fresh,
    /// Seen before: drop it.
    Duplicate,
    /// A `connect` or status for a call already terminated: drop it; never start the call.
    AlreadyEnded,
    /// The first `connect` of a call whose `terminate` came first (the caller hung up
    /// before the offer reached us): never start the call, but the attempt may be recorded.
    ConnectAfterTerminate,
    /// A `connect` too old to act on.
    Stale {
        /// Its age by `timestamp`.
        age: Duration,
    },
}

/// The dedup and out-of-order core. One per webhook receiver, owned by one task.
#[derive(Debug)]
pub struct CallEventGuard {
    config: GuardConfig,
    seen: ExpiringSet<String>,
    connected: ExpiringSet<WaCallId>,
    ended: ExpiringSet<WaCallId>,
}

impl CallEventGuard {
    /// A guard with empty memory.
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            seen: ExpiringSet::default(),
            connected: ExpiringSet::default(),
            ended: ExpiringSet::default(),
        }
    }

    /// Judges one event. `now` is monotonic time for expiry, `wall` the current wall-clock
    /// time for staleness.
    pub fn handle_event(&mut self, event: &Event, now: Instant, wall: SystemTime) -> Verdict {
        self.handle_timeout(now);
        let max = self.config.max_entries;
        if let Some(key) = dedup_key(event) {
            if self.seen.contains(&key) {
                return Verdict::Duplicate;
            }
            self.seen.insert(key, now + self.config.dedup_ttl, max);
        }
        match event {
            Event::Connect(c) => {
                if self.ended.contains(&c.call_id) {
                    if self.connected.contains(&c.call_id) {
                        return Verdict::AlreadyEnded;
                    }
                    self.connected
                        .insert(c.call_id.clone(), now + self.config.ended_ttl, max);
                    return Verdict::ConnectAfterTerminate;
                }
                if self.connected.contains(&c.call_id) {
                    return Verdict::Duplicate;
                }
                self.connected
                    .insert(c.call_id.clone(), now + self.config.ended_ttl, max);
                let age = age_of(c.timestamp, wall);
                if age > self.config.max_connect_age {
                    return Verdict::Stale { age };
                }
                Verdict::Fresh
            }
            Event::Terminate(t) => {
                if self.ended.contains(&t.call_id) {
                    return Verdict::Duplicate;
                }
                self.ended
                    .insert(t.call_id.clone(), now + self.config.ended_ttl, max);
                Verdict::Fresh
            }
            Event::Status(s) if self.ended.contains(&s.call_id) => Verdict::AlreadyEnded,
            _ => Verdict::Fresh,
        }
    }

    /// Whether a `terminate` for `call_id` was seen and is still remembered.
    pub fn has_ended(&self, call_id: &WaCallId) -> bool {
        self.ended.contains(call_id)
    }

    /// Forgets expired entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.seen.expire(now);
        self.connected.expire(now);
        self.ended.expire(now);
    }

    /// When the next entry expires. Drivers may arm a timer on it, or rely on
    /// [`Self::handle_event`] expiring lazily.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.seen.next_expiry(),
            self.connected.next_expiry(),
            self.ended.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Entries held in all tables.
    pub fn len(&self) -> usize {
        self.seen.map.len() + self.connected.map.len() + self.ended.map.len()
    }

    /// Whether the guard holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn age_of(timestamp: UnixTime, wall: SystemTime) -> Duration {
    wall.duration_since(timestamp.to_system_time())
        .unwrap_or(Duration::ZERO)
}

fn dedup_key(event: &Event) -> Option<String> {
    Some(match event {
        Event::Connect(c) => format!("connect|{}|{}", c.call_id, c.timestamp),
        Event::Terminate(t) => format!("terminate|{}|{}", t.call_id, t.timestamp),
        Event::Status(s) => format!("status|{}|{}|{}", s.call_id, s.status, s.timestamp),
        Event::PermissionReply(r) => format!("reply|{}", r.message_id),
        Event::MessageFailed(m) => format!("failed|{}|{}", m.message_id, m.timestamp),
        Event::AccountSettingsUpdate(u) => {
            let ts = u.timestamp?;
            format!(
                "settings|{}|{ts}",
                u.phone_number_id.as_ref().map_or("", |p| p.as_str())
            )
        }
        // No timestamp or id to tell a re-delivery from a new occurrence: always delivered.
        Event::Errors(_) | Event::AccountUpdate(_) => return None,
    })
}

/// A set whose entries expire; insertion order equals expiry order because each set uses one
/// TTL and `now` never goes back.
#[derive(Debug)]
struct ExpiringSet<K> {
    map: HashMap<K, Instant>,
    order: VecDeque<(Instant, K)>,
}

impl<K> Default for ExpiringSet<K> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> ExpiringSet<K> {
    fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    fn insert(&mut self, key: K, expires: Instant, max_entries: usize) {
        while self.map.len() >= max_entries.max(1) {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&oldest);
        }
        if self.map.insert(key.clone(), expires).is_none() {
            self.order.push_back((expires, key));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.map.remove(&key);
            }
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at)
    }
}
