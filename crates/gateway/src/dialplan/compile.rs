//! Turns the raw `[schedules]` and `[[dialplan.rule]]` tables into a [`DialPlan`],
//! reporting every problem with its location.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::tz::TimeZone;
use regex::RegexBuilder;

use super::template::{Builtin, Scope, Template};
use super::{
    Action, ClosedAction, DialPlan, FailureCause, Matcher, Rule, Schedule, TargetTemplate,
};
use crate::config::error::{Diag, cut};
use crate::config::raw::{RawDialPlan, RawMatch, RawRule, RawSchedule, S};
use crate::types::{Direction, E164};

/// Values from elsewhere in the config that rules default to.
pub(crate) struct DialPlanDefaults<'a> {
    pub(crate) business_numbers: &'a [E164],
    /// The numbers with `business_initiated_calls = true`.
    pub(crate) business_initiated_numbers: &'a [E164],
    pub(crate) auto_permission_request: bool,
}

const DEFAULT_RING_TIMEOUT_S: u64 = 30;
/// Meta ends an unanswered user-initiated call after 30-60 s (Calling API notes §7.4).
const MAX_CHAIN_RING_S: u64 = 55;
const MAX_RING_TIMEOUT_S: u64 = 300;
/// Compiled regex size cap, so one rule cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Header names the SIP layer owns; a rule cannot set them.
const RESERVED_HEADERS: [&str; 14] = [
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "contact",
    "content-length",
    "content-type",
    "max-forwards",
    "route",
    "record-route",
    "authorization",
    "proxy-authorization",
    "require",
];

pub(crate) fn compile_schedules(
    raw: &BTreeMap<String, S<RawSchedule>>,
    diag: &mut Diag<'_>,
) -> BTreeMap<String, Schedule> {
    let mut out = BTreeMap::new();
    for (name, s) in raw {
        let key = format!("schedules.{name}");
        let tz_name = s.get_ref().time_zone.get_ref();
        let tz = match TimeZone::get(tz_name) {
            Ok(tz) => tz,
            Err(e) => {
                diag.error(
                    s.get_ref().time_zone.span(),
                    format!("{key}.time_zone"),
                    format!(
                        "unknown time zone `{}` ({e}); use an IANA name such as `Europe/Berlin` (read from the system tz database, package `tzdata`)",
                        cut(tz_name)
                    ),
                );
                continue;
            }
        };
        let open: Vec<(usize, &str)> = s
            .get_ref()
            .open
            .iter()
            .map(|o| o.get_ref().as_str())
            .enumerate()
            .collect();
        let holidays: Vec<(usize, &str)> = s
            .get_ref()
            .holidays
            .iter()
            .map(|o| o.get_ref().as_str())
            .enumerate()
            .collect();
        match Schedule::new(name, tz, &open, &holidays) {
            Ok(sched) => {
                out.insert(name.clone(), sched);
            }
            Err((idx, msg)) => {
                // the index points into `open` unless the message is about a date
                let (field, span) = if msg.contains("is not a date") {
                    ("holidays", s.get_ref().holidays[idx].span())
                } else {
                    ("open", s.get_ref().open[idx].span())
                };
                diag.error(span, format!("{key}.{field}[{idx}]"), msg);
            }
        }
    }
    out
}

pub(crate) fn compile(
    raw: Option<&S<RawDialPlan>>,
    raw_schedules: &BTreeMap<String, S<RawSchedule>>,
    schedules: &BTreeMap<String, Schedule>,
    defaults: &DialPlanDefaults<'_>,
    diag: &mut Diag<'_>,
) -> DialPlan {
    let Some(raw) = raw else {
        return DialPlan::default();
    };
    let ring_default = match &raw.get_ref().ring_timeout_s {
        Some(t) => ring_timeout(t, "dialplan.ring_timeout_s", diag),
        None => Duration::from_secs(DEFAULT_RING_TIMEOUT_S),
    };
    let mut rules = Vec::new();
    for (i, r) in raw.get_ref().rule.iter().enumerate() {
        if let Some(rule) =
            compile_rule(i, r, raw_schedules, schedules, defaults, ring_default, diag)
        {
            rules.push(rule);
        }
    }
    DialPlan { rules }
}

fn ring_timeout(v: &S<u64>, key: &str, diag: &mut Diag<'_>) -> Duration {
    let s = *v.get_ref();
    if s == 0 || s > MAX_RING_TIMEOUT_S {
        diag.error(
            v.span(),
            key,
            format!("ring timeout must be 1 to {MAX_RING_TIMEOUT_S} seconds, got {s}"),
        );
    }
    Duration::from_secs(s)
}

