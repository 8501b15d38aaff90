use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::config::tests::load;
use crate::config::{ConfigError, problem_keys};

const PLAN: &str = r#"
[schedules.office]
time_zone = "Europe/Berlin"
open = ["mon-fri 09:00-17:00"]
holidays = ["2026-12-25"]

[schedules.daily]
time_zone = "Europe/Berlin"
open = ["daily 08:00-20:00"]

[schedules.night]
time_zone = "Europe/Berlin"
open = ["sun 22:00-02:00"]

[dialplan]
ring_timeout_s = 25

[[dialplan.rule]]
name = "blocklist"
direction = "inbound"
customer = { regex = '\+7\d+' }
reject = true

[[dialplan.rule]]
name = "vip"
direction = "inbound"
customer = { exact = "+4915112345678" }
target = "sip:vip@pbx"

[[dialplan.rule]]
name = "sales-button"
direction = "inbound"
cta_payload = { exact = "sales" }
schedule = "office"
closed = "sip:vm-sales@pbx"
target = "sip:sales@pbx"

[[dialplan.rule]]
name = "order-button"
direction = "inbound"
cta_payload = { prefix = "order-" }
target = "sip:orders@pbx"
headers = { "X-Order" = "${cta_payload}" }

[[dialplan.rule]]
name = "campaign-link"
direction = "inbound"
deeplink_payload = { regex = 'campaign-(?P<camp>\w+)' }
target = "sip:camp-${camp}@pbx"

[[dialplan.rule]]
name = "dst-daily"
direction = "inbound"
cta_payload = { exact = "daily" }
schedule = "daily"
target = "sip:daily@pbx"

[[dialplan.rule]]
name = "night-line"
direction = "inbound"
cta_payload = { exact = "night" }
schedule = "night"
target = "sip:night@pbx"

[[dialplan.rule]]
name = "us-number"
direction = "inbound"
business = "+15551441906"
target = "sip:us@pbx"

[[dialplan.rule]]
name = "de-office"
direction = "inbound"
customer = { regex = '\+49(\d{3})(\d+)' }
schedule = "office"
closed = "continue"
target = "sip:${1}-${2}@pbx"
ring_timeout_s = 20
headers = { "X-Caller" = "${customer_digits}", "X-Rule" = "${rule}" }
fallback = [
  { on = ["busy", "no_answer"], target = "sip:overflow@pbx", ring_timeout_s = 15 },
  { on = ["any"], target = "sip:vm-${business_digits}@pbx" },
]

[[dialplan.rule]]
name = "fr-office"
direction = "inbound"
customer = { prefix = "+33" }
schedule = "office"
target = "sip:fr-${1}@pbx"

[[dialplan.rule]]
name = "out-national"
direction = "outbound"
customer = { regex = '0([1-9]\d+)' }
whatsapp_user = "+49${1}"
from_business = "+4930901820"
auto_permission_request = true

[[dialplan.rule]]
name = "out-intl"
direction = "outbound"
customer = { regex = '(?:\+|00)(\d+)' }
whatsapp_user = "+${1}"

[[dialplan.rule]]
name = "out-short"
direction = "outbound"
customer = { prefix = "9" }
whatsapp_user = "${1}"
from_business = "+4930901820"
"#;

fn plan() -> DialPlan {
    load(PLAN).unwrap().dialplan
}

const MON_OPEN: &str = "2026-01-05T10:00:00Z"; // Monday 11:00 Berlin
const MON_EVENING: &str = "2026-01-05T17:00:00Z"; // Monday 18:00 Berlin
const HOLIDAY: &str = "2026-12-25T10:00:00Z"; // Friday, holiday

fn inbound(
    customer: &str,
    business: &str,
    cta: Option<&str>,
    deeplink: Option<&str>,
    at: &str,
) -> CallContext {
    CallContext {
        direction: Direction::Inbound,
        business: Some(E164::parse(business).unwrap()),
        customer: customer.to_owned(),
        cta_payload: cta.map(str::to_owned),
        deeplink_payload: deeplink.map(str::to_owned),
        now: at.parse::<Timestamp>().unwrap(),
    }
}

fn outbound(dialled: &str, business: Option<&str>) -> CallContext {
    CallContext {
        direction: Direction::Outbound,
        business: business.map(|b| E164::parse(b).unwrap()),
        customer: dialled.to_owned(),
        cta_payload: None,
        deeplink_payload: None,
        now: MON_OPEN.parse().unwrap(),
    }
}

