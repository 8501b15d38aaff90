//! Any bytes: the parser, the stream framer and the 400 builder must not panic, and a
//! message that parses must print to something that parses back and prints the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whatsip_sip::{ParseLimits, SipMessage, error_response, stream_frame};

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits::default();
    let _ = stream_frame(data, &limits);
    match SipMessage::parse(data, &limits) {
        Ok(m) => {
            let printed = m.to_bytes();
            let again = SipMessage::parse(&printed, &limits).expect("printed message parses");
            assert_eq!(again.to_bytes(), printed, "print is idempotent");
            // typed accessors on a parsed message never panic either
            let h = m.headers();
            let _ = (h.vias(), h.from(), h.to(), h.cseq(), h.contacts(), h.routes());
            let _ = (h.session_expires(), h.min_se(), h.reasons(), h.content_type());
        }
        Err(e) => {
            let _ = error_response(data, &e);
        }
    }
});
