//! Billing of business-initiated calls: 6-second pulses and an optional rate card.
//!
//! Meta bills business-initiated calls per **6-second pulse**, any partial pulse rounded up
//! (56 s = 10 pulses; reference §7.5). Rates are quoted per minute and depend on the callee's
//! country calling code, so one pulse costs a tenth of the per-minute rate. User-initiated calls
//! are free. Money is kept in integer millionths of the currency unit: no floating point.

use std::time::Duration;

use crate::CdrError;
use crate::record::Cost;

/// Length of one billing pulse.
pub const PULSE: Duration = Duration::from_secs(6);

/// Billable pulses for a talk time: `ceil(talk / 6 s)`; zero for zero talk time.
pub fn billable_pulses(talk: Duration) -> u32 {
    let ms = talk.as_millis();
    let pulse_ms = PULSE.as_millis();
    u32::try_from(ms.div_ceil(pulse_ms)).unwrap_or(u32::MAX)
}

/// One line of a rate card: the price per minute for callees whose number starts with
/// `country_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// Country calling code digits, e.g. `"91"` or `"1"`.
    pub country_code: String,
    /// Price per minute in millionths of the currency unit.
    pub per_minute_micros: i64,
}

/// A rate card: per-minute prices by the callee's country calling code, in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCard {
    currency: String,
    /// Sorted longest code first, so the first match is the longest prefix.
    rates: Vec<Rate>,
}

impl RateCard {
    /// Builds a rate card. `rates` are `(country code digits, decimal price per minute)`,
    /// e.g. `("91", "0.0120")`. Errors name the offending entry.
    pub fn new<'a>(
        currency: impl Into<String>,
        rates: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CdrError> {
        let currency = currency.into();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CdrError::RateCard(format!(
                "currency {currency:?} is not an ISO 4217 code"
            )));
        }
        let mut out = Vec::new();
        for (code, price) in rates {
            if code.is_empty() || code.len() > 4 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CdrError::RateCard(format!(
                    "country code {code:?} must be 1 to 4 digits"
                )));
            }
            let per_minute_micros = parse_decimal_micros(price).ok_or_else(|| {
                CdrError::RateCard(format!(
                    "price {price:?} for country code {code} is not a non-negative decimal with at most 6 fractional digits"
                ))
            })?;
            if out.iter().any(|r: &Rate| r.country_code == code) {
                return Err(CdrError::RateCard(format!(
                    "country code {code} appears twice"
                )));
            }
            out.push(Rate {
                country_code: code.to_owned(),
                per_minute_micros,
            });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.country_code.len()));
        Ok(Self {
            currency,
            rates: out,
        })
    }

    /// The rate for a callee number (E.164 digits, a leading `+` is ignored): longest
    /// country-code prefix wins.
    pub fn rate_for(&self, callee: &str) -> Option<&Rate> {
        let digits = callee.strip_prefix('+').unwrap_or(callee);
        self.rates
            .iter()
            .find(|r| digits.starts_with(r.country_code.as_str()))
    }

    /// The estimated cost of `pulses` pulses to `callee`; `None` when no rate matches.
    /// A pulse costs a tenth of the per-minute rate, rounded half up to a micro-unit.
    pub fn cost(&self, callee: &str, pulses: u32) -> Option<Cost> {
        let rate = self.rate_for(callee)?;
        let total = i128::from(rate.per_minute_micros) * i128::from(pulses);
        let micros = (total + 5) / 10;
        Some(Cost {
            currency: self.currency.clone(),
            micros: i64::try_from(micros).unwrap_or(i64::MAX),
        })
    }
}

/// Parses `"0.0120"` into 12 000 micro-units. At most 6 fractional digits; no sign, no exponent.
fn parse_decimal_micros(s: &str) -> Option<i64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || int.len() > 12 || frac.len() > 6 {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let mut frac_micros: i64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_micros += i64::from(b - b'0') * 10_i64.pow(5 - u32::try_from(i).ok()?);
    }
    int.checked_mul(1_000_000)?.checked_add(frac_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulses_round_partial_pulse_up() {
        // Reference §7.5: 56 s = 10 pulses.
        assert_eq!(billable_pulses(Duration::from_secs(56)), 10);
        assert_eq!(billable_pulses(Duration::ZERO), 0);
        assert_eq!(billable_pulses(Duration::from_millis(1)), 1);
        assert_eq!(billable_pulses(Duration::from_secs(6)), 1);
        assert_eq!(billable_pulses(Duration::from_millis(6_001)), 2);
        assert_eq!(billable_pulses(Duration::from_secs(60)), 10);
    }

    #[test]
    fn decimal_prices_parse_exactly() {
        assert_eq!(parse_decimal_micros("0.0120"), Some(12_000));
        assert_eq!(parse_decimal_micros("1"), Some(1_000_000));
        assert_eq!(parse_decimal_micros("2.5"), Some(2_500_000));
        assert_eq!(parse_decimal_micros("0.000001"), Some(1));
        assert_eq!(parse_decimal_micros("0.0000001"), None);
        assert_eq!(parse_decimal_micros("-1"), None);
        assert_eq!(parse_decimal_micros("1e3"), None);
        assert_eq!(parse_decimal_micros(".5"), None);
        assert_eq!(parse_decimal_micros(""), None);
    }

    #[test]
    fn rate_card_longest_prefix_wins_and_pulse_is_a_tenth_of_a_minute() {
        let card = RateCard::new(
            "USD",
            [("1", "0.0100"), ("91", "0.0050"), ("1876", "0.0900")],
        )
        .unwrap();
        assert_eq!(card.rate_for("+18765550000").unwrap().country_code, "1876");
        assert_eq!(card.rate_for("14085551234").unwrap().country_code, "1");
        assert_eq!(card.rate_for("917358580180").unwrap().country_code, "91");
        assert!(card.rate_for("447700900000").is_none());
        // 56 s -> 10 pulses = one minute at 0.0050.
        let cost = card.cost("917358580180", 10).unwrap();
        assert_eq!(cost.micros, 5_000);
        assert_eq!(cost.currency, "USD");
        // 1 pulse at 0.0900/min = 0.009.
        assert_eq!(card.cost("18765550000", 1).unwrap().micros, 9_000);
        // Half-up rounding of a tenth: 0.000015/min -> 1.5 micro per pulse -> 2.
        let tiny = RateCard::new("EUR", [("49", "0.000015")]).unwrap();
        assert_eq!(tiny.cost("4930123", 1).unwrap().micros, 2);
        assert!(card.cost("447700900000", 3).is_none());
    }

    #[test]
    fn rate_card_rejects_bad_entries_with_the_entry_named() {
        let e = RateCard::new("usd", [("1", "0.01")]).unwrap_err();
        assert!(e.to_string().contains("usd"), "{e}");
        let e = RateCard::new("USD", [("1a", "0.01")]).unwrap_err();
        assert!(e.to_string().contains("1a"), "{e}");
        let e = RateCard::new("USD", [("44", "ten")]).unwrap_err();
        assert!(e.to_string().contains("ten"), "{e}");
        let e = RateCard::new("USD", [("44", "1"), ("44", "2")]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }
}
