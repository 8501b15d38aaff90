//! Call permissions and the consent guard for business-initiated calls (issue 6,
//! Calling API notes §3). Sans-IO: fed by webhooks, `GET call_permissions` replies and
//! call outcomes, asked before a `connect` is sent. Wall-clock time is passed in.
//!
//! Meta's rules this enforces ahead of Meta (§3.6), per business number + user pair:
//! - a temporary permission lasts 7 days and expires without a webhook;
//! - permission requests: 1 per 24 h and 2 per 7 days, reset by any connected call
//!   between the pair; none while a permanent permission exists (138017);
//! - connected business-initiated calls: at most 100 per 24 h (configurable lower);
//! - 4 consecutive unanswered or rejected calls revoke the permission; the consent guard
//!   refuses calls earlier, after `max_consecutive_unanswered` (1 to 3). The count resets
//!   when a business-initiated call is answered or the user grants permission again.

use std::collections::{HashMap, VecDeque};

use jiff::Timestamp;

use crate::call::OutboundFailure;
use crate::config::OutboundPolicy;
use crate::types::E164;

const DAY_S: i64 = 24 * 3600;
const WEEK_S: i64 = 7 * DAY_S;

/// Limits the tracker applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardPolicy {
    /// Refuse after this many consecutive unanswered/rejected calls.
    pub max_consecutive_unanswered: u32,
    /// Connected calls per user per rolling 24 h.
    pub max_connected_per_day: u32,
    /// Permission requests per rolling 24 h (Meta: 1; sandbox numbers: 25).
    pub requests_per_day: u32,
    /// Permission requests per rolling 7 days (Meta: 2; sandbox numbers: 100).
    pub requests_per_week: u32,
}

impl From<&OutboundPolicy> for GuardPolicy {
    fn from(p: &OutboundPolicy) -> Self {
        Self {
            max_consecutive_unanswered: p.max_consecutive_unanswered,
            max_connected_per_day: p.max_connected_calls_per_user_per_day,
            requests_per_day: 1,
            requests_per_week: 2,
        }
    }
}

/// What is known about a user's permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Never heard of: ask `GET call_permissions` or let Meta answer the `connect`.
    Unknown,
    /// No permission (never granted, rejected, revoked, or a temporary one expired).
    None,
    /// Granted until `expires`.
    Temporary {
        /// Expiry (Meta's `expiration_timestamp`).
        expires: Timestamp,
    },
    /// Granted without expiry.
    Permanent,
}

/// A `call_permission_reply` webhook (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionReply {
    /// `response == "accept"`.
    pub accepted: bool,
    /// `is_permanent`.
    pub permanent: bool,
    /// `expiration_timestamp`, for temporary grants.
    pub expires: Option<Timestamp>,
}

/// How a business-initiated call ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The user answered.
    Connected,
    /// Not answered or rejected (Meta's consecutive-miss rule counts it).
    Unanswered,
    /// Ended otherwise (PBX cancel, local error): counts for nothing.
    Other,
}

/// Why a permission request is not sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestRefusal {
    /// The user already granted a permanent permission (Meta would answer 138017).
    #[error("the user already granted a permanent permission")]
    AlreadyPermanent,
    /// A request was sent within the last 24 h.
    #[error("permission request limit per 24 h reached")]
    DailyLimit,
    /// Two requests were sent within the last 7 days.
    #[error("permission request limit per 7 days reached")]
    WeeklyLimit,
}

#[derive(Debug, Default)]
struct Pair {
    permission: Option<Permission>,
    consecutive_unanswered: u32,
    /// Epoch seconds of connected calls in the last 24 h.
    connected: VecDeque<i64>,
    /// Epoch seconds of permission requests in the last 7 days (since the last connected call).
    requests: VecDeque<i64>,
}

/// Permission state and counters for every business number + user pair.
#[derive(Debug)]
pub struct PermissionTracker {
    policy: GuardPolicy,
    pairs: HashMap<(E164, E164), Pair>,
}

