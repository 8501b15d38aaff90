//! Session timers, RFC 4028, sans-IO: negotiation of `Session-Expires` / `Min-SE` and
//! the per-dialog timer that says when to refresh and when to give up.
//!
//! ```text
//!            refresh sent or received (2xx)  ─┐
//!                                             v
//!   +-----------+  half the interval  +-----------+
//!   |  Running  |-------------------->| RefreshDue|  (we are the refresher:
//!   |           |                     +-----------+   send re-INVITE/UPDATE)
//!   |           |  interval - min(32 s, interval/3) without a refresh
//!   |           |-------------------------------------> Expired (send BYE, §10)
//!   +-----------+
//! ```
//!
//! Negotiation:
//! - As **UAS** ([`negotiate_uas`]): a `Session-Expires` below our `Min-SE` gets
//!   `422 Session Interval Too Small` with our `Min-SE` (§6); otherwise the interval
//!   is the requested one capped to our preference (never below the request's
//!   `Min-SE`), and the refresher is the one requested, else the UAC when it
//!   supports `timer`, else us (§9).
//! - As **UAC** ([`uac_request_headers`], [`uac_retry_after_422`],
//!   [`negotiate_uac`]): offer our interval with `Min-SE` and `Supported: timer`;
//!   after a 422 retry with the larger `Min-SE`; take the interval and refresher from
//!   the 2xx (§7).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::message::{HeaderName, Refresher, Request, Response, SessionExpires, StatusCode, Tag};

/// Session timer preferences. `Default` is the production value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval we ask for or accept at most (default 1800 s, §4 recommendation).
    pub session_expires: Duration,
    /// The smallest interval we accept (default 90 s, the RFC minimum).
    pub min_se: Duration,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        Self {
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
        }
    }
}

/// The outcome of a negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The session interval.
    pub interval: Duration,
    /// Who refreshes.
    pub refresher: Refresher,
    /// Whether that is us.
    pub we_refresh: bool,
}

impl Negotiated {
    /// The `Session-Expires` value to put in our 2xx (as UAS) or refresh.
    pub fn header_value(&self) -> String {
        SessionExpires {
            delta_secs: u32::try_from(self.interval.as_secs()).unwrap_or(u32::MAX),
            refresher: Some(self.refresher),
        }
        .to_string()
    }
}

/// As UAS: negotiates the session interval for a received INVITE, re-INVITE or
/// UPDATE. `Err(response)`: answer with this 422 carrying our `Min-SE` (§6).
///
/// When the request has no `Session-Expires`, we run the timer ourselves with
/// `refresher=uas` (§9 allows it; [`apply_uas_headers`] adds `Require: timer` only
/// if the UAC supports it).
pub fn negotiate_uas(
    req: &Request,
    cfg: &SessionTimerConfig,
    to_tag: Option<&Tag>,
) -> Result<Negotiated, Box<Response>> {
    let uac_supports = req.headers.has_option_tag("Supported", "timer");
    let peer_min = req.headers.min_se().map_or(90, |s| s.max(90));
    match req.headers.session_expires() {
        Some(se) => {
            let asked = Duration::from_secs(u64::from(se.delta_secs));
            if asked < cfg.min_se {
                let mut resp = req.response(StatusCode::SESSION_INTERVAL_TOO_SMALL, to_tag);
                resp.headers
                    .push(HeaderName::MIN_SE, cfg.min_se.as_secs().to_string());
                return Err(Box::new(resp));
            }
            let floor = Duration::from_secs(u64::from(peer_min)).max(cfg.min_se);
            let interval = asked.min(cfg.session_expires).max(floor);
            let refresher = match se.refresher {
                Some(r) => r,
                None if uac_supports => Refresher::Uac,
                None => Refresher::Uas,
            };
            Ok(Negotiated {
                interval,
                refresher,
                we_refresh: refresher == Refresher::Uas,
            })
        }
        None => Ok(Negotiated {
            interval: cfg
                .session_expires
                .max(Duration::from_secs(u64::from(peer_min))),
            refresher: Refresher::Uas,
            we_refresh: true,
        }),
    }
}

/// Adds `Session-Expires` (and `Require: timer` when the UAC supports it, §9) to our
/// 2xx for `req`.
pub fn apply_uas_headers(req: &Request, neg: &Negotiated, resp: &mut Response) {
    resp.headers
        .set(HeaderName::SESSION_EXPIRES, neg.header_value());
    if req.headers.has_option_tag("Supported", "timer") {
        resp.headers.push(HeaderName::REQUIRE, "timer");
    }
}