/// A one-line summary of a route, for table tests.
fn summary(r: &Route) -> String {
    match r {
        Route::Inbound(i) => {
            format!(
                "in:{}:{}{}",
                i.rule,
                i.primary.uri,
                if i.closed_hours { ":closed" } else { "" }
            )
        }
        Route::Outbound(o) => {
            format!(
                "out:{}:{}:{}:{}",
                o.rule, o.whatsapp_user, o.from_business, o.auto_permission_request
            )
        }
        Route::Reject { rule, reason } => {
            format!("reject:{}:{reason:?}", rule.as_deref().unwrap_or("-"))
        }
    }
}

const DE: &str = "+4930901820";
const US: &str = "+15551441906";

#[test]
fn dialplan_table_first_match_wins_for_every_match_kind() {
    let plan = plan();
    #[rustfmt::skip]
    let table: Vec<(&str, CallContext, &str)> = vec![
        ("regex reject", inbound("+79161234567", DE, Some("sales"), None, MON_OPEN), "reject:blocklist:Rule"),
        ("exact customer", inbound("+4915112345678", DE, None, None, MON_EVENING), "in:vip:sip:vip@pbx"),
        ("cta exact open", inbound("+441234567890", DE, Some("sales"), None, MON_OPEN), "in:sales-button:sip:sales@pbx"),
        ("cta exact closed -> voicemail", inbound("+441234567890", DE, Some("sales"), None, MON_EVENING), "in:sales-button:sip:vm-sales@pbx:closed"),
        ("cta exact holiday -> voicemail", inbound("+441234567890", DE, Some("sales"), None, HOLIDAY), "in:sales-button:sip:vm-sales@pbx:closed"),
        ("cta exact is not prefix", inbound("+441234567890", DE, Some("sales2"), None, MON_OPEN), "reject:-:NoMatch"),
        ("cta prefix", inbound("+441234567890", DE, Some("order-42"), None, MON_OPEN), "in:order-button:sip:orders@pbx"),
        ("deeplink regex named capture", inbound("+441234567890", DE, None, Some("campaign-spring"), MON_OPEN), "in:campaign-link:sip:camp-spring@pbx"),
        ("deeplink regex is anchored", inbound("+441234567890", DE, None, Some("xcampaign-spring"), MON_OPEN), "reject:-:NoMatch"),
        ("payload rule never matches without payload", inbound("+441234567890", DE, None, None, MON_OPEN), "reject:-:NoMatch"),
        ("business number", inbound("+441234567890", US, None, None, MON_OPEN), "in:us-number:sip:us@pbx"),
        ("customer regex captures open", inbound("+493012345678", DE, None, None, MON_OPEN), "in:de-office:sip:301-2345678@pbx"),
        ("closed = continue falls through to no match", inbound("+493012345678", DE, None, None, MON_EVENING), "reject:-:NoMatch"),
        ("closed = continue falls through to next rule", inbound("+493012345678", US, None, None, MON_EVENING), "in:us-number:sip:us@pbx"),
        ("prefix capture open", inbound("+33123456789", DE, None, None, MON_OPEN), "in:fr-office:sip:fr-123456789@pbx"),
        ("closed default rejects", inbound("+33123456789", DE, None, None, MON_EVENING), "reject:fr-office:ClosedHours"),
        ("holiday rejects", inbound("+33123456789", DE, None, None, HOLIDAY), "reject:fr-office:ClosedHours"),
        ("no match default", inbound("+441234567890", DE, None, None, MON_OPEN), "reject:-:NoMatch"),
        ("outbound national to E.164", outbound("030123456", None), "out:out-national:+4930123456:+4930901820:true"),
        ("outbound 00 form, business from call", outbound("00441234567890", Some(DE)), "out:out-intl:+441234567890:+4930901820:false"),
        ("outbound + form", outbound("+441234567890", Some(US)), "out:out-intl:+441234567890:+15551441906:false"),
        ("outbound without business number", outbound("+441234567890", None), "reject:out-intl:NoBusinessNumber"),
        ("outbound bad number", outbound("9123", None), "reject:out-short:InvalidWhatsAppUser(\"123\")"),
        ("outbound no match", outbound("12345", None), "reject:-:NoMatch"),
        ("inbound rules never match outbound", outbound("+4915112345678", None), "reject:out-intl:NoBusinessNumber"),
    ];
    for (name, ctx, want) in table {
        assert_eq!(summary(&plan.route(&ctx)), want, "{name}");
    }
}

