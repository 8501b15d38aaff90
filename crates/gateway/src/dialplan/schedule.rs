//! Opening-hours schedules in a named IANA time zone.
//!
//! Hours are local wall-clock time, so a rule open `mon-fri 08:00-17:00` opens at 08:00
//! local on the day clocks change too. An interval whose end is not after its start runs
//! past midnight into the next weekday (`fri 22:00-02:00` is open Saturday until 02:00).
//! A holiday closes its whole local date, including the part of an overnight interval
//! that spills into it.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;

/// A compiled schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    tz: TimeZone,
    /// Open intervals per weekday (Monday = 0), minutes since local midnight, `[start, end)`.
    open: [Vec<(u16, u16)>; 7],
    holidays: BTreeSet<Date>,
}

impl Schedule {
    /// Builds a schedule; `open` entries look like `mon-fri 09:00-12:00,13:00-17:00`.
    pub(crate) fn new(
        name: &str,
        tz: TimeZone,
        open: &[(usize, &str)],
        holidays: &[(usize, &str)],
    ) -> Result<Self, (usize, String)> {
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        for (idx, spec) in open {
            parse_open(spec, &mut days).map_err(|e| (*idx, e))?;
        }
        let mut set = BTreeSet::new();
        for (idx, h) in holidays {
            let d: Date = h
                .trim()
                .parse()
                .map_err(|e| (*idx, format!("`{h}` is not a date like 2026-12-25: {e}")))?;
            set.insert(d);
        }
        Ok(Self {
            name: name.to_owned(),
            tz,
            open: days,
            holidays: set,
        })
    }

    /// The schedule's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IANA name of its time zone.
    pub fn time_zone_name(&self) -> &str {
        self.tz.iana_name().unwrap_or("<unnamed>")
    }

    /// Whether the schedule is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let local = self.tz.to_datetime(now);
        if self.holidays.contains(&local.date()) {
            return false;
        }
        let minute =
            u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
        let day = weekday_index(local.weekday());
        self.open[day]
            .iter()
            .any(|&(s, e)| s <= minute && minute < e)
    }
}

fn weekday_index(w: Weekday) -> usize {
    usize::try_from(w.to_monday_zero_offset()).unwrap_or(0)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_day(s: &str) -> Result<usize, String> {
    let lower = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| lower == *d || lower == full_day(d))
        .ok_or_else(|| format!("unknown weekday `{s}`; use mon, tue, wed, thu, fri, sat, sun"))
}

fn full_day(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

fn parse_time(s: &str) -> Result<u16, String> {
    let err = || format!("`{s}` is not a time like 09:00 (00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(err)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(err());
    }
    let h: u16 = h.parse().map_err(|_| err())?;
    let m: u16 = m.parse().map_err(|_| err())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(err());
    }
    Ok(h * 60 + m)
}

