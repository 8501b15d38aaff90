//! Parse and serialize cost of a ~1.2 KB INVITE (whatsip's parser), with rsip 0.4
//! parsing the same bytes for comparison.
//!
//! `cargo bench -p whatsip-sip --bench parse -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use whatsip_sip::{ParseLimits, SipMessage};

/// A PBX-style INVITE with SDP, no compact forms or IPv6 so that rsip can parse it too.
fn invite() -> Vec<u8> {
    let sdp = "v=0\r\n\
o=- 3912345678 3912345678 IN IP4 203.0.113.10\r\n\
s=whatsip\r\n\
c=IN IP4 203.0.113.10\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 9 111 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";
    let head = format!(
        "INVITE sip:+15551234567@pbx.example.com:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---3bd4a5e2c1f0;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:whatsip@203.0.113.10:5060;transport=udp>\r\n\
To: <sip:+15551234567@pbx.example.com>\r\n\
From: \"WhatsApp +44 7700 900123\" <sip:+447700900123@gw.example.com>;tag=7f3a9c2e\r\n\
Call-ID: 8d4f2a6c91e34b7a9f0c1d2e3f4a5b6c@gw.example.com\r\n\
CSeq: 102 INVITE\r\n\
Record-Route: <sip:203.0.113.20;lr;ftag=7f3a9c2e>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: whatsip/0.1.0\r\n\
P-Asserted-Identity: <sip:+447700900123@gw.example.com>\r\n\
X-WA-Call-Id: wacid.HBgLMTU1NTEyMzQ1NjcVAgARGBQzQUE2RjQ1N0QzQjg0NjY5QjQ2RQA=\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n",
        sdp.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(sdp.as_bytes());
    raw
}

fn bench(c: &mut Criterion) {
    let raw = invite();
    let limits = ParseLimits::default();
    let parsed = SipMessage::parse(&raw, &limits).expect("bench INVITE parses");
    assert!(
        rsip::SipMessage::try_from(raw.as_slice()).is_ok(),
        "rsip parses the bench INVITE"
    );

    let mut g = c.benchmark_group(format!("invite_{}b", raw.len()));
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("whatsip_parse", |b| {
        b.iter(|| SipMessage::parse(black_box(&raw), &limits))
    });
    g.bench_function("whatsip_serialize", |b| {
        b.iter(|| black_box(&parsed).to_bytes())
    });
    g.bench_function("whatsip_parse_serialize", |b| {
        b.iter(|| {
            SipMessage::parse(black_box(&raw), &limits)
                .map(|m| m.to_bytes())
                .unwrap_or_default()
        })
    });
    g.bench_function("whatsip_parse_typed", |b| {
        b.iter(|| {
            let m = SipMessage::parse(black_box(&raw), &limits).ok()?;
            let h = m.headers();
            Some((
                h.top_via()?.branch()?,
                h.cseq()?,
                h.from()?.tag()?,
                h.call_id()?,
            ))
        })
    });
    g.bench_function("rsip_parse", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(raw.as_slice())))
    });
    g.finish();
}

// criterion_group! generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;

criterion_main!(benches);
