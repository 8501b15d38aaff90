//! Driver glue under tokio's paused clock: the engine arms the core's timers and wall time
//! follows the same clock, so payload timestamps are exact.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use whatsip_sim::core::{CallState, EndReason, UserCall};
use whatsip_sim::{PhoneNumberId, SimConfig, Simulator, WaId};

#[tokio::test(start_paused = true)]
async fn unaccepted_user_call_ends_after_the_45s_answer_timeout() {
    let mut cfg = SimConfig::default();
    cfg.core.timing.watchdog.enabled = false;
    let sim = Simulator::start(cfg).await.unwrap();
    let id = sim
        .user_calls(UserCall::new(
            WaId::parse("4915112345678").unwrap(),
            PhoneNumberId::parse("106540352242922").unwrap(),
        ))
        .await
        .unwrap();
    let end = sim
        .wait_for_call_end(&id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(end.state, CallState::Terminated);
    assert_eq!(end.end.unwrap().reason, EndReason::NotAnswered);
    // No webhook URL: webhooks are recorded, not sent.
    let hooks = sim
        .wait_for_webhook(Duration::from_secs(5), |w| w.labels == ["terminate"])
        .await
        .unwrap();
    let all = sim.webhooks();
    let ts = |body: &str| -> u64 {
        let v: Value = serde_json::from_str(body).unwrap();
        v["entry"][0]["changes"][0]["value"]["calls"][0]["timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(ts(&hooks.body) - ts(&all[0].body), 45);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn media_watchdog_fires_through_the_driver_without_business_media() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let pnid = PhoneNumberId::parse("106540352242922").unwrap();
    let id = sim
        .user_calls(UserCall::new(WaId::parse("4915112345678").unwrap(), pnid))
        .await
        .unwrap();
    let call = sim.call(&id).unwrap();
    assert_eq!(call.state, CallState::Offered);
    // The gateway stand-in accepts through the core directly via the Graph API.
    let answer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:a\r\na=ice-pwd:bbbbbbbbbbbbbbbbbbbbbbbb\r\na=fingerprint:sha-256 AA\r\na=setup:active\r\na=mid:audio\r\na=rtpmap:111 opus/48000/2\r\n";
    let body = serde_json::json!({ "messaging_product": "whatsapp", "call_id": id.as_str(), "action": "accept",
        "session": { "sdp_type": "answer", "sdp": answer } });
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/v23.0/106540352242922/calls", sim.base_url()))
        .bearer_auth("any")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let end = sim
        .wait_for_call_end(&id, Duration::from_secs(120))
        .await
        .unwrap();
    let end = end.end.unwrap();
    assert_eq!(
        (end.reason, end.error_code, end.duration_s),
        (EndReason::MediaTimeout, Some(138021), Some(20))
    );
    sim.shutdown().await;
}
