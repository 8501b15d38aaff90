//! `POST/GET /{pnid}/settings` validation and storage (reference §4.1, §4.2, §5.2).

use serde_json::{Map, Value, json};

use crate::error::GraphError;

/// Keys whose change triggers `account_settings_update` (§4.5).
pub(crate) const NOTIFY_KEYS: [&str; 3] = [
    "status",
    "call_icon_visibility",
    "callback_permission_status",
];

/// Validates the `calling` object of a settings POST. `today` is the UTC civil date
/// `(year, month, day)`, for "holiday date in the past".
pub(crate) fn validate_calling(calling: &Value, today: (i64, u32, u32)) -> Result<(), GraphError> {
    let Some(obj) = calling.as_object() else {
        return Err(bad("calling must be an object"));
    };
    for (k, v) in obj {
        match k.as_str() {
            "status" | "callback_permission_status" => enum_str(k, v, &["ENABLED", "DISABLED"])?,
            "call_icon_visibility" => {
                enum_str(k, v, &["DEFAULT", "DISABLE_ALL", "HIDE_IN_CHAT"])?;
            }
            "srtp_key_exchange_protocol" => enum_str(k, v, &["DTLS", "SDES"])?,
            "call_icons" => validate_call_icons(v)?,
            "call_hours" => validate_call_hours(v, today)?,
            "audio" => validate_audio(v)?,
            "sip" => validate_sip(v)?,
            other => return Err(bad(format!("unknown calling setting {other:?}"))),
        }
    }
    Ok(())
}

/// Merges a validated POST into the stored `calling` object. `call_hours` is replaced
/// wholesale; `sip.servers` replaces this app's servers, `[]` deletes them, and disabling
/// SIP keeps them (§4.1, §5.2).
pub(crate) fn merge_calling(
    stored: &mut Map<String, Value>,
    update: &Map<String, Value>,
    app_id: u64,
) {
    for (k, v) in update {
        if k == "sip" {
            let mut sip = stored
                .get("sip")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if let Some(st) = v.get("status") {
                sip.insert("status".into(), st.clone());
            }
            if let Some(servers) = v.get("servers").and_then(Value::as_array) {
                let servers: Vec<Value> = servers
                    .iter()
                    .map(|s| {
                        let mut s = s.as_object().cloned().unwrap_or_default();
                        s.entry("port").or_insert(json!(5061));
                        s.insert("app_id".into(), json!(app_id));
                        Value::Object(s)
                    })
                    .collect();
                sip.insert("servers".into(), Value::Array(servers));
            }
            stored.insert("sip".into(), Value::Object(sip));
        } else {
            stored.insert(k.clone(), v.clone());
        }
    }
}

/// The stored object as `GET` shows it, optionally with `sip_user_password`.
pub(crate) fn view_calling(
    stored: &Map<String, Value>,
    with_credentials: bool,
    password: &str,
) -> Value {
    let mut v = stored.clone();
    if with_credentials
        && let Some(servers) = v
            .get_mut("sip")
            .and_then(|s| s.get_mut("servers"))
            .and_then(Value::as_array_mut)
    {
        for s in servers {
            if let Some(o) = s.as_object_mut() {
                o.insert("sip_user_password".into(), Value::from(password));
            }
        }
    }
    Value::Object(v)
}

/// The subset that `account_settings_update` reports on, to detect changes.
pub(crate) fn notify_view(stored: &Map<String, Value>) -> Value {
    let mut v = Map::new();
    for k in NOTIFY_KEYS.iter().chain(&["srtp_key_exchange_protocol"]) {
        if let Some(x) = stored.get(*k) {
            v.insert((*k).into(), x.clone());
        }
    }
    if let Some(s) = stored.get("sip").and_then(|s| s.get("status")) {
        v.insert("sip".into(), json!({ "status": s }));
    }
    Value::Object(v)
}

fn bad(details: impl Into<String>) -> GraphError {
    GraphError::invalid_parameter(details)
}

