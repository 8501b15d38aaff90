//! Reading the CDRs the gateway wrote (SQLite store and JSON-lines export) and checking
//! them field by field against what a test saw happen on the wire.
//!
//! [`CdrExpect::check`] collects every mismatch and panics once with all of them and the
//! record, so a failing test says which fields are wrong, not just the first.

// `#[allow(dead_code)]` on the `mod cdr` declaration: each test file uses the checks its calls need.

use std::fmt::Write as _;
use std::path::Path;

use whatsip_cdr::{CallRecord, CdrFilter, CdrStore, Direction, HangupSide, Outcome, StoreOptions};

/// Every final record in the store at `db`, oldest first (none if the store is missing).
pub(crate) fn final_records(db: &Path) -> Vec<CallRecord> {
    if !db.exists() {
        return Vec::new();
    }
    let store = CdrStore::open(db, StoreOptions::default())
        .unwrap_or_else(|e| panic!("open cdr store {}: {e}", db.display()));
    store
        .list(&CdrFilter::default())
        .unwrap_or_else(|e| panic!("list cdrs in {}: {e}", db.display()))
}

/// The one final record of WhatsApp call `wa_call_id`, read now: the gateway must have
/// committed it before the call's resources were released.
pub(crate) fn record_for(db: &Path, wa_call_id: &str) -> CallRecord {
    let all = final_records(db);
    let mut found: Vec<&CallRecord> = all.iter().filter(|r| r.wa_call_id == wa_call_id).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one CDR for WhatsApp call {wa_call_id} in {}; all records: {all:#?}",
        db.display()
    );
    found.remove(0).clone()
}

/// The one final record whose PBX leg had SIP Call-ID `call_id`, read now.
pub(crate) fn record_for_sip(db: &Path, call_id: &str) -> CallRecord {
    let all = final_records(db);
    let mut found: Vec<&CallRecord> = all
        .iter()
        .filter(|r| r.pbx_call_id.as_deref() == Some(call_id))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one CDR for SIP Call-ID {call_id} in {}; all records: {all:#?}",
        db.display()
    );
    found.remove(0).clone()
}

/// The lines of the JSON-lines export for `wa_call_id`.
pub(crate) fn jsonl_lines_for(jsonl: &Path, wa_call_id: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(jsonl)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["wa_call_id"] == wa_call_id)
        .collect()
}

/// The SIP Call-ID of the first message in a SIPp message log that contains `marker`
/// (`INVITE sip:`, say).
pub(crate) fn sip_call_id_in(messages: &str, marker: &str) -> Option<String> {
    let at = messages.find(marker)?;
    messages[at..]
        .lines()
        .find_map(|l| {
            l.strip_prefix("Call-ID:")
                .or_else(|| l.strip_prefix("Call-Id:"))
                .or_else(|| l.strip_prefix("i:"))
        })
        .map(|v| v.trim().to_owned())
}

/// Whether the call had a PBX leg (a SIP dialog with a Call-ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PbxLeg {
    /// No SIP was exchanged with the PBX for this call.
    None,
    /// A PBX leg existed; its Call-ID is not known to the test.
    Some,
    /// A PBX leg with exactly this Call-ID.
    CallId(String),
}

/// What the record's key must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WaKey {
    /// Meta never gave the call an id: keyed `sip:<PBX Call-ID>`.
    SipKey,
    /// Meta's call id (`wacid.…`), whatever it is.
    MetaAssigned,
    /// Exactly this WhatsApp call id.
    Exact(String),
}

/// What a call's record must say. Build with [`CdrExpect::inbound`] /
/// [`CdrExpect::outbound`] and the setters, then [`CdrExpect::check`].
#[derive(Debug, Clone)]
pub(crate) struct CdrExpect {
    pub(crate) direction: Direction,
    pub(crate) business: String,
    pub(crate) customer: String,
    pub(crate) wa_call_id: WaKey,
    pub(crate) outcome: Outcome,
    pub(crate) hangup_by: Option<HangupSide>,
    /// The end reason contains this.
    pub(crate) reason: Option<String>,
    pub(crate) sip_status: Option<u16>,
    pub(crate) meta_status: Option<String>,
    pub(crate) meta_error_code: Option<i64>,
    pub(crate) rule: Option<String>,
    /// The PBX target starts with this.
    pub(crate) target_prefix: Option<String>,
    pub(crate) pbx_leg: PbxLeg,
    /// The PBX rang (180/183) before the end.
    pub(crate) rang: bool,
    pub(crate) answered: bool,
    /// The PBX leg's codec (case-insensitive prefix), for answered calls.
    pub(crate) pbx_codec: Option<String>,
    /// Media flowed both ways: packet counts and loss checked.
    pub(crate) media: bool,
    pub(crate) dtmf_digits: Option<u32>,
    /// Per-minute rate in micro-units of EUR for the billing check (outbound answered calls).
    pub(crate) rate_per_minute_micros: Option<i64>,
}

