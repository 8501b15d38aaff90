//! Graph replies: arbitrary bodies and statuses must map to a reply or a GraphError.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whatsip_meta::graph;

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else { return };
    let status = [200u16, 400, 401, 429, 500, 502][usize::from(s) % 6];
    let _ = graph::parse_success_reply(status, body);
    let _ = graph::parse_connect_reply(status, body);
    let _ = graph::parse_call_permissions_reply(status, body);
    let _ = graph::parse_message_reply(status, body);
    let _ = graph::parse_settings_reply(status, body);
    let _ = graph::parse_error_reply(status, body).to_string();
});
