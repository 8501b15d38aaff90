//! Export of CDRs as CSV (RFC 4180) or JSON, for `whatsip cdr export`.

use std::io::{self, Write};

use crate::record::{CallRecord, MediaQuality, UnixMillis};

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "wa_call_id",
    "direction",
    "business_number",
    "customer_number",
    "customer_name",
    "pbx_call_id",
    "wa_sip_call_id",
    "dialplan_rule",
    "pbx_target",
    "offer_at_ms",
    "ring_at_ms",
    "answer_at_ms",
    "end_at_ms",
    "talk_time_s",
    "outcome",
    "hangup_by",
    "meta_status",
    "meta_error_code",
    "sip_status",
    "reason",
    "wa_codec",
    "pbx_codec",
    "wa_to_pbx_packets",
    "wa_to_pbx_lost",
    "wa_to_pbx_jitter_ms",
    "wa_to_pbx_longest_gap_ms",
    "pbx_to_wa_packets",
    "pbx_to_wa_lost",
    "pbx_to_wa_jitter_ms",
    "pbx_to_wa_longest_gap_ms",
    "dtmf_digits",
    "billable_pulses",
    "estimated_cost",
    "currency",
];

/// Writes `records` as CSV with a header line.
pub fn write_csv<W: Write>(records: &[CallRecord], mut out: W) -> io::Result<()> {
    writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    for r in records {
        let fields = csv_fields(r);
        debug_assert_eq!(fields.len(), CSV_COLUMNS.len());
        let line: Vec<String> = fields.iter().map(|f| csv_quote(f)).collect();
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

/// Writes `records` as one pretty JSON array.
pub fn write_json<W: Write>(records: &[CallRecord], out: W) -> io::Result<()> {
    serde_json::to_writer_pretty(out, records).map_err(io::Error::other)
}

fn csv_fields(r: &CallRecord) -> Vec<String> {
    fn opt<T: ToString>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    fn ms(v: Option<UnixMillis>) -> String {
        opt(v.map(|t| t.0))
    }
    fn media(m: Option<MediaQuality>) -> [String; 4] {
        match m {
            Some(m) => [
                m.packets.to_string(),
                m.lost.to_string(),
                format!("{:.2}", m.jitter_ms),
                m.longest_gap_ms.to_string(),
            ],
            None => Default::default(),
        }
    }
    let [a1, a2, a3, a4] = media(r.media_wa_to_pbx);
    let [b1, b2, b3, b4] = media(r.media_pbx_to_wa);
    let hangup = r.ending.hangup_by.map(|h| {
        serde_json::to_value(h)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    vec![
        r.wa_call_id.clone(),
        r.direction.as_str().to_owned(),
        r.business_number.clone(),
        r.customer_number.clone(),
        opt(r.customer_name.as_deref()),
        opt(r.pbx_call_id.as_deref()),
        opt(r.wa_sip_call_id.as_deref()),
        opt(r.dialplan_rule.as_deref()),
        opt(r.pbx_target.as_deref()),
        r.offer_at.0.to_string(),
        ms(r.ring_at),
        ms(r.answer_at),
        ms(r.end_at),
        format!("{:.3}", r.talk_time().as_secs_f64()),
        r.outcome.as_str().to_owned(),
        opt(hangup),
        opt(r.ending.meta_status.as_deref()),
        opt(r.ending.meta_error_code),
        opt(r.ending.sip_status),
        opt(r.ending.reason.as_deref()),
        opt(r.wa_codec.as_deref()),
        opt(r.pbx_codec.as_deref()),
        a1,
        a2,
        a3,
        a4,
        b1,
        b2,
        b3,
        b4,
        r.dtmf_digits.to_string(),
        opt(r.billable_pulses),
        opt(r.estimated_cost.as_ref().map(|c| c.to_decimal_string())),
        opt(r.estimated_cost.as_ref().map(|c| c.currency.clone())),
    ]
}

/// RFC 4180 quoting: fields with a comma, quote, CR or LF are quoted, quotes doubled.
/// Fields starting with `=`, `+`, `-` or `@` get a leading `'` so spreadsheets do not run them
/// as formulas (customer names come from WhatsApp profiles).
fn csv_quote(field: &str) -> String {
    let guarded;
    let field = if field.starts_with(['=', '+', '-', '@']) && field.parse::<f64>().is_err() {
        guarded = format!("'{field}");
        guarded.as_str()
    } else {
        field
    };
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Direction, Outcome};

    #[test]
    fn csv_quotes_and_guards_formulas() {
        assert_eq!(csv_quote("plain"), "plain");
        assert_eq!(csv_quote("a,b"), "\"a,b\"");
        assert_eq!(csv_quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_quote("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_quote("-12.5"), "-12.5");
    }

    #[test]
    fn csv_has_one_field_per_column() {
        let mut r = CallRecord::new(
            "wacid.X",
            Direction::Outbound,
            "4930",
            "4915",
            UnixMillis(1),
        );
        r.outcome = Outcome::Answered;
        r.customer_name = Some("Ana, \"the\" customer".into());
        let mut buf = Vec::new();
        write_csv(&[r], &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap().split(',').count(), CSV_COLUMNS.len());
        let row = lines.next().unwrap();
        assert!(row.contains("\"Ana, \"\"the\"\" customer\""), "{row}");
        assert!(row.starts_with("wacid.X,outbound,4930,4915,"), "{row}");
    }
}