impl PermissionTracker {
    /// An empty tracker.
    pub fn new(policy: GuardPolicy) -> Self {
        Self {
            policy,
            pairs: HashMap::new(),
        }
    }

    /// The user's permission at `now` (a temporary one past its expiry is `None`).
    pub fn permission(&self, business: &E164, user: &E164, now: Timestamp) -> Permission {
        match self
            .pairs
            .get(&(business.clone(), user.clone()))
            .and_then(|p| p.permission)
        {
            None => Permission::Unknown,
            Some(Permission::Temporary { expires }) if expires <= now => Permission::None,
            Some(p) => p,
        }
    }

    /// Checks before `connect`: permission not known to be missing, consent guard, daily cap.
    pub fn check_call(
        &mut self,
        business: &E164,
        user: &E164,
        now: Timestamp,
    ) -> Result<(), OutboundFailure> {
        let permission = self.permission(business, user, now);
        let policy = self.policy;
        let pair = self.pair(business, user);
        prune(&mut pair.connected, now.as_second() - DAY_S);
        if permission == Permission::None {
            return Err(OutboundFailure::NoPermission);
        }
        if pair.consecutive_unanswered >= policy.max_consecutive_unanswered {
            return Err(OutboundFailure::ConsentGuard {
                consecutive_unanswered: pair.consecutive_unanswered,
            });
        }
        let connected_today = u32::try_from(pair.connected.len()).unwrap_or(u32::MAX);
        if connected_today >= policy.max_connected_per_day {
            return Err(OutboundFailure::DailyCap { connected_today });
        }
        Ok(())
    }

    /// Records how a business-initiated call ended.
    pub fn record_call(
        &mut self,
        business: &E164,
        user: &E164,
        outcome: CallOutcome,
        now: Timestamp,
    ) {
        let pair = self.pair(business, user);
        match outcome {
            CallOutcome::Connected => {
                pair.consecutive_unanswered = 0;
                pair.connected.push_back(now.as_second());
                // any connected call resets the request limits (§3.6)
                pair.requests.clear();
            }
            CallOutcome::Unanswered => {
                pair.consecutive_unanswered = pair.consecutive_unanswered.saturating_add(1)
            }
            CallOutcome::Other => {}
        }
    }

    /// A user-initiated call between the pair connected: resets the request limits (§3.6).
    pub fn record_inbound_connected(&mut self, business: &E164, user: &E164) {
        self.pair(business, user).requests.clear();
    }

    /// A `call_permission_reply` webhook arrived.
    pub fn handle_reply(
        &mut self,
        business: &E164,
        user: &E164,
        reply: PermissionReply,
        now: Timestamp,
    ) {
        let pair = self.pair(business, user);
        pair.permission = Some(match (reply.accepted, reply.permanent, reply.expires) {
            (true, true, _) => Permission::Permanent,
            (true, false, Some(expires)) => Permission::Temporary { expires },
            // a temporary grant without expiry: assume the documented 7 days
            (true, false, None) => Permission::Temporary {
                expires: Timestamp::from_second(now.as_second() + WEEK_S).unwrap_or(now),
            },
            (false, _, _) => Permission::None,
        });
        if reply.accepted {
            pair.consecutive_unanswered = 0;
        }
    }

    /// The permission status from `GET call_permissions` (§3.5).
    pub fn handle_query(&mut self, business: &E164, user: &E164, permission: Permission) {
        self.pair(business, user).permission = Some(permission);
    }

    /// Meta answered `connect` with 138006: the cache was stale.
    pub fn handle_no_permission(&mut self, business: &E164, user: &E164) {
        self.pair(business, user).permission = Some(Permission::None);
    }

    /// Whether a permission request may be sent now.
    pub fn may_request(
        &mut self,
        business: &E164,
        user: &E164,
        now: Timestamp,
    ) -> Result<(), RequestRefusal> {
        if self.permission(business, user, now) == Permission::Permanent {
            return Err(RequestRefusal::AlreadyPermanent);
        }
        let policy = self.policy;
        let pair = self.pair(business, user);
        let t = now.as_second();
        prune(&mut pair.requests, t - WEEK_S);
        let last_day = pair.requests.iter().filter(|s| **s > t - DAY_S).count();
        if last_day >= usize::try_from(policy.requests_per_day).unwrap_or(usize::MAX) {
            return Err(RequestRefusal::DailyLimit);
        }
        if pair.requests.len() >= usize::try_from(policy.requests_per_week).unwrap_or(usize::MAX) {
            return Err(RequestRefusal::WeeklyLimit);
        }
        Ok(())
    }