#[test]
fn dialplan_schedule_edges_open_and_close_minute() {
    let plan = plan();
    let at = |t: &str| summary(&plan.route(&inbound("+33123456789", DE, None, None, t)));
    assert_eq!(at("2026-01-05T07:59:00Z"), "reject:fr-office:ClosedHours"); // 08:59 local
    assert_eq!(
        at("2026-01-05T08:00:00Z"),
        "in:fr-office:sip:fr-123456789@pbx"
    ); // 09:00 opens
    assert_eq!(
        at("2026-01-05T15:59:59Z"),
        "in:fr-office:sip:fr-123456789@pbx"
    ); // 16:59:59
    assert_eq!(at("2026-01-05T16:00:00Z"), "reject:fr-office:ClosedHours"); // 17:00 closes
    assert_eq!(at("2026-01-10T10:00:00Z"), "reject:fr-office:ClosedHours"); // Saturday
}

#[test]
fn dialplan_schedule_follows_dst_change_day_in_zone() {
    let plan = plan();
    let at = |t: &str| summary(&plan.route(&inbound("+441234567890", DE, Some("daily"), None, t)));
    // 06:30Z is 07:30 CET on Saturday (closed) but 08:30 CEST on Sunday 2026-03-29 (open).
    assert_eq!(at("2026-03-28T06:30:00Z"), "reject:dst-daily:ClosedHours");
    assert_eq!(at("2026-03-29T06:30:00Z"), "in:dst-daily:sip:daily@pbx");
    assert_eq!(at("2026-03-29T05:59:00Z"), "reject:dst-daily:ClosedHours");
    // fall back on 2026-10-25: 20:00 CET = 19:00Z
    assert_eq!(at("2026-10-25T18:59:00Z"), "in:dst-daily:sip:daily@pbx");
    assert_eq!(at("2026-10-25T19:00:00Z"), "reject:dst-daily:ClosedHours");
}

#[test]
fn dialplan_schedule_weekday_wrap_sunday_night_into_monday() {
    let plan = plan();
    let at = |t: &str| summary(&plan.route(&inbound("+441234567890", DE, Some("night"), None, t)));
    assert_eq!(at("2026-01-11T20:59:00Z"), "reject:night-line:ClosedHours"); // Sun 21:59
    assert_eq!(at("2026-01-11T21:00:00Z"), "in:night-line:sip:night@pbx"); // Sun 22:00
    assert_eq!(at("2026-01-12T00:59:00Z"), "in:night-line:sip:night@pbx"); // Mon 01:59
    assert_eq!(at("2026-01-12T01:00:00Z"), "reject:night-line:ClosedHours"); // Mon 02:00
}

#[test]
fn dialplan_fallback_chain_renders_templates_and_ring_timeouts() {
    let plan = plan();
    let Route::Inbound(r) = plan.route(&inbound("+493012345678", DE, None, None, MON_OPEN)) else {
        panic!()
    };
    assert_eq!(r.primary.ring_timeout, Duration::from_secs(20));
    assert_eq!(
        r.primary.headers,
        vec![
            ("X-Caller".to_owned(), "493012345678".to_owned()),
            ("X-Rule".to_owned(), "de-office".to_owned())
        ]
    );
    assert_eq!(r.fallbacks.len(), 2);
    assert_eq!(r.fallbacks[0].target.uri, "sip:overflow@pbx");
    assert_eq!(r.fallbacks[0].target.ring_timeout, Duration::from_secs(15));
    assert_eq!(r.fallbacks[1].target.uri, "sip:vm-4930901820@pbx");
    assert_eq!(
        r.fallbacks[1].target.ring_timeout,
        Duration::from_secs(20),
        "inherits the rule's"
    );
    assert_eq!(r.next_attempt(0, FailureCause::Busy), Some(1));
    assert_eq!(r.next_attempt(0, FailureCause::Failure), Some(2));
    assert_eq!(r.next_attempt(1, FailureCause::NoAnswer), Some(2));
    assert_eq!(r.next_attempt(2, FailureCause::NoAnswer), None);
    assert_eq!(r.attempt(2).unwrap().uri, "sip:vm-4930901820@pbx");
    assert!(r.attempt(3).is_none());
}

