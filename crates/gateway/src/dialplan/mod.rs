//! The dial plan: ordered rules, first match wins, compiled once at load.
//!
//! [`DialPlan::route`] is pure: the call's facts and the current time go in through
//! [`CallContext`], a [`Route`] comes out. Nothing is read from the clock, env or files.
//!
//! A rule matches when every condition it names holds: `direction`, `business` (the
//! business number, E.164), `customer` (inbound: the caller's E.164 number `+<digits>`;
//! outbound: the dialled Request-URI user part as received), `cta_payload` and
//! `deeplink_payload` (a rule naming one never matches a call without it). Matchers are
//! `exact`, `prefix` or `regex`; a regex must match the whole value (it is anchored).
//! Then its `schedule` decides: open → the rule's action; closed → its `closed` action
//! (`"reject"`, `"continue"` to the next rule, or a SIP URI such as voicemail).

mod compile;
mod schedule;
mod template;

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use regex::Regex;

use crate::types::{Direction, E164};

pub(crate) use compile::{DialPlanDefaults, compile, compile_schedules};
pub use schedule::Schedule;
use template::{Escape, Template, Values};

/// The compiled dial plan.
#[derive(Debug, Clone, Default)]
pub struct DialPlan {
    rules: Vec<Rule>,
}

/// What the dial plan knows about a call when it is routed.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Who started the call.
    pub direction: Direction,
    /// Inbound: the business number called. Outbound: the business number the PBX asserted
    /// as caller (From/P-Asserted-Identity), if it is a configured one.
    pub business: Option<E164>,
    /// Inbound: the caller's number as `+<digits>`. Outbound: the dialled number as received.
    pub customer: String,
    /// The call button payload (`cta_payload` in the connect webhook).
    pub cta_payload: Option<String>,
    /// The `wa.me/call` link payload (`deeplink_payload`).
    pub deeplink_payload: Option<String>,
    /// The current time; schedules convert it into their own zone.
    pub now: Timestamp,
}

/// The dial plan's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Ring the PBX.
    Inbound(InboundRoute),
    /// Call the WhatsApp user.
    Outbound(OutboundRoute),
    /// Refuse the call.
    Reject {
        /// The rule that decided, `None` when no rule matched.
        rule: Option<String>,
        /// Why.
        reason: RejectReason,
    },
}

/// Why the dial plan refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// A rule with `reject = true` matched.
    Rule,
    /// The rule's schedule was closed and its `closed` action is `reject`.
    ClosedHours,
    /// No rule matched.
    NoMatch,
    /// Outbound: the rendered `whatsapp_user` is not an E.164 number (value cut to 64 bytes).
    InvalidWhatsAppUser(String),
    /// Outbound: neither the rule nor the call named a business number to call from.
    NoBusinessNumber,
}

/// An inbound route: the first PBX target and the fallback chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRoute {
    /// The matching rule's name.
    pub rule: String,
    /// True when the rule's schedule was closed and this is its closed-hours target.
    pub closed_hours: bool,
    /// Attempt 0.
    pub primary: PbxTarget,
    /// Attempts 1…, each taken only for the failure causes it lists.
    pub fallbacks: Vec<Fallback>,
}

/// A rendered PBX target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxTarget {
    /// The Request-URI, e.g. `sip:2001@pbx.example.com`.
    pub uri: String,
    /// Extra headers (name, value), values with control characters removed.
    pub headers: Vec<(String, String)>,
    /// How long the PBX may ring before the attempt counts as unanswered.
    pub ring_timeout: Duration,
}

/// One link of the fallback chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The failure causes of the previous attempt that lead here.
    pub on: Vec<FailureCause>,
    /// Where to ring.
    pub target: PbxTarget,
}

/// How a PBX attempt failed, as far as fallbacks care (see `call::classify_pbx_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCause {
    /// 486 Busy Here.
    Busy,
    /// Ring timeout, 408, 480.
    NoAnswer,
    /// 404, other 4xx, 5xx, transport failure.
    Failure,
}

impl FailureCause {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Failure => "failure",
        }
    }
}