fn compile_rule(
    i: usize,
    spanned: &S<RawRule>,
    raw_schedules: &BTreeMap<String, S<RawSchedule>>,
    schedules: &BTreeMap<String, Schedule>,
    defaults: &DialPlanDefaults<'_>,
    ring_default: Duration,
    diag: &mut Diag<'_>,
) -> Option<Rule> {
    let r = spanned.get_ref();
    let key = |f: &str| format!("dialplan.rule[{i}].{f}");
    let before = diag_len(diag);
    let name = r
        .name
        .as_ref()
        .map_or_else(|| format!("rule[{i}]"), |n| n.get_ref().clone());

    let direction = match r.direction.get_ref().as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        other => {
            diag.error(
                r.direction.span(),
                key("direction"),
                format!("`{}` is not a direction; use \"inbound\" (from WhatsApp) or \"outbound\" (from the PBX)", cut(other)),
            );
            return None;
        }
    };

    let business = r
        .business
        .as_ref()
        .and_then(|b| business_number(b, &key("business"), defaults, diag));
    let customer = r
        .customer
        .as_ref()
        .and_then(|m| matcher(m, &key("customer"), diag));
    let cta_payload = r
        .cta_payload
        .as_ref()
        .and_then(|m| matcher(m, &key("cta_payload"), diag));
    let deeplink_payload = r
        .deeplink_payload
        .as_ref()
        .and_then(|m| matcher(m, &key("deeplink_payload"), diag));

    let schedule = r
        .schedule
        .as_ref()
        .and_then(|s| match schedules.get(s.get_ref()) {
            Some(sched) => Some(sched.clone()),
            // defined but invalid: already reported at the schedule
            None if raw_schedules.contains_key(s.get_ref()) => None,
            None => {
                let known: Vec<&str> = raw_schedules.keys().map(String::as_str).collect();
                diag.error(
                    s.span(),
                    key("schedule"),
                    format!(
                        "no schedule named `{}` in [schedules] (known: {})",
                        cut(s.get_ref()),
                        known.join(", ")
                    ),
                );
                None
            }
        });

    // a matcher that failed to compile was reported; checking templates against its
    // (missing) captures would only add confusing follow-up errors
    let matchers_ok = [
        (r.customer.is_some(), customer.is_some()),
        (r.cta_payload.is_some(), cta_payload.is_some()),
        (r.deeplink_payload.is_some(), deeplink_payload.is_some()),
    ]
    .iter()
    .all(|(raw, compiled)| !raw || *compiled);
    if !matchers_ok {
        return None;
    }
    // what templates may refer to
    let positional = match &customer {
        Some(Matcher::Prefix(_)) => 1,
        Some(Matcher::Regex(re)) => re.captures_len() - 1,
        _ => 0,
    };
    let mut named: Vec<String> = Vec::new();
    for m in [&customer, &cta_payload, &deeplink_payload]
        .into_iter()
        .flatten()
    {
        if let Matcher::Regex(re) = m {
            named.extend(re.capture_names().flatten().map(str::to_owned));
        }
    }
    for n in &named {
        if Builtin::NAMES.iter().any(|(b, _)| b == n) {
            diag.error(
                spanned.span(),
                key("customer"),
                format!("named group `{n}` shadows the built-in variable `${{{n}}}`; rename it"),
            );
        }
    }
    let scope = Scope {
        positional,
        named: &named,
    };
    let ring = r.ring_timeout_s.as_ref().map_or(ring_default, |t| {
        ring_timeout(t, &key("ring_timeout_s"), diag)
    });

    let reject = r.reject.unwrap_or(false);
    let action = match direction {
        Direction::Inbound => {
            for (present, f) in [
                (r.whatsapp_user.is_some(), "whatsapp_user"),
                (r.from_business.is_some(), "from_business"),
                (
                    r.auto_permission_request.is_some(),
                    "auto_permission_request",
                ),
            ] {
                if present {
                    diag.error(spanned.span(), key(f), "only outbound rules take this key");
                }
            }
            match (&r.target, reject) {
                (Some(t), true) => {
                    diag.error(
                        t.span(),
                        key("target"),
                        "a rule has either `target` or `reject = true`, not both",
                    );
                    None
                }
                (None, true) => Some(Action::Reject),
                (None, false) => {
                    diag.error(
                        spanned.span(),
                        key("target"),
                        "an inbound rule needs `target = \"sip:…\"` or `reject = true`",
                    );
                    None
                }
                (Some(t), false) => {
                    let target = target_template(
                        t,
                        &r.headers,
                        ring,
                        &scope,
                        &key("target"),
                        &key("headers"),
                        diag,
                    );
                    let mut fallbacks = Vec::new();
                    for (j, f) in r.fallback.iter().enumerate() {
                        let fk = |x: &str| key(&format!("fallback[{j}].{x}"));
                        let fr = f.get_ref();
                        let on = failure_causes(&fr.on, &fk("on"), diag);
                        let fring = fr
                            .ring_timeout_s
                            .as_ref()
                            .map_or(ring, |t| ring_timeout(t, &fk("ring_timeout_s"), diag));
                        let t = target_template(
                            &fr.target,
                            &fr.headers,
                            fring,
                            &scope,
                            &fk("target"),
                            &fk("headers"),
                            diag,
                        );
                        if let Some(t) = t {
                            fallbacks.push((on, t));
                        }
                    }
                    let total: Duration = target
                        .iter()
                        .map(|t| t.ring_timeout)
                        .chain(fallbacks.iter().map(|(_, f)| f.ring_timeout))
                        .sum();
                    if total > Duration::from_secs(MAX_CHAIN_RING_S) {
                        diag.warn(
                            t.span(),
                            key("fallback"),
                            format!(
                                "the target and its fallbacks can ring for {} s in total; Meta gives up after 30-60 s (the user sees \"Not Answered\")",
                                total.as_secs()
                            ),
                        );
                    }
                    target.map(|target| Action::Inbound { target, fallbacks })
                }
            }
        }
        Direction::Outbound => {
            for (present, f) in [
                (r.target.is_some(), "target"),
                (!r.headers.is_empty(), "headers"),
                (!r.fallback.is_empty(), "fallback"),
                (r.cta_payload.is_some(), "cta_payload"),
                (r.deeplink_payload.is_some(), "deeplink_payload"),
                (r.ring_timeout_s.is_some(), "ring_timeout_s"),
            ] {
                if present {
                    diag.error(
                        spanned.span(),
                        key(f),
                        "only inbound rules take this key (outbound ring timeout is [outbound].ring_timeout_s)",
                    );
                }
            }
            if reject {
                Some(Action::Reject)
            } else {
                let user = match &r.whatsapp_user {
                    Some(t) => Template::parse(t.get_ref(), &scope)
                        .map_err(|e| diag.error(t.span(), key("whatsapp_user"), e))
                        .ok(),
                    None => Template::parse("${customer}", &scope).ok(),
                };
                let from = r
                    .from_business
                    .as_ref()
                    .and_then(|b| business_number(b, &key("from_business"), defaults, diag));
                if let (Some(n), Some(raw_from)) = (&from, &r.from_business)
                    && !defaults.business_initiated_numbers.contains(n)
                {
                    diag.error(
                        raw_from.span(),
                        key("from_business"),
                        format!("{n} has business_initiated_calls = false (Meta offers no business-initiated calls for +1, +20, +84, +234 numbers; set it to true in [[business_numbers]] if yours is allowed)"),
                    );
                }
                user.map(|whatsapp_user| Action::Outbound {
                    whatsapp_user,
                    from_business: from,
                    auto_permission_request: r
                        .auto_permission_request
                        .unwrap_or(defaults.auto_permission_request),
                })
            }
        }
    };

    let closed = match &r.closed {
        None => ClosedAction::Reject,
        Some(c) => match c.get_ref().as_str() {
            "reject" => ClosedAction::Reject,
            "continue" => ClosedAction::Continue,
            uri if is_sip_scheme(uri) && direction == Direction::Inbound => {
                match target_template(
                    c,
                    &r.headers,
                    ring,
                    &scope,
                    &key("closed"),
                    &key("headers"),
                    diag,
                ) {
                    Some(t) => ClosedAction::Target(t),
                    None => ClosedAction::Reject,
                }
            }
            other => {
                diag.error(
                    c.span(),
                    key("closed"),
                    format!(
                        "`{}` is not a closed-hours action; use \"reject\", \"continue\" or (inbound) a SIP URI such as \"sip:voicemail@pbx.example.com\"",
                        cut(other)
                    ),
                );
                ClosedAction::Reject
            }
        },
    };
    if r.closed.is_some() && r.schedule.is_none() {
        diag.error(
            spanned.span(),
            key("closed"),
            "`closed` needs a `schedule` to take effect",
        );
    }

    if diag_len(diag) != before {
        return None;
    }
    Some(Rule {
        name,
        direction,
        business,
        customer,
        cta_payload,
        deeplink_payload,
        schedule,
        closed,
        action: action?,
    })
}