fn enum_str(key: &str, v: &Value, allowed: &[&str]) -> Result<(), GraphError> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(bad(format!(
            "invalid {key}: must be one of {}",
            allowed.join(", ")
        ))),
    }
}

fn validate_call_icons(v: &Value) -> Result<(), GraphError> {
    let Some(obj) = v.as_object() else {
        return Err(bad("call_icons must be an object"));
    };
    for (k, v) in obj {
        if k != "restrict_to_user_countries" {
            return Err(bad(format!("unknown call_icons key {k:?}")));
        }
        let Some(list) = v.as_array() else {
            return Err(bad("restrict_to_user_countries must be an array"));
        };
        for c in list {
            let ok = c
                .as_str()
                .is_some_and(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()));
            if !ok {
                return Err(bad(
                    "restrict_to_user_countries takes ISO 3166 alpha-2 codes",
                ));
            }
        }
    }
    Ok(())
}

fn validate_audio(v: &Value) -> Result<(), GraphError> {
    let Some(obj) = v.as_object() else {
        return Err(bad("audio must be an object"));
    };
    for (k, v) in obj {
        if k != "additional_codecs" {
            return Err(bad(format!("unknown audio key {k:?}")));
        }
        let ok = v.as_array().is_some_and(|a| {
            a.iter()
                .all(|c| matches!(c.as_str(), Some("PCMA" | "PCMU")))
        });
        if !ok {
            return Err(bad("additional_codecs may only contain PCMA and PCMU"));
        }
    }
    Ok(())
}

fn validate_sip(v: &Value) -> Result<(), GraphError> {
    let Some(obj) = v.as_object() else {
        return Err(bad("sip must be an object"));
    };
    for (k, val) in obj {
        match k.as_str() {
            "status" => enum_str("sip.status", val, &["ENABLED", "DISABLED"])?,
            "servers" => {
                let Some(list) = val.as_array() else {
                    return Err(bad("sip.servers must be an array"));
                };
                if list.len() > 1 {
                    return Err(bad("only one SIP server per phone number is supported"));
                }
                for s in list {
                    validate_sip_server(s)?;
                }
            }
            other => return Err(bad(format!("unknown sip key {other:?}"))),
        }
    }
    let enabling = obj.get("status").and_then(Value::as_str) == Some("ENABLED");
    let empty = obj
        .get("servers")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    if enabling && empty {
        return Err(bad(
            "at least one SIP server is required while sip.status is ENABLED",
        ));
    }
    Ok(())
}

fn validate_sip_server(s: &Value) -> Result<(), GraphError> {
    let Some(obj) = s.as_object() else {
        return Err(bad("sip server must be an object"));
    };
    let host_ok = obj
        .get("hostname")
        .and_then(Value::as_str)
        .is_some_and(|h| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        });
    if !host_ok {
        return Err(bad(
            "sip server hostname is required and must be a host name",
        ));
    }
    for (k, v) in obj {
        match k.as_str() {
            "hostname" => {}
            "port" => {
                if !v.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
                    return Err(bad("sip server port must be 1..65535"));
                }
            }
            "request_uri_user_params" => {
                let Some(params) = v.as_object() else {
                    return Err(bad("request_uri_user_params must be an object"));
                };
                for (pk, pv) in params {
                    let pv = pv.as_str().unwrap_or("");
                    if pk.len() > 128 || pv.len() > 128 || pk.is_empty() {
                        return Err(bad(
                            "request_uri_user_params keys and values are limited to 128 characters",
                        ));
                    }
                }
            }
            other => return Err(bad(format!("unknown sip server key {other:?}"))),
        }
    }
    Ok(())
}

const DAYS: [&str; 7] = [
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
    "SUNDAY",
];