impl InboundRoute {
    /// Attempt `n`: 0 is the primary target, `n` is `fallbacks[n - 1]`.
    pub fn attempt(&self, n: usize) -> Option<&PbxTarget> {
        match n {
            0 => Some(&self.primary),
            n => self.fallbacks.get(n - 1).map(|f| &f.target),
        }
    }

    /// The next attempt after attempt `after` failed with `cause`: the first later link of
    /// the chain listing `cause`, or `None` (then the call is rejected).
    pub fn next_attempt(&self, after: usize, cause: FailureCause) -> Option<usize> {
        self.fallbacks
            .iter()
            .enumerate()
            .skip(after)
            .find(|(_, f)| f.on.contains(&cause))
            .map(|(i, _)| i + 1)
    }
}

/// An outbound route: whom to call, from which business number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRoute {
    /// The matching rule's name.
    pub rule: String,
    /// The WhatsApp user, normalised to E.164.
    pub whatsapp_user: E164,
    /// The business number to call from.
    pub from_business: E164,
    /// Whether to send `call_permission_request` when Meta says there is no permission.
    pub auto_permission_request: bool,
}

impl Route {
    /// The deciding rule's name, if any.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::Inbound(r) => Some(&r.rule),
            Self::Outbound(r) => Some(&r.rule),
            Self::Reject { rule, .. } => rule.as_deref(),
        }
    }
}

impl fmt::Display for Route {
    /// One line for logs and `check-config --try-*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inbound(r) => {
                write!(
                    f,
                    "rule `{}`: ring {} for {} s",
                    r.rule,
                    r.primary.uri,
                    r.primary.ring_timeout.as_secs()
                )?;
                if r.closed_hours {
                    f.write_str(" (closed hours)")?;
                }
                for (name, value) in &r.primary.headers {
                    write!(f, "; {name}: {value}")?;
                }
                for fb in &r.fallbacks {
                    let on: Vec<&str> = fb.on.iter().map(|c| c.as_str()).collect();
                    write!(
                        f,
                        "; on {} -> {} for {} s",
                        on.join("/"),
                        fb.target.uri,
                        fb.target.ring_timeout.as_secs()
                    )?;
                }
                Ok(())
            }
            Self::Outbound(r) => write!(
                f,
                "rule `{}`: call WhatsApp user {} from {}{}",
                r.rule,
                r.whatsapp_user,
                r.from_business,
                if r.auto_permission_request {
                    ", permission request if needed"
                } else {
                    ""
                }
            ),
            Self::Reject { rule, reason } => match rule {
                Some(rule) => write!(f, "rule `{rule}`: reject ({reason:?})"),
                None => write!(f, "no rule matches: reject"),
            },
        }
    }
}

