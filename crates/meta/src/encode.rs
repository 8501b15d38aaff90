//! Typed events back to Meta's JSON, so events can be stored, replayed and compared, and
//! tests can check parse → encode → parse round trips. The output follows the reference's
//! shapes (strings for `timestamp`/`start_time`/`end_time`, an integer `duration`); errors of
//! a `terminate` are written inside the call item.

use serde_json::{Map, Value, json};

use crate::event::{
    CallConnect, CallStatus, CallTerminate, Contact, Event, MessageFailed, PermissionReply,
    ReplyTo, WebhookErrorInfo, WebhookEvent,
};

impl WebhookEvent {
    /// This event as a complete webhook body (`object` / `entry` / `changes`), one change.
    pub fn to_envelope(&self) -> Value {
        let (field, value) = self.change_value();
        let mut entry = Map::new();
        if let Some(waba) = &self.context.waba_id {
            entry.insert("id".into(), json!(waba.as_str()));
        }
        entry.insert(
            "changes".into(),
            json!([{ "field": field, "value": value }]),
        );
        json!({ "object": "whatsapp_business_account", "entry": [entry] })
    }

    fn metadata(&self) -> Option<Value> {
        let ctx = &self.context;
        if ctx.phone_number_id.is_none() && ctx.display_phone_number.is_none() {
            return None;
        }
        let mut m = Map::new();
        if let Some(d) = &ctx.display_phone_number {
            m.insert("display_phone_number".into(), json!(d));
        }
        if let Some(p) = &ctx.phone_number_id {
            m.insert("phone_number_id".into(), json!(p.as_str()));
        }
        Some(Value::Object(m))
    }

    fn change_value(&self) -> (&'static str, Value) {
        let mut value = Map::new();
        let field = match &self.event {
            Event::Connect(_) | Event::Terminate(_) | Event::Status(_) => "calls",
            Event::PermissionReply(_) | Event::MessageFailed(_) => "messages",
            Event::Errors(e) if e.field == "messages" => "messages",
            Event::Errors(_) => "calls",
            Event::AccountSettingsUpdate(_) => "account_settings_update",
            Event::AccountUpdate(_) => "account_update",
        };
        if matches!(field, "calls" | "messages") {
            value.insert("messaging_product".into(), json!("whatsapp"));
            if let Some(m) = self.metadata() {
                value.insert("metadata".into(), m);
            }
        }
        let contact = |value: &mut Map<String, Value>, c: &Option<Contact>| {
            if let Some(c) = c {
                let mut entry = Map::new();
                if let Some(name) = &c.name {
                    entry.insert("profile".into(), json!({ "name": name }));
                }
                entry.insert("wa_id".into(), json!(c.wa_id.as_str()));
                value.insert("contacts".into(), json!([entry]));
            }
        };
        match &self.event {
            Event::Connect(c) => {
                contact(&mut value, &c.contact);
                value.insert("calls".into(), json!([connect(c)]));
            }
            Event::Terminate(t) => {
                contact(&mut value, &t.contact);
                value.insert("calls".into(), json!([terminate(t)]));
            }
            Event::Status(s) => {
                value.insert("statuses".into(), json!([status(s)]));
            }
            Event::PermissionReply(r) => {
                contact(&mut value, &r.contact);
                value.insert("messages".into(), json!([reply(r)]));
            }
            Event::MessageFailed(m) => {
                value.insert("statuses".into(), json!([failed(m)]));
            }
            Event::Errors(e) => {
                value.insert("errors".into(), errors(&e.errors));
            }
            Event::AccountSettingsUpdate(u) => {
                value.insert("messaging_product".into(), json!("whatsapp"));
                insert_opt(&mut value, "timestamp", u.timestamp.map(|t| t.to_string()));
                insert_opt(&mut value, "type", u.settings_type.clone());
                let mut pns = Map::new();
                insert_opt(
                    &mut pns,
                    "phone_number_id",
                    u.phone_number_id.as_ref().map(|p| p.as_str().to_owned()),
                );
                if let Some(calling) = &u.calling {
                    pns.insert(
                        "calling".into(),
                        serde_json::to_value(calling).unwrap_or(Value::Null),
                    );
                }
                value.insert("phone_number_settings".into(), Value::Object(pns));
            }
            Event::AccountUpdate(a) => {
                insert_opt(
                    &mut value,
                    "phone_number",
                    a.phone_number.as_ref().map(|p| p.as_str().to_owned()),
                );
                value.insert("event".into(), json!(a.kind.as_str()));
                if let Some(v) = &a.violation {
                    let mut vi = Map::new();
                    vi.insert("violation_type".into(), json!(v.violation_type));
                    insert_opt(&mut vi, "remediation", v.remediation.clone());
                    value.insert("violation_info".into(), Value::Object(vi));
                }
                if !a.restrictions.is_empty() {
                    let list: Vec<Value> = a
                        .restrictions
                        .iter()
                        .map(|r| {
                            let mut m = Map::new();
                            m.insert("restriction_type".into(), json!(r.restriction_type));
                            if let Some(e) = r.expiration {
                                m.insert("expiration".into(), json!(e.as_secs()));
                            }
                            insert_opt(&mut m, "remediation", r.remediation.clone());
                            Value::Object(m)
                        })
                        .collect();
                    value.insert("restriction_info".into(), Value::Array(list));
                }
            }
        }
        (field, Value::Object(value))
    }
}