fn validate_call_hours(v: &Value, today: (i64, u32, u32)) -> Result<(), GraphError> {
    let Some(obj) = v.as_object() else {
        return Err(bad("call_hours must be an object"));
    };
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "status" | "timezone_id" | "weekly_operating_hours" | "holiday_schedule"
        ) {
            return Err(bad(format!("unknown call_hours key {k:?}")));
        }
    }
    if let Some(st) = obj.get("status") {
        enum_str("call_hours.status", st, &["ENABLED", "DISABLED"])?;
    }
    if let Some(tz) = obj.get("timezone_id") {
        let ok = tz.as_str().is_some_and(valid_tz_shape);
        if !ok {
            return Err(bad("invalid timezone_id"));
        }
    }
    let weekly = obj.get("weekly_operating_hours");
    let enabled = obj.get("status").and_then(Value::as_str) == Some("ENABLED");
    match weekly {
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(bad("weekly_operating_hours must not be empty"));
            }
            let mut per_day: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 7];
            for e in list {
                let day = e.get("day_of_week").and_then(Value::as_str).unwrap_or("");
                let Some(d) = DAYS.iter().position(|x| *x == day) else {
                    return Err(bad(format!("invalid day_of_week {day:?}")));
                };
                let open = hhmm(e.get("open_time"))
                    .ok_or_else(|| bad("open_time must be an HHMM string"))?;
                let close = hhmm(e.get("close_time"))
                    .ok_or_else(|| bad("close_time must be an HHMM string"))?;
                if open >= close {
                    return Err(bad(
                        "invalid call_hours schedule: open_time must be before close_time",
                    ));
                }
                per_day[d].push((open, close));
            }
            for slots in &mut per_day {
                if slots.len() > 2 {
                    return Err(bad("at most 2 weekly_operating_hours entries per day"));
                }
                slots.sort_unstable();
                if slots.len() == 2 && slots[0].1 > slots[1].0 {
                    return Err(bad("overlapping weekly_operating_hours"));
                }
            }
        }
        Some(_) => return Err(bad("weekly_operating_hours must be an array")),
        None if enabled => return Err(bad("weekly_operating_hours must not be empty")),
        None => {}
    }
    if let Some(h) = obj.get("holiday_schedule") {
        let Some(list) = h.as_array() else {
            return Err(bad("holiday_schedule must be an array"));
        };
        if list.len() > 20 {
            return Err(bad("at most 20 holiday_schedule entries"));
        }
        for e in list {
            let date = e.get("date").and_then(Value::as_str).unwrap_or("");
            let Some(d) = parse_date(date) else {
                return Err(bad(format!(
                    "invalid holiday date format {date:?}, expected YYYY-MM-DD"
                )));
            };
            if d < today {
                return Err(bad(format!("holiday date {date} is in the past")));
            }
            let start = hhmm(e.get("start_time"))
                .ok_or_else(|| bad("start_time must be an HHMM string"))?;
            let end =
                hhmm(e.get("end_time")).ok_or_else(|| bad("end_time must be an HHMM string"))?;
            if start >= end {
                return Err(bad("holiday start_time must be before end_time"));
            }
        }
    }
    Ok(())
}

/// `"0400"` or `"04:00"` (one reference variant uses the colon form, §4.1) to minutes.
fn hhmm(v: Option<&Value>) -> Option<u32> {
    let s = v?.as_str()?;
    let digits: String = match s.len() {
        4 => s.to_owned(),
        5 if s.as_bytes()[2] == b':' => s.replace(':', ""),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u32 = digits[..2].parse().ok()?;
    let m: u32 = digits[2..].parse().ok()?;
    (h <= 23 && m <= 59).then_some(h * 60 + m)
}

fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..].parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let max = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=max).contains(&d).then_some((y, m, d))
}

/// An IANA-looking zone id (`Area/City`, `UTC`). No tz database is bundled.
fn valid_tz_shape(s: &str) -> bool {
    if matches!(s, "UTC" | "GMT" | "Etc/UTC") {
        return true;
    }
    let mut parts = s.split('/');
    let area = parts.next().unwrap_or("");
    const AREAS: [&str; 10] = [
        "Africa",
        "America",
        "Antarctica",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
        "Etc",
    ];
    AREAS.contains(&area)
        && s.len() <= 64
        && s.split('/').count() >= 2
        && s.split('/').skip(1).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
}