/// As UAC: the headers to add to an INVITE (or refresh) offering `interval` (§7.1).
pub fn uac_request_headers(
    cfg: &SessionTimerConfig,
    interval: Duration,
) -> Vec<(HeaderName, String)> {
    vec![
        (HeaderName::SUPPORTED, "timer".to_owned()),
        (HeaderName::SESSION_EXPIRES, interval.as_secs().to_string()),
        (HeaderName::MIN_SE, cfg.min_se.as_secs().to_string()),
    ]
}

/// As UAC, after a 422: the interval to retry with (the 422's `Min-SE` if larger),
/// or `None` when the response carries no usable `Min-SE` (§7.4).
pub fn uac_retry_after_422(resp: &Response, asked: Duration) -> Option<Duration> {
    if resp.status != StatusCode::SESSION_INTERVAL_TOO_SMALL {
        return None;
    }
    let min = Duration::from_secs(u64::from(resp.headers.min_se()?));
    (min > asked).then_some(min)
}

/// As UAC: reads the negotiated interval from the 2xx (§7.2). Without
/// `Session-Expires` in the 2xx the peer does not do session timers; we keep
/// refreshing ourselves with the interval we asked for.
pub fn negotiate_uac(resp: &Response, asked: Duration) -> Negotiated {
    match resp.headers.session_expires() {
        Some(se) => {
            let refresher = se.refresher.unwrap_or(Refresher::Uac);
            Negotiated {
                interval: Duration::from_secs(u64::from(se.delta_secs)),
                refresher,
                we_refresh: refresher == Refresher::Uac,
            }
        }
        None => Negotiated {
            interval: asked,
            refresher: Refresher::Uac,
            we_refresh: true,
        },
    }
}

/// What the timer asks of the dialog's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionTimerEvent {
    /// Half the interval passed: send a refresh (re-INVITE or UPDATE) now.
    RefreshDue,
    /// No refresh within `interval - min(32 s, interval/3)`: send BYE (§10).
    Expired,
}

/// The running session timer of one dialog.
#[derive(Debug)]
pub struct SessionTimer {
    neg: Negotiated,
    refresh_at: Option<Instant>,
    expire_at: Option<Instant>,
    events: VecDeque<SessionTimerEvent>,
}

impl SessionTimer {
    /// Starts the timer when the session (or its last refresh) was established at
    /// `now`.
    pub fn new(neg: Negotiated, now: Instant) -> Self {
        let mut t = Self {
            neg,
            refresh_at: None,
            expire_at: None,
            events: VecDeque::new(),
        };
        t.arm(now);
        t
    }

    fn arm(&mut self, now: Instant) {
        let interval = self.neg.interval;
        self.refresh_at = self.neg.we_refresh.then(|| now + interval / 2);
        let guard = Duration::from_secs(32).min(interval / 3);
        self.expire_at = Some(now + interval.saturating_sub(guard));
    }

    /// The negotiated parameters.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// A refresh succeeded (2xx to our refresh, or we answered the peer's refresh
    /// 2xx) with the newly negotiated parameters: restart the timer.
    pub fn handle_refresh(&mut self, neg: Negotiated, now: Instant) {
        self.neg = neg;
        self.arm(now);
    }