fn parse_open(spec: &str, days: &mut [Vec<(u16, u16)>; 7]) -> Result<(), String> {
    let mut it = spec.split_whitespace();
    let (Some(day_part), Some(time_part), None) = (it.next(), it.next(), it.next()) else {
        return Err(format!("`{spec}` should look like `mon-fri 09:00-17:00`"));
    };
    let mut selected = [false; 7];
    if matches!(day_part.to_ascii_lowercase().as_str(), "daily" | "*") {
        selected = [true; 7];
    } else {
        for item in day_part.split(',') {
            if let Some((a, b)) = item.split_once('-') {
                let (a, b) = (parse_day(a)?, parse_day(b)?);
                // weekday ranges wrap: `fri-mon` is fri, sat, sun, mon
                let mut d = a;
                loop {
                    selected[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            } else {
                selected[parse_day(item)?] = true;
            }
        }
    }
    for range in time_part.split(',') {
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| format!("`{range}` should look like `09:00-17:00`"))?;
        let (start, end) = (parse_time(a)?, parse_time(b)?);
        if start == end {
            return Err(format!("`{range}` opens and closes at the same minute"));
        }
        if start == 24 * 60 {
            return Err(format!("`{range}` cannot open at 24:00"));
        }
        for (day, on) in selected.iter().enumerate() {
            if !on {
                continue;
            }
            if start < end {
                days[day].push((start, end));
            } else {
                // overnight: the part after midnight belongs to the next weekday
                days[day].push((start, 24 * 60));
                if end > 0 {
                    days[(day + 1) % 7].push((0, end));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn berlin(open: &[&str], holidays: &[&str]) -> Schedule {
        let open: Vec<(usize, &str)> = open.iter().copied().enumerate().collect();
        let hol: Vec<(usize, &str)> = holidays.iter().copied().enumerate().collect();
        Schedule::new(
            "office",
            TimeZone::get("Europe/Berlin").unwrap(),
            &open,
            &hol,
        )
        .unwrap()
    }

    #[test]
    fn schedule_open_minute_is_inclusive_and_close_minute_exclusive() {
        // 2026-01-05 is a Monday; Berlin is UTC+1 in winter.
        let s = berlin(&["mon-fri 09:00-17:00"], &[]);
        assert!(!s.is_open(ts("2026-01-05T07:59:59Z")));
        assert!(s.is_open(ts("2026-01-05T08:00:00Z")));
        assert!(s.is_open(ts("2026-01-05T15:59:59Z")));
        assert!(!s.is_open(ts("2026-01-05T16:00:00Z")));
        // Saturday closed
        assert!(!s.is_open(ts("2026-01-10T10:00:00Z")));
    }

    #[test]
    fn schedule_overnight_interval_wraps_from_sunday_into_monday() {
        let s = berlin(&["sun 22:00-02:00"], &[]);
        // Sunday 2026-01-11 23:30 local = 22:30Z
        assert!(s.is_open(ts("2026-01-11T22:30:00Z")));
        // Monday 01:59 local = 00:59Z: still open (wrapped to Monday)
        assert!(s.is_open(ts("2026-01-12T00:59:00Z")));
        // Monday 02:00 local: closed
        assert!(!s.is_open(ts("2026-01-12T01:00:00Z")));
        // Sunday 01:00 local (the Saturday-night part does not exist)
        assert!(!s.is_open(ts("2026-01-11T00:00:00Z")));
    }

    #[test]
    fn schedule_weekday_range_wraps_past_sunday() {
        let s = berlin(&["fri-mon 10:00-11:00"], &[]);
        for (day, open) in [
            ("05", true),
            ("06", false),
            ("07", false),
            ("08", false),
            ("09", true),
            ("10", true),
            ("11", true),
        ] {
            let t = ts(&format!("2026-01-{day}T09:30:00Z"));
            assert_eq!(s.is_open(t), open, "2026-01-{day}");
        }
    }

    #[test]
    fn schedule_holiday_closes_whole_local_date() {
        let s = berlin(&["daily 00:00-24:00"], &["2026-12-25"]);
        // 2026-12-24 23:30 UTC is already the 25th in Berlin
        assert!(!s.is_open(ts("2026-12-24T23:30:00Z")));
        assert!(s.is_open(ts("2026-12-24T22:59:00Z")));
        assert!(s.is_open(ts("2026-12-25T23:00:00Z")));
    }

    #[test]
    fn schedule_follows_local_wall_clock_on_dst_change_days() {
        let s = berlin(&["daily 08:00-17:00"], &[]);
        // Spring forward on 2026-03-29: 08:00 CEST = 06:00Z (the day before, 07:00Z).
        assert!(s.is_open(ts("2026-03-28T07:00:00Z")));
        assert!(!s.is_open(ts("2026-03-28T06:59:00Z")));
        assert!(s.is_open(ts("2026-03-29T06:00:00Z")));
        assert!(!s.is_open(ts("2026-03-29T05:59:00Z")));
        assert!(!s.is_open(ts("2026-03-29T15:00:00Z")));
        // Fall back on 2026-10-25: 17:00 CET = 16:00Z
        assert!(s.is_open(ts("2026-10-25T15:59:00Z")));
        assert!(!s.is_open(ts("2026-10-25T16:00:00Z")));
    }

    #[test]
    fn schedule_refuses_bad_specs() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        for bad in [
            "mon 9:00-17:00",
            "mon 09:00",
            "funday 09:00-10:00",
            "mon 09:00-09:00",
            "mon 24:00-01:00",
            "mon 25:00-26:00",
            "mon",
        ] {
            assert!(
                Schedule::new("x", tz.clone(), &[(0, bad)], &[]).is_err(),
                "{bad}"
            );
        }
        assert!(Schedule::new("x", tz, &[], &[(0, "2026-13-01")]).is_err());
    }
}