impl DialPlan {
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules (every call is rejected with `NoMatch`).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Routes a call. Pure: same context, same answer.
    pub fn route(&self, ctx: &CallContext) -> Route {
        for rule in &self.rules {
            if let Some(route) = rule.evaluate(ctx) {
                return route;
            }
        }
        Route::Reject {
            rule: None,
            reason: RejectReason::NoMatch,
        }
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    direction: Direction,
    business: Option<E164>,
    customer: Option<Matcher>,
    cta_payload: Option<Matcher>,
    deeplink_payload: Option<Matcher>,
    schedule: Option<Schedule>,
    closed: ClosedAction,
    action: Action,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum ClosedAction {
    Reject,
    Continue,
    Target(TargetTemplate),
}

#[derive(Debug, Clone)]
enum Action {
    Reject,
    Inbound {
        target: TargetTemplate,
        fallbacks: Vec<(Vec<FailureCause>, TargetTemplate)>,
    },
    Outbound {
        whatsapp_user: Template,
        from_business: Option<E164>,
        auto_permission_request: bool,
    },
}

#[derive(Debug, Clone)]
struct TargetTemplate {
    uri: Template,
    headers: Vec<(String, Template)>,
    ring_timeout: Duration,
}

#[derive(Debug, Default)]
struct Captures {
    positional: Vec<Option<String>>,
    named: Vec<(String, String)>,
}

impl Matcher {
    fn captures(&self, value: &str) -> Option<Captures> {
        match self {
            Self::Exact(e) => (value == e).then(Captures::default),
            Self::Prefix(p) => value.strip_prefix(p.as_str()).map(|rest| Captures {
                positional: vec![Some(rest.to_owned())],
                named: Vec::new(),
            }),
            Self::Regex(re) => {
                let caps = re.captures(value)?;
                let positional = caps
                    .iter()
                    .skip(1)
                    .map(|m| m.map(|m| m.as_str().to_owned()))
                    .collect();
                let named = re
                    .capture_names()
                    .flatten()
                    .filter_map(|n| caps.name(n).map(|m| (n.to_owned(), m.as_str().to_owned())))
                    .collect();
                Some(Captures { positional, named })
            }
        }
    }
}

impl TargetTemplate {
    fn render(&self, values: &Values<'_>) -> PbxTarget {
        PbxTarget {
            uri: self.uri.render(values, Escape::Uri),
            headers: self
                .headers
                .iter()
                .map(|(name, t)| (name.clone(), t.render(values, Escape::Header)))
                .collect(),
            ring_timeout: self.ring_timeout,
        }
    }
}

impl Rule {
    fn evaluate(&self, ctx: &CallContext) -> Option<Route> {
        if self.direction != ctx.direction {
            return None;
        }
        if let Some(b) = &self.business
            && ctx.business.as_ref() != Some(b)
        {
            return None;
        }
        let mut caps = Captures::default();
        if let Some(m) = &self.customer {
            caps = m.captures(&ctx.customer)?;
        }
        for (matcher, value) in [
            (&self.cta_payload, &ctx.cta_payload),
            (&self.deeplink_payload, &ctx.deeplink_payload),
        ] {
            if let Some(m) = matcher {
                let c = m.captures(value.as_deref()?)?;
                caps.named.extend(c.named);
            }
        }
        let business = ctx.business.as_ref().map(E164::as_str);
        let values = Values {
            positional: caps.positional,
            named: caps.named.into_iter().collect(),
            customer: &ctx.customer,
            business,
            cta_payload: ctx.cta_payload.as_deref(),
            deeplink_payload: ctx.deeplink_payload.as_deref(),
            rule: &self.name,
        };
        let open = self.schedule.as_ref().is_none_or(|s| s.is_open(ctx.now));
        if !open {
            return match &self.closed {
                ClosedAction::Continue => None,
                ClosedAction::Reject => Some(Route::Reject {
                    rule: Some(self.name.clone()),
                    reason: RejectReason::ClosedHours,
                }),
                ClosedAction::Target(t) => Some(Route::Inbound(InboundRoute {
                    rule: self.name.clone(),
                    closed_hours: true,
                    primary: t.render(&values),
                    fallbacks: Vec::new(),
                })),
            };
        }
        Some(match &self.action {
            Action::Reject => Route::Reject {
                rule: Some(self.name.clone()),
                reason: RejectReason::Rule,
            },
            Action::Inbound { target, fallbacks } => Route::Inbound(InboundRoute {
                rule: self.name.clone(),
                closed_hours: false,
                primary: target.render(&values),
                fallbacks: fallbacks
                    .iter()
                    .map(|(on, t)| Fallback {
                        on: on.clone(),
                        target: t.render(&values),
                    })
                    .collect(),
            }),
            Action::Outbound {
                whatsapp_user,
                from_business,
                auto_permission_request,
            } => {
                let rendered = whatsapp_user.render(&values, Escape::Header);
                let Ok(user) = E164::parse(&rendered) else {
                    return Some(Route::Reject {
                        rule: Some(self.name.clone()),
                        reason: RejectReason::InvalidWhatsAppUser(crate::config::cut(&rendered)),
                    });
                };
                let Some(from) = from_business.clone().or_else(|| ctx.business.clone()) else {
                    return Some(Route::Reject {
                        rule: Some(self.name.clone()),
                        reason: RejectReason::NoBusinessNumber,
                    });
                };
                Route::Outbound(OutboundRoute {
                    rule: self.name.clone(),
                    whatsapp_user: user,
                    from_business: from,
                    auto_permission_request: *auto_permission_request,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests;