    /// Fires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            self.events.push_back(SessionTimerEvent::RefreshDue);
        }
        if self.expire_at.is_some_and(|t| t <= now) {
            self.expire_at = None;
            self.refresh_at = None;
            self.events.push_back(SessionTimerEvent::Expired);
        }
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<SessionTimerEvent> {
        self.events.pop_front()
    }

    /// Earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.refresh_at, self.expire_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the session expired.
    pub fn is_expired(&self) -> bool {
        self.expire_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use whatsip_testkit::VirtualClock;

    use super::*;
    use crate::message::{ParseLimits, SipMessage};

    fn invite(extra: &str) -> Request {
        let raw = format!(
            "INVITE sip:bob@192.0.2.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKst\r\n\
From: <sip:alice@example.com>;tag=a\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: st-1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.1>\r\n\
{extra}Content-Length: 0\r\n\r\n"
        );
        match SipMessage::parse(raw.as_bytes(), &ParseLimits::default()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn uas_answers_422_with_min_se_when_interval_too_small() {
        let cfg = SessionTimerConfig::default();
        let req = invite("Supported: timer\r\nSession-Expires: 60\r\n");
        let resp = negotiate_uas(&req, &cfg, None).unwrap_err();
        assert_eq!(resp.status.as_u16(), 422);
        assert_eq!(resp.headers.min_se(), Some(90));
        // and the UAC retries with 90
        assert_eq!(
            uac_retry_after_422(&resp, Duration::from_secs(60)),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn uas_lets_a_timer_capable_uac_refresh_and_caps_the_interval() {
        let cfg = SessionTimerConfig::default();
        let req = invite("Supported: timer\r\nSession-Expires: 7200\r\n");
        let n = negotiate_uas(&req, &cfg, None).unwrap();
        assert_eq!(n.interval, Duration::from_secs(1800));
        assert_eq!(n.refresher, Refresher::Uac);
        assert!(!n.we_refresh);
        let mut ok = req.response(StatusCode::OK, Some(&Tag::new("b")));
        apply_uas_headers(&req, &n, &mut ok);
        assert_eq!(
            ok.headers.get("Session-Expires"),
            Some("1800;refresher=uac")
        );
        assert!(ok.headers.has_option_tag("Require", "timer"));
    }

    #[test]
    fn uas_honours_requested_refresher_and_refreshes_itself_without_peer_support() {
        let cfg = SessionTimerConfig::default();
        let n = negotiate_uas(
            &invite("Session-Expires: 600;refresher=uas\r\n"),
            &cfg,
            None,
        )
        .unwrap();
        assert_eq!((n.interval.as_secs(), n.refresher), (600, Refresher::Uas));
        let req = invite("");
        let n = negotiate_uas(&req, &cfg, None).unwrap();
        assert!(n.we_refresh);
        let mut ok = req.response(StatusCode::OK, None);
        apply_uas_headers(&req, &n, &mut ok);
        assert!(
            !ok.headers.contains("Require"),
            "no Require: timer without Supported"
        );
    }

    #[test]
    fn refresher_refreshes_at_half_the_interval() {
        let mut clock = VirtualClock::new();
        let n = Negotiated {
            interval: Duration::from_secs(1800),
            refresher: Refresher::Uac,
            we_refresh: true,
        };
        let mut t = SessionTimer::new(n.clone(), clock.now());
        assert_eq!(clock.secs(t.poll_timeout().unwrap()), 900.0);
        clock.advance_to(clock.at(900.0));
        t.handle_timeout(clock.now());
        assert_eq!(t.poll_event(), Some(SessionTimerEvent::RefreshDue));
        // refresh answered 2 s later: everything restarts from there
        clock.advance_to(clock.at(902.0));
        t.handle_refresh(n, clock.now());
        assert_eq!(clock.secs(t.poll_timeout().unwrap()), 1802.0);
    }

    #[test]
    fn missed_refresh_sends_bye_at_expiry_minus_min_32s_or_a_third() {
        let mut clock = VirtualClock::new();
        let n = |secs| Negotiated {
            interval: Duration::from_secs(secs),
            refresher: Refresher::Uac,
            we_refresh: false,
        };
        let mut t = SessionTimer::new(n(1800), clock.now());
        assert_eq!(clock.secs(t.poll_timeout().unwrap()), 1768.0);
        clock.advance_to(clock.at(1767.0));
        t.handle_timeout(clock.now());
        assert_eq!(t.poll_event(), None);
        clock.advance_to(clock.at(1768.0));
        t.handle_timeout(clock.now());
        assert_eq!(t.poll_event(), Some(SessionTimerEvent::Expired));
        assert!(t.is_expired());
        assert_eq!(t.poll_timeout(), None);

        let clock = VirtualClock::new();
        let t = SessionTimer::new(n(90), clock.now());
        assert_eq!(clock.secs(t.poll_timeout().unwrap()), 60.0, "90 - 90/3");
    }

    #[test]
    fn refresher_that_never_gets_its_refresh_answered_also_expires() {
        let mut clock = VirtualClock::new();
        let n = Negotiated {
            interval: Duration::from_secs(120),
            refresher: Refresher::Uas,
            we_refresh: true,
        };
        let mut t = SessionTimer::new(n, clock.now());
        let mut seen = Vec::new();
        for _ in 0..5 {
            let Some(at) = t.poll_timeout() else { break };
            clock.advance_to(at);
            t.handle_timeout(clock.now());
            while let Some(e) = t.poll_event() {
                seen.push((clock.secs(clock.now()), e));
            }
        }
        assert_eq!(
            seen,
            vec![
                (60.0, SessionTimerEvent::RefreshDue),
                (88.0, SessionTimerEvent::Expired)
            ]
        );
    }

    #[test]
    fn uac_reads_interval_and_refresher_from_the_2xx() {
        let req = invite("");
        let mut ok = req.response(StatusCode::OK, Some(&Tag::new("b")));
        ok.headers.push("Session-Expires", "900;refresher=uas");
        let n = negotiate_uac(&ok, Duration::from_secs(1800));
        assert_eq!(n.interval.as_secs(), 900);
        assert!(!n.we_refresh);
        let bare = req.response(StatusCode::OK, None);
        assert!(negotiate_uac(&bare, Duration::from_secs(1800)).we_refresh);
        let h = uac_request_headers(&SessionTimerConfig::default(), Duration::from_secs(1800));
        assert_eq!(h.len(), 3);
    }
}