fn insert_opt(map: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(v) = value {
        map.insert(key.into(), Value::String(v));
    }
}

fn connect(c: &CallConnect) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(c.call_id.as_str()));
    m.insert("from".into(), json!(c.from.as_str()));
    m.insert("to".into(), json!(c.to.as_str()));
    m.insert("event".into(), json!("connect"));
    m.insert("timestamp".into(), json!(c.timestamp.to_string()));
    m.insert("direction".into(), json!(c.direction.as_str()));
    insert_opt(&mut m, "deeplink_payload", c.deeplink_payload.clone());
    insert_opt(&mut m, "cta_payload", c.cta_payload.clone());
    insert_opt(
        &mut m,
        "biz_opaque_callback_data",
        c.biz_opaque_callback_data.clone(),
    );
    m.insert(
        "session".into(),
        serde_json::to_value(&c.session).unwrap_or(Value::Null),
    );
    Value::Object(m)
}

fn terminate(t: &CallTerminate) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(t.call_id.as_str()));
    insert_opt(
        &mut m,
        "from",
        t.from.as_ref().map(|w| w.as_str().to_owned()),
    );
    insert_opt(&mut m, "to", t.to.as_ref().map(|w| w.as_str().to_owned()));
    m.insert("event".into(), json!("terminate"));
    m.insert("timestamp".into(), json!(t.timestamp.to_string()));
    insert_opt(
        &mut m,
        "direction",
        t.direction.map(|d| d.as_str().to_owned()),
    );
    insert_opt(&mut m, "start_time", t.start_time.map(|s| s.to_string()));
    insert_opt(&mut m, "end_time", t.end_time.map(|s| s.to_string()));
    if let Some(d) = t.duration {
        m.insert("duration".into(), json!(d.as_secs()));
    }
    insert_opt(
        &mut m,
        "status",
        t.status.as_ref().map(|s| s.as_str().to_owned()),
    );
    insert_opt(
        &mut m,
        "biz_opaque_callback_data",
        t.biz_opaque_callback_data.clone(),
    );
    insert_opt(&mut m, "deeplink_payload", t.deeplink_payload.clone());
    insert_opt(&mut m, "cta_payload", t.cta_payload.clone());
    if !t.errors.is_empty() {
        m.insert("errors".into(), errors(&t.errors));
    }
    Value::Object(m)
}

fn status(s: &CallStatus) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(s.call_id.as_str()));
    m.insert("timestamp".into(), json!(s.timestamp.to_string()));
    m.insert("type".into(), json!("call"));
    m.insert("status".into(), json!(s.status.as_str()));
    insert_opt(
        &mut m,
        "recipient_id",
        s.recipient_id.as_ref().map(|w| w.as_str().to_owned()),
    );
    insert_opt(
        &mut m,
        "biz_opaque_callback_data",
        s.biz_opaque_callback_data.clone(),
    );
    if !s.errors.is_empty() {
        m.insert("errors".into(), errors(&s.errors));
    }
    Value::Object(m)
}

fn reply(r: &PermissionReply) -> Value {
    let mut cpr = Map::new();
    cpr.insert("response".into(), json!(r.response.as_str()));
    cpr.insert("is_permanent".into(), json!(r.is_permanent));
    insert_opt(
        &mut cpr,
        "expiration_timestamp",
        r.expiration.map(|e| e.to_string()),
    );
    insert_opt(
        &mut cpr,
        "response_source",
        r.response_source.as_ref().map(|s| s.as_str().to_owned()),
    );
    let mut m = Map::new();
    m.insert("from".into(), json!(r.from.as_str()));
    m.insert("id".into(), json!(r.message_id.as_str()));
    m.insert("timestamp".into(), json!(r.timestamp.to_string()));
    if let Some(reply_to) = &r.reply_to {
        let id = match reply_to {
            ReplyTo::Message(m) => m.as_str(),
            ReplyTo::Call(c) => c.as_str(),
        };
        m.insert(
            "context".into(),
            json!({ "from": r.from.as_str(), "id": id }),
        );
    }
    m.insert("type".into(), json!("interactive"));
    m.insert(
        "interactive".into(),
        json!({ "type": "call_permission_reply", "call_permission_reply": Value::Object(cpr) }),
    );
    Value::Object(m)
}

fn failed(f: &MessageFailed) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(f.message_id.as_str()));
    m.insert("status".into(), json!("failed"));
    m.insert("timestamp".into(), json!(f.timestamp.to_string()));
    insert_opt(
        &mut m,
        "recipient_id",
        f.recipient_id.as_ref().map(|w| w.as_str().to_owned()),
    );
    m.insert("errors".into(), errors(&f.errors));
    Value::Object(m)
}

fn errors(list: &[WebhookErrorInfo]) -> Value {
    Value::Array(
        list.iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("code".into(), json!(e.code.code()));
                insert_opt(&mut m, "title", e.title.clone());
                insert_opt(&mut m, "message", e.message.clone());
                insert_opt(&mut m, "href", e.href.clone());
                if let Some(d) = &e.details {
                    m.insert("error_data".into(), json!({ "details": d }));
                }
                Value::Object(m)
            })
            .collect(),
    )
}