#[test]
fn dialplan_templates_escape_network_values() {
    let plan = plan();
    let Route::Inbound(r) = plan.route(&inbound(
        "+441234567890",
        DE,
        Some("order-1\r\nVia: x"),
        None,
        MON_OPEN,
    )) else {
        panic!()
    };
    assert_eq!(
        r.primary.headers,
        vec![("X-Order".to_owned(), "order-1Via: x".to_owned())]
    );
    let Route::Inbound(r) = plan.route(&inbound(
        "+441234567890",
        DE,
        None,
        Some("campaign-a_b"),
        MON_OPEN,
    )) else {
        panic!()
    };
    assert_eq!(r.primary.uri, "sip:camp-a_b@pbx");
}

#[test]
fn dialplan_default_ring_timeout_applies() {
    let plan = plan();
    let Route::Inbound(r) = plan.route(&inbound("+4915112345678", DE, None, None, MON_OPEN)) else {
        panic!()
    };
    assert_eq!(r.primary.ring_timeout, Duration::from_secs(25));
}

fn rule_problems(rule: &str) -> std::collections::BTreeMap<String, String> {
    let src = format!(
        "[schedules.office]\ntime_zone = \"Europe/Berlin\"\nopen = [\"mon 09:00-17:00\"]\n{rule}"
    );
    match load(&src) {
        Err(e @ ConfigError::Invalid(_)) => problem_keys(&e),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn dialplan_compile_errors_name_the_key() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ncustomer = { regex = '(\\d+' }\ntarget = \"sip:a@b\"", "dialplan.rule[0].customer.regex", "bad regex"),
        ("[[dialplan.rule]]\ndirection = \"sideways\"\ntarget = \"sip:a@b\"", "dialplan.rule[0].direction", "not a direction"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:${2}@b\"\ncustomer = { prefix = \"+49\" }", "dialplan.rule[0].target", "has 1"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:${who}@b\"", "dialplan.rule[0].target", "unknown variable"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"http://a\"", "dialplan.rule[0].target", "must start with `sip:`"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a b@c\"", "dialplan.rule[0].target", "whitespace"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"", "dialplan.rule[0].target", "needs `target"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nschedule = \"nope\"", "dialplan.rule[0].schedule", "no schedule named"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nbusiness = \"+4930999999\"", "dialplan.rule[0].business", "not one of the [[business_numbers]]"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\ncustomer = { exact = \"a\", prefix = \"b\" }", "dialplan.rule[0].customer", "exactly one"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nschedule = \"office\"\nclosed = \"later\"", "dialplan.rule[0].closed", "not a closed-hours action"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nclosed = \"reject\"", "dialplan.rule[0].closed", "needs a `schedule`"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nfallback = [{ on = [\"sometimes\"], target = \"sip:c@d\" }]", "dialplan.rule[0].fallback[0].on", "not a failure cause"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nheaders = { \"Via\" = \"x\" }", "dialplan.rule[0].headers.Via", "set by the SIP layer"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nring_timeout_s = 0", "dialplan.rule[0].ring_timeout_s", "1 to 300"),
        ("[[dialplan.rule]]\ndirection = \"outbound\"\ntarget = \"sip:a@b\"", "dialplan.rule[0].target", "only inbound rules"),
        ("[[dialplan.rule]]\ndirection = \"inbound\"\ntarget = \"sip:a@b\"\nwhatsapp_user = \"+1\"", "dialplan.rule[0].whatsapp_user", "only outbound rules"),
        ("[[dialplan.rule]]\ndirection = \"outbound\"\nfrom_business = \"+15551441906\"", "dialplan.rule[0].from_business", "business_initiated_calls = false"),
        ("[schedules.bad]\ntime_zone = \"Europe/Berln\"", "schedules.bad.time_zone", "unknown time zone"),
        ("[schedules.bad]\ntime_zone = \"UTC\"\nopen = [\"mon 9-17\"]", "schedules.bad.open[0]", "not a time"),
        ("[schedules.bad]\ntime_zone = \"UTC\"\nholidays = [\"25.12.2026\"]", "schedules.bad.holidays[0]", "not a date"),
    ];
    for (rule, key, needle) in cases {
        let p = rule_problems(rule);
        let msg = p
            .get(*key)
            .unwrap_or_else(|| panic!("no problem for {key} in {p:?}\n{rule}"));
        assert!(msg.contains(needle), "{key}: `{msg}` lacks `{needle}`");
    }
}

#[test]
fn dialplan_route_is_pure() {
    let plan = plan();
    let ctx = inbound("+493012345678", DE, None, None, MON_OPEN);
    assert_eq!(plan.route(&ctx), plan.route(&ctx));
}