impl CdrExpect {
    fn new(direction: Direction, business: &str, customer: &str, outcome: Outcome) -> Self {
        CdrExpect {
            direction,
            business: business.to_owned(),
            customer: customer.to_owned(),
            wa_call_id: WaKey::SipKey,
            outcome,
            hangup_by: None,
            reason: None,
            sip_status: None,
            meta_status: None,
            meta_error_code: None,
            rule: None,
            target_prefix: None,
            pbx_leg: PbxLeg::None,
            rang: false,
            answered: false,
            pbx_codec: None,
            media: false,
            dtmf_digits: Some(0),
            rate_per_minute_micros: None,
        }
    }

    /// A user-initiated call to `business` from `customer`.
    pub(crate) fn inbound(business: &str, customer: &str, outcome: Outcome) -> Self {
        Self::new(Direction::Inbound, business, customer, outcome)
    }

    /// A business-initiated call from `business` to `customer`.
    pub(crate) fn outbound(business: &str, customer: &str, outcome: Outcome) -> Self {
        Self::new(Direction::Outbound, business, customer, outcome)
    }

    pub(crate) fn wa_call_id(mut self, id: &str) -> Self {
        self.wa_call_id = WaKey::Exact(id.to_owned());
        self
    }
    /// Keyed by the call id Meta gave (`wacid.…`).
    pub(crate) fn meta_assigned(mut self) -> Self {
        self.wa_call_id = WaKey::MetaAssigned;
        self
    }
    pub(crate) fn hangup(mut self, side: HangupSide) -> Self {
        self.hangup_by = Some(side);
        self
    }
    pub(crate) fn reason(mut self, contains: &str) -> Self {
        self.reason = Some(contains.to_owned());
        self
    }
    pub(crate) fn sip_status(mut self, status: u16) -> Self {
        self.sip_status = Some(status);
        self
    }
    pub(crate) fn meta(mut self, status: &str, code: Option<i64>) -> Self {
        self.meta_status = Some(status.to_owned());
        self.meta_error_code = code;
        self
    }
    pub(crate) fn route(mut self, rule: &str, target_prefix: Option<&str>) -> Self {
        self.rule = Some(rule.to_owned());
        self.target_prefix = target_prefix.map(str::to_owned);
        self
    }
    pub(crate) fn pbx_leg(mut self, leg: PbxLeg) -> Self {
        self.pbx_leg = leg;
        self
    }
    pub(crate) fn rang(mut self) -> Self {
        self.rang = true;
        self
    }
    /// Answered with `pbx_codec` on the PBX leg (media checked unless [`Self::no_media`]).
    pub(crate) fn answered(mut self, pbx_codec: &str) -> Self {
        self.answered = true;
        self.pbx_codec = Some(pbx_codec.to_owned());
        self.media = true;
        self
    }
    /// Answered, but no media is expected to have flowed.
    pub(crate) fn no_media(mut self) -> Self {
        self.media = false;
        self
    }
    pub(crate) fn dtmf(mut self, digits: u32) -> Self {
        self.dtmf_digits = Some(digits);
        self
    }
    /// The DTMF count is not checked (digits sent and echoed in ways the test can't count).
    pub(crate) fn any_dtmf(mut self) -> Self {
        self.dtmf_digits = None;
        self
    }
    pub(crate) fn billed_at(mut self, per_minute_micros: i64) -> Self {
        self.rate_per_minute_micros = Some(per_minute_micros);
        self
    }