fn diag_len(diag: &Diag<'_>) -> usize {
    diag.len()
}

fn is_sip_scheme(s: &str) -> bool {
    let lower: String = s.chars().take(5).collect::<String>().to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

fn business_number(
    b: &S<String>,
    key: &str,
    defaults: &DialPlanDefaults<'_>,
    diag: &mut Diag<'_>,
) -> Option<E164> {
    match E164::parse(b.get_ref()) {
        Ok(n) if defaults.business_numbers.contains(&n) => Some(n),
        Ok(n) => {
            diag.error(
                b.span(),
                key,
                format!("{n} is not one of the [[business_numbers]]"),
            );
            None
        }
        Err(e) => {
            diag.error(b.span(), key, format!("`{}`: {e}", cut(b.get_ref())));
            None
        }
    }
}

fn matcher(m: &S<RawMatch>, key: &str, diag: &mut Diag<'_>) -> Option<Matcher> {
    let r = m.get_ref();
    match (&r.exact, &r.prefix, &r.regex) {
        (Some(e), None, None) => Some(Matcher::Exact(e.get_ref().clone())),
        (None, Some(p), None) => Some(Matcher::Prefix(p.get_ref().clone())),
        (None, None, Some(re)) => {
            // anchored: a routing regex must match the whole value
            match RegexBuilder::new(&format!("^(?:{})$", re.get_ref()))
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(compiled) => Some(Matcher::Regex(compiled)),
                Err(e) => {
                    let msg = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("invalid")
                        .trim()
                        .to_owned();
                    diag.error(
                        re.span(),
                        format!("{key}.regex"),
                        format!("bad regex `{}`: {msg}", cut(re.get_ref())),
                    );
                    None
                }
            }
        }
        _ => {
            diag.error(
                m.span(),
                key,
                "give exactly one of `exact`, `prefix` or `regex`",
            );
            None
        }
    }
}