/// UTC civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: (i64, u32, u32) = (2026, 11, 25);

    fn hours(entries: Value) -> Value {
        json!({ "call_hours": { "status": "ENABLED", "timezone_id": "America/Manaus",
            "weekly_operating_hours": entries } })
    }

    #[test]
    fn civil_date_of_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
    }

    #[test]
    fn doc_settings_sample_is_valid() {
        let v = json!({
            "status": "ENABLED", "call_icon_visibility": "DEFAULT",
            "call_icons": { "restrict_to_user_countries": ["US", "BR"] },
            "call_hours": { "status": "ENABLED", "timezone_id": "America/Manaus",
                "weekly_operating_hours": [
                    { "day_of_week": "MONDAY", "open_time": "0400", "close_time": "1020" },
                    { "day_of_week": "TUESDAY", "open_time": "0108", "close_time": "1020" }],
                "holiday_schedule": [ { "date": "2027-01-01", "start_time": "0000", "end_time": "2359" } ] },
            "callback_permission_status": "ENABLED", "srtp_key_exchange_protocol": "SDES",
            "audio": { "additional_codecs": ["PCMA", "PCMU"] },
            "sip": { "status": "ENABLED", "servers": [ { "hostname": "sip.example.com", "port": 5061,
                "request_uri_user_params": { "tgrp": "wacall", "trunk-context": "byoc.example.com" } } ] }
        });
        validate_calling(&v, TODAY).unwrap();
    }

    #[test]
    fn call_hours_rules_reject_bad_schedules() {
        let cases = [
            (hours(json!([])), "must not be empty"),
            (
                hours(
                    json!([{ "day_of_week": "MONDAY", "open_time": "1000", "close_time": "0900" }]),
                ),
                "before close_time",
            ),
            (
                hours(
                    json!([{ "day_of_week": "FUNDAY", "open_time": "0900", "close_time": "1000" }]),
                ),
                "day_of_week",
            ),
            (
                hours(json!([
                    { "day_of_week": "MONDAY", "open_time": "0900", "close_time": "1200" },
                    { "day_of_week": "MONDAY", "open_time": "1100", "close_time": "1300" }])),
                "overlapping",
            ),
            (
                hours(json!([
                    { "day_of_week": "MONDAY", "open_time": "0100", "close_time": "0200" },
                    { "day_of_week": "MONDAY", "open_time": "0300", "close_time": "0400" },
                    { "day_of_week": "MONDAY", "open_time": "0500", "close_time": "0600" }])),
                "at most 2",
            ),
            (
                json!({ "call_hours": { "status": "ENABLED", "timezone_id": "Mars/Olympus",
                    "weekly_operating_hours": [{ "day_of_week": "MONDAY", "open_time": "0100", "close_time": "0200" }] } }),
                "timezone",
            ),
            (
                json!({ "call_hours": { "status": "DISABLED",
                    "holiday_schedule": [{ "date": "2020-01-01", "start_time": "0000", "end_time": "2359" }] } }),
                "in the past",
            ),
            (
                json!({ "call_hours": { "status": "DISABLED",
                    "holiday_schedule": [{ "date": "01/01/2030", "start_time": "0000", "end_time": "2359" }] } }),
                "date format",
            ),
            (json!({ "status": "ON" }), "invalid status"),
            (
                json!({ "sip": { "status": "ENABLED", "servers": [] } }),
                "at least one SIP server",
            ),
        ];
        for (body, want) in cases {
            let e = validate_calling(&body, TODAY).unwrap_err();
            assert_eq!(e.code, 100);
            assert!(e.details.contains(want), "{want:?} not in {:?}", e.details);
        }
    }
}