    /// Records that a permission request was sent at `now`.
    pub fn record_request(&mut self, business: &E164, user: &E164, now: Timestamp) {
        self.pair(business, user)
            .requests
            .push_back(now.as_second());
    }

    /// Consecutive unanswered/rejected calls to the user.
    pub fn consecutive_unanswered(&self, business: &E164, user: &E164) -> u32 {
        self.pairs
            .get(&(business.clone(), user.clone()))
            .map_or(0, |p| p.consecutive_unanswered)
    }

    fn pair(&mut self, business: &E164, user: &E164) -> &mut Pair {
        self.pairs
            .entry((business.clone(), user.clone()))
            .or_default()
    }
}

/// Drops timestamps at or before `cutoff` (the queues are in time order).
fn prune(q: &mut VecDeque<i64>, cutoff: i64) {
    while q.front().is_some_and(|s| *s <= cutoff) {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn at(h: i64) -> Timestamp {
        // 2026-01-05T00:00:00Z plus `h` hours: a virtual clock
        Timestamp::from_second(1_767_571_200 + h * HOUR).unwrap()
    }

    fn biz() -> E164 {
        E164::parse("+4930901820").unwrap()
    }

    fn user() -> E164 {
        E164::parse("+441234567890").unwrap()
    }

    fn tracker(max_unanswered: u32, cap: u32) -> PermissionTracker {
        PermissionTracker::new(GuardPolicy {
            max_consecutive_unanswered: max_unanswered,
            max_connected_per_day: cap,
            requests_per_day: 1,
            requests_per_week: 2,
        })
    }

    fn grant(t: &mut PermissionTracker, now: Timestamp) {
        let reply = PermissionReply {
            accepted: true,
            permanent: false,
            expires: Some(at(7 * 24)),
        };
        t.handle_reply(&biz(), &user(), reply, now);
    }

    #[test]
    fn consent_guard_refuses_after_max_consecutive_unanswered_and_answer_resets() {
        let mut t = tracker(2, 100);
        grant(&mut t, at(0));
        t.record_call(&biz(), &user(), CallOutcome::Unanswered, at(1));
        assert_eq!(t.check_call(&biz(), &user(), at(2)), Ok(()));
        t.record_call(&biz(), &user(), CallOutcome::Unanswered, at(2));
        assert_eq!(
            t.check_call(&biz(), &user(), at(3)),
            Err(OutboundFailure::ConsentGuard {
                consecutive_unanswered: 2
            })
        );
        // time alone does not reset it: Meta counts consecutive calls, not a window
        assert!(t.check_call(&biz(), &user(), at(100)).is_err());
        // a fresh grant does
        grant(&mut t, at(101));
        assert_eq!(t.check_call(&biz(), &user(), at(102)), Ok(()));
        t.record_call(&biz(), &user(), CallOutcome::Unanswered, at(103));
        t.record_call(&biz(), &user(), CallOutcome::Connected, at(104));
        assert_eq!(t.consecutive_unanswered(&biz(), &user()), 0);
        t.record_call(&biz(), &user(), CallOutcome::Other, at(105));
        assert_eq!(
            t.consecutive_unanswered(&biz(), &user()),
            0,
            "PBX cancels do not count"
        );
    }

    #[test]
    fn daily_cap_counts_connected_calls_in_a_rolling_24h_window() {
        let mut t = tracker(3, 2);
        t.handle_query(&biz(), &user(), Permission::Permanent);
        t.record_call(&biz(), &user(), CallOutcome::Connected, at(0));
        t.record_call(&biz(), &user(), CallOutcome::Connected, at(10));
        assert_eq!(
            t.check_call(&biz(), &user(), at(23)),
            Err(OutboundFailure::DailyCap { connected_today: 2 })
        );
        // the first call leaves the window at exactly 24 h
        assert_eq!(t.check_call(&biz(), &user(), at(24)), Ok(()));
    }

    #[test]
    fn temporary_permission_expires_without_a_webhook() {
        let mut t = tracker(2, 100);
        assert_eq!(t.permission(&biz(), &user(), at(0)), Permission::Unknown);
        assert_eq!(
            t.check_call(&biz(), &user(), at(0)),
            Ok(()),
            "unknown: let Meta decide"
        );
        grant(&mut t, at(0));
        assert_eq!(t.check_call(&biz(), &user(), at(7 * 24 - 1)), Ok(()));
        assert_eq!(t.permission(&biz(), &user(), at(7 * 24)), Permission::None);
        assert_eq!(
            t.check_call(&biz(), &user(), at(7 * 24)),
            Err(OutboundFailure::NoPermission)
        );
    }

    #[test]
    fn rejected_or_revoked_permission_refuses_calls() {
        let mut t = tracker(2, 100);
        grant(&mut t, at(0));
        t.handle_reply(
            &biz(),
            &user(),
            PermissionReply {
                accepted: false,
                permanent: false,
                expires: None,
            },
            at(1),
        );
        assert_eq!(
            t.check_call(&biz(), &user(), at(1)),
            Err(OutboundFailure::NoPermission)
        );
        t.handle_query(&biz(), &user(), Permission::Permanent);
        t.handle_no_permission(&biz(), &user());
        assert_eq!(
            t.check_call(&biz(), &user(), at(2)),
            Err(OutboundFailure::NoPermission)
        );
    }

    #[test]
    fn permission_requests_1_per_24h_2_per_7d_reset_by_connected_call() {
        let mut t = tracker(2, 100);
        assert_eq!(t.may_request(&biz(), &user(), at(0)), Ok(()));
        t.record_request(&biz(), &user(), at(0));
        assert_eq!(
            t.may_request(&biz(), &user(), at(23)),
            Err(RequestRefusal::DailyLimit)
        );
        assert_eq!(t.may_request(&biz(), &user(), at(24)), Ok(()));
        t.record_request(&biz(), &user(), at(24));
        // third request in 7 days refused, even a day later
        assert_eq!(
            t.may_request(&biz(), &user(), at(48)),
            Err(RequestRefusal::WeeklyLimit)
        );
        assert_eq!(
            t.may_request(&biz(), &user(), at(7 * 24 - 1)),
            Err(RequestRefusal::WeeklyLimit)
        );
        // the first leaves the 7-day window
        assert_eq!(t.may_request(&biz(), &user(), at(7 * 24)), Ok(()));
        // a connected call (either direction) resets the limits
        t.record_request(&biz(), &user(), at(7 * 24));
        assert_eq!(
            t.may_request(&biz(), &user(), at(7 * 24 + 1)),
            Err(RequestRefusal::DailyLimit)
        );
        t.record_inbound_connected(&biz(), &user());
        assert_eq!(t.may_request(&biz(), &user(), at(7 * 24 + 1)), Ok(()));
    }

    #[test]
    fn no_request_while_permanent_permission_exists() {
        let mut t = tracker(2, 100);
        t.handle_reply(
            &biz(),
            &user(),
            PermissionReply {
                accepted: true,
                permanent: true,
                expires: None,
            },
            at(0),
        );
        assert_eq!(
            t.may_request(&biz(), &user(), at(1)),
            Err(RequestRefusal::AlreadyPermanent)
        );
    }

    #[test]
    fn pairs_are_independent_per_business_number() {
        let mut t = tracker(1, 100);
        let other = E164::parse("+4940123456").unwrap();
        t.record_call(&biz(), &user(), CallOutcome::Unanswered, at(0));
        assert!(t.check_call(&biz(), &user(), at(1)).is_err());
        assert_eq!(t.check_call(&other, &user(), at(1)), Ok(()));
    }
}