    /// Checks `r` against the expectation; panics listing every mismatch and the record.
    pub(crate) fn check(&self, r: &CallRecord) {
        let mut bad = String::new();
        let mut want = |ok: bool, what: String| {
            if !ok {
                let _ = writeln!(bad, "  - {what}");
            }
        };
        want(
            r.direction == self.direction,
            format!("direction {:?}, want {:?}", r.direction, self.direction),
        );
        want(
            r.business_number == self.business,
            format!(
                "business number {:?}, want {:?}",
                r.business_number, self.business
            ),
        );
        want(
            r.customer_number == self.customer,
            format!(
                "customer number {:?}, want {:?}",
                r.customer_number, self.customer
            ),
        );
        match &self.wa_call_id {
            WaKey::Exact(id) => want(
                &r.wa_call_id == id,
                format!("WhatsApp call id {:?}, want {id:?}", r.wa_call_id),
            ),
            WaKey::MetaAssigned => want(
                r.wa_call_id.starts_with("wacid."),
                format!("WhatsApp call id {:?}, want Meta's `wacid.…`", r.wa_call_id),
            ),
            WaKey::SipKey => want(
                r.pbx_call_id
                    .as_ref()
                    .is_some_and(|c| r.wa_call_id == format!("sip:{c}")),
                format!(
                    "WhatsApp call id {:?}: Meta never gave one, want `sip:<PBX Call-ID>`",
                    r.wa_call_id
                ),
            ),
        }
        want(
            r.outcome == self.outcome,
            format!("outcome {:?}, want {:?}", r.outcome, self.outcome),
        );
        want(
            r.ending.hangup_by == self.hangup_by,
            format!(
                "hung up by {:?}, want {:?}",
                r.ending.hangup_by, self.hangup_by
            ),
        );
        match &self.reason {
            Some(c) => want(
                r.ending
                    .reason
                    .as_deref()
                    .is_some_and(|s| s.contains(c.as_str())),
                format!("reason {:?}, want one containing {c:?}", r.ending.reason),
            ),
            None => want(r.ending.reason.is_some(), "no end reason".into()),
        }
        want(
            r.ending.sip_status == self.sip_status,
            format!(
                "SIP status {:?}, want {:?}",
                r.ending.sip_status, self.sip_status
            ),
        );
        want(
            r.ending.meta_status == self.meta_status,
            format!(
                "Meta status {:?}, want {:?}",
                r.ending.meta_status, self.meta_status
            ),
        );
        want(
            r.ending.meta_error_code == self.meta_error_code,
            format!(
                "Meta error code {:?}, want {:?}",
                r.ending.meta_error_code, self.meta_error_code
            ),
        );
        want(
            r.dialplan_rule == self.rule,
            format!("dial-plan rule {:?}, want {:?}", r.dialplan_rule, self.rule),
        );
        if let Some(t) = &self.target_prefix {
            want(
                r.pbx_target
                    .as_deref()
                    .is_some_and(|p| p.starts_with(t.as_str())),
                format!("PBX target {:?}, want one starting {t:?}", r.pbx_target),
            );
        }
        match &self.pbx_leg {
            PbxLeg::None => want(
                r.pbx_call_id.is_none(),
                format!("PBX Call-ID {:?} but no PBX leg existed", r.pbx_call_id),
            ),
            PbxLeg::Some => want(
                r.pbx_call_id.as_deref().is_some_and(|c| !c.is_empty()),
                "no PBX Call-ID although the PBX leg existed".into(),
            ),
            PbxLeg::CallId(c) => want(
                r.pbx_call_id.as_deref() == Some(c.as_str()),
                format!("PBX Call-ID {:?}, want {c:?}", r.pbx_call_id),
            ),
        }
        // WebRTC on the WhatsApp side: there is no SIP Call-ID there
        want(
            r.wa_sip_call_id.is_none(),
            format!(
                "WhatsApp-leg SIP Call-ID {:?} on a WebRTC call",
                r.wa_sip_call_id
            ),
        );

        // timestamps: present where the stage happened, ordered
        let end = r.end_at;
        want(end.is_some(), "no end time".into());
        want(
            end.is_none_or(|e| r.offer_at <= e),
            format!("offer {:?} after end {end:?}", r.offer_at),
        );
        if self.rang {
            want(
                r.ring_at.is_some(),
                "no ring time although the PBX rang".into(),
            );
        } else if self.pbx_leg == PbxLeg::None {
            want(
                r.ring_at.is_none(),
                format!("ring time {:?} although nothing rang", r.ring_at),
            );
        }
        if let Some(ring) = r.ring_at {
            want(
                r.offer_at <= ring && end.is_none_or(|e| ring <= e),
                format!(
                    "ring {ring:?} not between offer {:?} and end {end:?}",
                    r.offer_at
                ),
            );
        }
        if self.answered {
            match r.answer_at {
                None => want(false, "no answer time on an answered call".into()),
                Some(a) => {
                    want(
                        r.offer_at <= a && end.is_none_or(|e| a <= e),
                        format!(
                            "answer {a:?} not between offer {:?} and end {end:?}",
                            r.offer_at
                        ),
                    );
                    if let Some(ring) = r.ring_at {
                        want(ring <= a, format!("ring {ring:?} after answer {a:?}"));
                    }
                }
            }
        } else {
            want(
                r.answer_at.is_none(),
                format!("answer time {:?} on a call never answered", r.answer_at),
            );
        }

        // codecs and media
        want(
            r.wa_codec.as_deref() == Some("opus"),
            format!("WhatsApp codec {:?}, want opus", r.wa_codec),
        );
        if let Some(c) = &self.pbx_codec {
            want(
                r.pbx_codec
                    .as_deref()
                    .is_some_and(|p| p.to_ascii_lowercase().starts_with(&c.to_ascii_lowercase())),
                format!("PBX codec {:?}, want {c}", r.pbx_codec),
            );
        }
        if self.media {
            for (dir, q) in [
                ("whatsapp->pbx", r.media_wa_to_pbx),
                ("pbx->whatsapp", r.media_pbx_to_wa),
            ] {
                match q {
                    None => want(false, format!("no media quality for {dir}")),
                    Some(q) => {
                        want(q.packets > 0, format!("{dir}: no packets counted ({q:?})"));
                        // loopback: a handful lost at most (start-up, a busy machine)
                        want(
                            q.lost * 10 <= q.packets.max(1),
                            format!("{dir}: loss {} of {} packets", q.lost, q.packets),
                        );
                        want(
                            q.jitter_ms.is_finite() && q.jitter_ms >= 0.0 && q.jitter_ms < 1000.0,
                            format!("{dir}: jitter {} ms", q.jitter_ms),
                        );
                    }
                }
            }
        } else if !self.answered {
            for (dir, q) in [
                ("whatsapp->pbx", r.media_wa_to_pbx),
                ("pbx->whatsapp", r.media_pbx_to_wa),
            ] {
                want(
                    q.is_none_or(|q| q.packets == 0 || self.pbx_leg != PbxLeg::None),
                    format!("{dir}: media {q:?} on a call without a PBX leg"),
                );
            }
        }
        if let Some(n) = self.dtmf_digits {
            want(
                r.dtmf_digits == n,
                format!("DTMF digits {}, want {n}", r.dtmf_digits),
            );
        }

        // billing: business-initiated calls only, ceil(talk / 6 s) pulses
        match self.direction {
            Direction::Inbound => {
                want(
                    r.billable_pulses.is_none() && r.estimated_cost.is_none(),
                    format!(
                        "user-initiated calls are free; got {:?} pulses, cost {:?}",
                        r.billable_pulses, r.estimated_cost
                    ),
                );
            }
            _ => {
                let talk_ms = r.talk_time().as_millis();
                let pulses = u32::try_from(talk_ms.div_ceil(6000)).unwrap();
                want(
                    r.billable_pulses == Some(pulses),
                    format!(
                        "billable pulses {:?}, want ceil({talk_ms} ms / 6 s) = {pulses}",
                        r.billable_pulses
                    ),
                );
                if self.answered {
                    want(pulses >= 1, format!("answered, but {talk_ms} ms talk time"));
                }
                if let Some(rate) = self.rate_per_minute_micros {
                    let micros = (i64::from(pulses) * rate + 5) / 10;
                    want(
                        r.estimated_cost
                            .as_ref()
                            .is_some_and(|c| c.currency == "EUR" && c.micros == micros),
                        format!(
                            "estimated cost {:?}, want {micros} µEUR ({pulses} pulses)",
                            r.estimated_cost
                        ),
                    );
                }
            }
        }

        assert!(
            bad.is_empty(),
            "CDR of {} is wrong:\n{bad}record: {r:#?}",
            r.wa_call_id
        );
    }
}