fn failure_causes(on: &S<Vec<S<String>>>, key: &str, diag: &mut Diag<'_>) -> Vec<FailureCause> {
    let mut out = Vec::new();
    if on.get_ref().is_empty() {
        diag.error(
            on.span(),
            key,
            "list at least one of \"busy\", \"no_answer\", \"failure\", \"any\"",
        );
    }
    for c in on.get_ref() {
        match c.get_ref().as_str() {
            "busy" => out.push(FailureCause::Busy),
            "no_answer" => out.push(FailureCause::NoAnswer),
            "failure" => out.push(FailureCause::Failure),
            "any" => out.extend([FailureCause::Busy, FailureCause::NoAnswer, FailureCause::Failure]),
            other => diag.error(
                c.span(),
                key,
                format!("`{}` is not a failure cause; use \"busy\", \"no_answer\", \"failure\" or \"any\"", cut(other)),
            ),
        }
    }
    out
}

fn target_template(
    t: &S<String>,
    headers: &BTreeMap<String, S<String>>,
    ring_timeout: Duration,
    scope: &Scope<'_>,
    key: &str,
    headers_key: &str,
    diag: &mut Diag<'_>,
) -> Option<TargetTemplate> {
    let uri = match Template::parse(t.get_ref(), scope) {
        Ok(u) => u,
        Err(e) => {
            diag.error(t.span(), key, e);
            return None;
        }
    };
    if !is_sip_scheme(&uri.literal_prefix()) {
        diag.error(
            t.span(),
            key,
            format!("`{}` must start with `sip:` or `sips:`", cut(t.get_ref())),
        );
        return None;
    }
    if uri.literals().any(|l| {
        l.chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
    }) {
        diag.error(
            t.span(),
            key,
            format!(
                "`{}` contains whitespace, `<`, `>` or `\"`; give a bare SIP URI",
                cut(t.get_ref())
            ),
        );
        return None;
    }
    let mut out = Vec::new();
    for (name, value) in headers {
        let hk = format!("{headers_key}.{name}");
        if !crate::config::is_header_name(name) {
            diag.error(
                value.span(),
                hk,
                format!("`{}` is not a valid SIP header name", cut(name)),
            );
            continue;
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            diag.error(
                value.span(),
                hk,
                format!("`{name}` is set by the SIP layer and cannot be overridden"),
            );
            continue;
        }
        match Template::parse(value.get_ref(), scope) {
            Ok(v) => out.push((name.clone(), v)),
            Err(e) => diag.error(value.span(), hk, e),
        }
    }
    Some(TargetTemplate {
        uri,
        headers: out,
        ring_timeout,
    })
}
