//! Ids of WhatsApp calls that ended (or were terminated before we saw their `connect`),
//! so webhook retries and out-of-order deliveries never start a ghost call.
//!
//! Meta may deliver `terminate` before `connect` and re-deliver either (Calling API notes
//! §1.1). The call table asks `contains` before creating an `InboundCall`; every
//! `terminate` for an unknown id and every call that ends is `record`ed. Entries expire
//! after `ttl`; the set is bounded by `capacity` (oldest evicted first).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::types::WaCallId;

/// Recently ended WhatsApp call ids.
#[derive(Debug)]
pub struct EndedCalls {
    ttl: Duration,
    capacity: usize,
    expiry: HashMap<WaCallId, Instant>,
    order: VecDeque<(Instant, WaCallId)>,
}

impl EndedCalls {
    /// How long an id is remembered by default: several times Meta's ~20 s webhook timeout
    /// and the default `max_event_age_s` of 60 s.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

    /// A set remembering ids for `ttl`, at most `capacity` of them (at least 1).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            expiry: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `id` as ended at `now`.
    pub fn record(&mut self, id: WaCallId, now: Instant) {
        let until = now + self.ttl;
        if self.expiry.insert(id.clone(), until).is_none() {
            while self.expiry.len() > self.capacity {
                let Some((until, oldest)) = self.order.pop_front() else {
                    break;
                };
                // skip stale queue entries of re-recorded ids
                if self.expiry.get(&oldest) == Some(&until) {
                    self.expiry.remove(&oldest);
                }
            }
        }
        self.order.push_back((until, id));
    }

    /// Whether `id` ended recently (a `connect` for it must be ignored).
    pub fn contains(&self, id: &WaCallId, now: Instant) -> bool {
        self.expiry.get(id).is_some_and(|until| now < *until)
    }

    /// Forgets expired ids.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((until, id)) = self.order.front() {
            if *until > now {
                break;
            }
            // a re-recorded id has a later expiry in the map: keep it
            if self.expiry.get(id) == Some(until) {
                self.expiry.remove(id);
            }
            self.order.pop_front();
        }
    }

    /// When the next id expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.order.front().map(|(until, _)| *until)
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn base() -> Instant {
        Instant::now()
    }

    fn id(n: u32) -> WaCallId {
        WaCallId::new(format!("wacid.{n}")).unwrap()
    }

    #[test]
    fn terminate_before_connect_blocks_the_late_connect_until_ttl() {
        let t0 = base();
        let mut e = EndedCalls::new(Duration::from_secs(300), 10);
        e.record(id(1), t0);
        assert!(e.contains(&id(1), t0 + Duration::from_secs(299)));
        assert!(!e.contains(&id(1), t0 + Duration::from_secs(300)));
        assert!(!e.contains(&id(2), t0));
        assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(300)));
        e.handle_timeout(t0 + Duration::from_secs(300));
        assert!(e.is_empty());
        assert_eq!(e.poll_timeout(), None);
    }

    #[test]
    fn re_recorded_id_keeps_its_later_expiry() {
        let t0 = base();
        let mut e = EndedCalls::new(Duration::from_secs(10), 10);
        e.record(id(1), t0);
        e.record(id(1), t0 + Duration::from_secs(5));
        e.handle_timeout(t0 + Duration::from_secs(10));
        assert!(e.contains(&id(1), t0 + Duration::from_secs(12)));
        e.handle_timeout(t0 + Duration::from_secs(15));
        assert!(e.is_empty());
    }

    #[test]
    fn capacity_eviction_skips_stale_entries_of_re_recorded_ids() {
        let t0 = base();
        let at = |s| t0 + Duration::from_secs(s);
        let mut e = EndedCalls::new(Duration::from_secs(300), 2);
        e.record(id(1), at(0));
        e.record(id(2), at(1));
        e.record(id(1), at(2)); // id 1 is now the most recent
        e.record(id(3), at(3));
        assert!(e.contains(&id(1), at(4)), "re-recorded id survives");
        assert!(
            !e.contains(&id(2), at(4)),
            "the least recently recorded id is evicted"
        );
        assert!(e.contains(&id(3), at(4)));
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn capacity_evicts_oldest_first() {
        let t0 = base();
        let mut e = EndedCalls::new(Duration::from_secs(300), 3);
        for n in 0..5 {
            e.record(id(n), t0 + Duration::from_secs(u64::from(n)));
        }
        assert_eq!(e.len(), 3);
        assert!(!e.contains(&id(0), t0 + Duration::from_secs(5)));
        assert!(!e.contains(&id(1), t0 + Duration::from_secs(5)));
        assert!(e.contains(&id(4), t0 + Duration::from_secs(5)));
    }
}
