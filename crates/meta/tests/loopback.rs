//! The drivers over loopback HTTP against small local fakes: a client playing Meta towards
//! the webhook server, and a scripted Graph API (including one that never answers) towards
//! the Graph client. Every wait is bounded; no assertion depends on speed.

#![cfg(feature = "rt")]
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use whatsip_meta::graph::ApiVersion;
use whatsip_meta::rt::{
    Clock, GraphClient, GraphClientConfig, TlsIdentity, WebhookServer, WebhookServerConfig,
    WebhookStats,
};
use whatsip_meta::{
    AccessToken, AppSecret, Event, GraphError, MetaErrorCode, PhoneNumberId, VerifyToken, WaCallId,
    WaId, WebhookEvent, webhook_sign,
};

const SECRET: &str = "loopback-app-secret";
const WAIT: Duration = Duration::from_secs(20);

fn envelope(calls: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"calls","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15551441906","phone_number_id":"518638374672395"}},"calls":[{calls}]}}}}]}}]}}"#
    )
}

fn connect_json(id: &str, ts: u64) -> String {
    format!(
        r#"{{"id":"{id}","from":"14085551234","to":"15551441906","event":"connect","timestamp":"{ts}","direction":"USER_INITIATED","session":{{"sdp_type":"offer","sdp":"v=0\r\n"}}}}"#
    )
}

fn terminate_json(id: &str, ts: u64) -> String {
    format!(
        r#"{{"id":"{id}","from":"14085551234","to":"15551441906","event":"terminate","timestamp":"{ts}","status":"COMPLETED"}}"#
    )
}

/// A wall clock frozen at `wall`; monotonic time is real (only expiry uses it).
struct FixedWall(SystemTime);

impl Clock for FixedWall {
    #[allow(clippy::disallowed_methods)] // test clock: real monotonic time, fixed wall time
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        self.0
    }
}

fn wall_at(secs: u64) -> Arc<dyn Clock> {
    Arc::new(FixedWall(UNIX_EPOCH + Duration::from_secs(secs)))
}

async fn server(
    config: WebhookServerConfig,
    clock: Arc<dyn Clock>,
) -> (WebhookServer, mpsc::Receiver<WebhookEvent>, String) {
    let config = WebhookServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let (server, rx) = WebhookServer::bind_with_clock(
        config,
        AppSecret::new(SECRET),
        VerifyToken::new("verify-123"),
        clock,
    )
    .await
    .unwrap();
    let url = format!("http://{}/webhook", server.local_addr());
    (server, rx, url)
}

async fn post(client: &reqwest::Client, url: &str, body: &str, signature: Option<&str>) -> u16 {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = signature {
        req = req.header("X-Hub-Signature-256", sig);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn post_signed(client: &reqwest::Client, url: &str, body: &str) -> u16 {
    let sig = webhook_sign(body.as_bytes(), &AppSecret::new(SECRET));
    post(client, url, body, Some(&sig)).await
}

async fn next_event(rx: &mut mpsc::Receiver<WebhookEvent>) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("event within the bound")
        .expect("channel open")
        .event
}

fn call_id_of(e: &Event) -> &str {
    e.call_id().unwrap().as_str()
}

#[tokio::test]
async fn handshake_echoes_challenge_only_for_the_right_token() {
    let (_server, _rx, url) = server(WebhookServerConfig::default(), wall_at(1000)).await;
    let client = reqwest::Client::new();
    let ok = client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.challenge=1158863600&hub.verify_token=verify-123"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158863600");
    let bad = client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.challenge=1158863600&hub.verify_token=nope"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);
    assert!(!bad.text().await.unwrap().contains("1158863600"));
}

#[tokio::test]
async fn signed_post_is_answered_200_and_delivered() {
    let (server, mut rx, url) = server(WebhookServerConfig::default(), wall_at(1001)).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post_signed(&client, &url, &envelope(&connect_json("wacid.ONE", 1000))).await,
        200
    );
    let Event::Connect(c) = next_event(&mut rx).await else {
        panic!()
    };
    assert_eq!(c.call_id.as_str(), "wacid.ONE");
    assert_eq!(WebhookStats::get(&server.stats().posts_accepted), 1);
}

#[tokio::test]
async fn wrong_missing_and_malformed_signatures_get_401_and_nothing_is_delivered() {
    let (server, mut rx, url) = server(WebhookServerConfig::default(), wall_at(1001)).await;
    let client = reqwest::Client::new();
    let body = envelope(&connect_json("wacid.BAD", 1000));
    let wrong = webhook_sign(body.as_bytes(), &AppSecret::new("not-the-secret"));
    let other_body = webhook_sign(b"{}", &AppSecret::new(SECRET));
    for sig in [
        Some(wrong.as_str()),
        None,
        Some("sha256=zz"),
        Some("sha1=abc"),
        Some(other_body.as_str()),
    ] {
        assert_eq!(post(&client, &url, &body, sig).await, 401, "{sig:?}");
    }
    assert_eq!(WebhookStats::get(&server.stats().bad_signature), 5);
    // A good one after them is the only event.
    assert_eq!(
        post_signed(&client, &url, &envelope(&connect_json("wacid.GOOD", 1000))).await,
        200
    );
    assert_eq!(call_id_of(&next_event(&mut rx).await), "wacid.GOOD");
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn oversized_bodies_get_413_at_the_default_3mb_limit() {
    let (server, mut rx, url) = server(WebhookServerConfig::default(), wall_at(1001)).await;
    let client = reqwest::Client::new();
    // A signed body just over 3 MB: refused before the signature is even checked.
    let pad = " ".repeat(3 * 1024 * 1024);
    let big = format!("{}{pad}", envelope(&connect_json("wacid.BIG", 1000)));
    assert_eq!(post_signed(&client, &url, &big).await, 413);
    // Chunked (no Content-Length) oversized body: also refused.
    let status = raw_chunked_post(server.local_addr(), 4 * 1024 * 1024).await;
    assert!(
        matches!(status.as_deref(), Some("413") | None),
        "{status:?}"
    );
    assert!(WebhookStats::get(&server.stats().too_large) >= 1);
    // Just under the limit is fine.
    let fits = format!(
        "{}{}",
        envelope(&connect_json("wacid.FITS", 1000)),
        " ".repeat(3 * 1024 * 1024 - 600)
    );
    assert_eq!(post_signed(&client, &url, &fits).await, 200);
    assert_eq!(call_id_of(&next_event(&mut rx).await), "wacid.FITS");
}

/// Sends a chunked POST of `len` bytes by hand; returns the status code, or `None` when the
/// server closed the connection before answering (it may, once the limit is hit).
async fn raw_chunked_post(addr: SocketAddr, len: usize) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\nTransfer-Encoding: chunked\r\n\r\n";
    let io = async {
        stream.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..len / chunk.len() {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await?;
        }
        stream.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(WAIT, io).await;
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split_whitespace().nth(1).map(str::to_owned)
}

#[tokio::test]
async fn duplicates_and_terminate_before_connect_over_http() {
    let (server, mut rx, url) = server(WebhookServerConfig::default(), wall_at(1010)).await;
    let client = reqwest::Client::new();
    // Meta re-sends a connect (slow 200 elsewhere): delivered once.
    let dup = envelope(&connect_json("wacid.DUP", 1000));
    assert_eq!(post_signed(&client, &url, &dup).await, 200);
    assert_eq!(post_signed(&client, &url, &dup).await, 200);
    // The user hung up at once and the connect's retry lands after the terminate.
    assert_eq!(
        post_signed(
            &client,
            &url,
            &envelope(&terminate_json("wacid.LATE", 1005))
        )
        .await,
        200
    );
    assert_eq!(
        post_signed(&client, &url, &envelope(&connect_json("wacid.LATE", 1004))).await,
        200
    );
    // Both in one batch, terminate first: same outcome.
    let batch = format!(
        "{},{}",
        terminate_json("wacid.BATCH", 1006),
        connect_json("wacid.BATCH", 1005)
    );
    assert_eq!(post_signed(&client, &url, &envelope(&batch)).await, 200);
    // A sentinel: once it arrives, everything before it has been processed (FIFO).
    assert_eq!(
        post_signed(
            &client,
            &url,
            &envelope(&connect_json("wacid.SENTINEL", 1009))
        )
        .await,
        200
    );
    let mut seen = Vec::new();
    loop {
        let w = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        let e = &w.event;
        seen.push((e.name(), call_id_of(e).to_owned(), w.after_terminate));
        if call_id_of(e) == "wacid.SENTINEL" {
            break;
        }
        assert!(seen.len() < 10);
    }
    let names: Vec<(&str, &str, bool)> = seen
        .iter()
        .map(|(n, id, late)| (*n, id.as_str(), *late))
        .collect();
    // A connect after its terminate is passed on once, marked, for the record only.
    assert_eq!(
        names,
        [
            ("connect", "wacid.DUP", false),
            ("terminate", "wacid.LATE", false),
            ("connect", "wacid.LATE", true),
            ("terminate", "wacid.BATCH", false),
            ("connect", "wacid.BATCH", true),
            ("connect", "wacid.SENTINEL", false),
        ]
    );
    let stats = server.stats().snapshot();
    assert_eq!(
        (stats.duplicates, stats.already_ended, stats.fresh),
        (1, 2, 4)
    );
}

#[tokio::test]
async fn stale_connect_is_dropped_and_malformed_signed_body_is_counted() {
    // Wall clock 10 minutes after the connect's timestamp.
    let (server, mut rx, url) = server(WebhookServerConfig::default(), wall_at(1600)).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post_signed(&client, &url, &envelope(&connect_json("wacid.OLD", 1000))).await,
        200
    );
    // Signed but not JSON: still 200 (a retry would not fix it), counted, nothing delivered.
    assert_eq!(post_signed(&client, &url, "{not json").await, 200);
    assert_eq!(
        post_signed(&client, &url, &envelope(&terminate_json("wacid.OLD", 1001))).await,
        200
    );
    let e = next_event(&mut rx).await;
    assert_eq!((e.name(), call_id_of(&e)), ("terminate", "wacid.OLD"));
    assert_eq!(WebhookStats::get(&server.stats().stale), 1);
    assert_eq!(WebhookStats::get(&server.stats().malformed), 1);
}

#[tokio::test]
async fn full_queue_answers_503_so_meta_retries() {
    let config = WebhookServerConfig {
        queue_depth: 1,
        event_queue_depth: 1,
        ..WebhookServerConfig::default()
    };
    let (server, mut rx, url) = server(config, wall_at(1001)).await;
    let client = reqwest::Client::new();
    // Nobody reads events: the pipeline fills (1 in the event channel, 1 in processing,
    // 1 queued) and further POSTs are refused with 503 instead of being lost.
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(
            post_signed(
                &client,
                &url,
                &envelope(&connect_json(&format!("wacid.Q{i}"), 1000)),
            )
            .await,
        );
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses[0] == 200);
    let accepted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(WebhookStats::get(&server.stats().posts_accepted), accepted);
    // Everything answered 200 is delivered once the consumer reads.
    for _ in 0..accepted {
        next_event(&mut rx).await;
    }
}

#[tokio::test]
async fn tls_webhook_server() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let identity = TlsIdentity::from_pem(
        cert_pem.as_bytes(),
        ck.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    assert!(TlsIdentity::from_pem(b"", b"").is_err());
    let config = WebhookServerConfig {
        tls: Some(identity),
        ..WebhookServerConfig::default()
    };
    let (server, mut rx, _) = server(config, wall_at(1001)).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", server.local_addr())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/webhook", server.local_addr().port());
    assert_eq!(
        post_signed(&client, &url, &envelope(&connect_json("wacid.TLS", 1000))).await,
        200
    );
    assert_eq!(call_id_of(&next_event(&mut rx).await), "wacid.TLS");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .post(format!("http://{}/webhook", server.local_addr()))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status().as_u16() != 200);
}

// ------------------------------------------------------------------ Graph client

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    auth: Option<String>,
    body: String,
}

type Script = Arc<Mutex<VecDeque<(u16, String)>>>;

#[derive(Clone)]
struct Fake {
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn fake_graph(replies: Vec<(u16, &str)>) -> (String, Fake) {
    let fake = Fake {
        script: Arc::new(Mutex::new(
            replies
                .into_iter()
                .map(|(s, b)| (s, b.to_owned()))
                .collect(),
        )),
        seen: Arc::default(),
    };
    async fn handle(
        State(f): State<Fake>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        f.seen.lock().unwrap().push(Seen {
            method,
            uri: uri.to_string(),
            auth: headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let (status, body) = f
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((500, "{}".into()));
        (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
    }
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), fake)
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            held.push(stream);
        }
    });
    (format!("http://{addr}"), accepted)
}

fn client(base_url: &str, timeout: Duration, attempts: u32) -> GraphClient {
    let config = GraphClientConfig {
        base_url: base_url.to_owned(),
        api_version: ApiVersion::parse("v23.0").unwrap(),
        request_timeout: timeout,
        connect_timeout: Duration::from_secs(5),
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        proxy: None,
    };
    GraphClient::new(config, AccessToken::new("EAAG-test-token")).unwrap()
}

fn pnid() -> PhoneNumberId {
    PhoneNumberId::parse("106540352242922").unwrap()
}

const ERR_138006: &str = r#"{"error":{"message":"(#138006) No approved call permission","type":"OAuthException","code":138006,"error_data":{"details":"none"},"fbtrace_id":"Ab1"}}"#;

#[tokio::test]
async fn graph_calls_carry_token_path_and_body_and_map_errors() {
    let (base, fake) = fake_graph(vec![
        (
            200,
            r#"{"messaging_product":"whatsapp","calls":[{"id":"wacid.NEW"}]}"#,
        ),
        (200, r#"{"messaging_product":"whatsapp","success":true}"#),
        (401, ERR_138006),
    ])
    .await;
    let c = client(&base, Duration::from_secs(20), 3);
    let user = WaId::parse("14085551234").unwrap();
    let id = c
        .connect(
            &pnid(),
            &user,
            "v=0
",
            Some("ctx"),
        )
        .await
        .unwrap();
    assert_eq!(id.as_str(), "wacid.NEW");
    c.terminate(&pnid(), &id).await.unwrap();
    let err = c
        .connect(
            &pnid(),
            &user,
            "v=0
",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.meta_code(), Some(MetaErrorCode::NoCallPermission));
    assert_eq!(err.http_status(), Some(401));
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "a Meta error on connect is not retried");
    for s in &seen {
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.uri, "/v23.0/106540352242922/calls");
        assert_eq!(s.auth.as_deref(), Some("Bearer EAAG-test-token"));
    }
    let first: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(first["action"], "connect");
    assert_eq!(
        first["session"]["sdp"],
        "v=0
"
    );
    assert_eq!(first["biz_opaque_callback_data"], "ctx");
    let second: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(
        second,
        serde_json::json!({"messaging_product":"whatsapp","call_id":"wacid.NEW","action":"terminate"})
    );
}

#[tokio::test]
async fn idempotent_get_is_retried_on_5xx_and_429_but_connect_is_not() {
    let (base, fake) = fake_graph(vec![
        (503, "upstream"),
        (429, r#"{"error":{"message":"rate","code":613}}"#),
        (200, r#"{"messaging_product":"whatsapp","permission":{"status":"no_permission"},"actions":[]}"#),
        (500, r#"{"error":{"message":"conn","code":138004}}"#),
    ])
    .await;
    let c = client(&base, Duration::from_secs(20), 3);
    let user = WaId::parse("14085551234").unwrap();
    let p = c.call_permissions(&pnid(), &user).await.unwrap();
    assert_eq!(
        p.status,
        whatsip_meta::graph::PermissionStatus::NoPermission
    );
    assert_eq!(fake.seen.lock().unwrap().len(), 3);
    assert_eq!(
        fake.seen.lock().unwrap()[0].uri,
        "/v23.0/106540352242922/call_permissions?user_wa_id=14085551234"
    );
    let err = c
        .connect(
            &pnid(),
            &user,
            "v=0
",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.meta_code(), Some(MetaErrorCode::ConnectionError));
    assert_eq!(
        fake.seen.lock().unwrap().len(),
        4,
        "connect sent exactly once"
    );
}

#[tokio::test]
async fn silent_server_times_out_and_only_gets_retries_that_are_safe() {
    let (base, accepted) = silent_server().await;
    let c = client(&base, Duration::from_millis(300), 3);
    let call = WaCallId::parse("wacid.SILENT").unwrap();
    let err = tokio::time::timeout(
        WAIT,
        c.accept(
            &pnid(),
            &call,
            "v=0
",
            None,
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(err, GraphError::Timeout { timeout_ms: 300 }),
        "{err:?}"
    );
    assert_eq!(
        *accepted.lock().unwrap(),
        1,
        "accept may have reached Meta: never resent"
    );
    let err = tokio::time::timeout(WAIT, c.settings(&pnid(), false))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, GraphError::Timeout { .. }), "{err:?}");
    assert_eq!(
        *accepted.lock().unwrap(),
        4,
        "GET retried up to max_attempts"
    );
}

#[tokio::test]
async fn refused_connection_is_a_connect_error_safe_to_retry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = client(&format!("http://{addr}"), Duration::from_secs(5), 2);
    let err = c
        .reject(&pnid(), &WaCallId::parse("wacid.X").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Connect { .. }), "{err:?}");
    assert!(err.is_retry_safe(false));
}

#[tokio::test]
async fn token_and_secret_never_reach_the_logs() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (base, _fake) = fake_graph(vec![(200, r#"{"success":true}"#)]).await;
    let c = client(&base, Duration::from_secs(20), 1);
    c.terminate(&pnid(), &WaCallId::parse("wacid.LOG").unwrap())
        .await
        .unwrap();
    tracing::debug!(client = ?c, "client");
    let (_server, _rx, url) = server(WebhookServerConfig::default(), wall_at(1001)).await;
    let wrong = webhook_sign(b"{}", &AppSecret::new("x"));
    post(&reqwest::Client::new(), &url, "{}", Some(&wrong)).await;

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("whatsip::wire") && logs.contains("wacid.LOG"),
        "wire dump at trace: {logs}"
    );
    assert!(
        logs.contains("X-Hub-Signature-256 does not match"),
        "{logs}"
    );
    assert!(!logs.contains("EAAG-test-token"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.to_lowercase().contains("bearer"), "{logs}");
}

#[tokio::test]
async fn shutdown_stops_listening_and_closes_the_event_channel() {
    let (server, mut rx, url) = server(WebhookServerConfig::default(), wall_at(1001)).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post_signed(
            &client,
            &url,
            &envelope(&connect_json("wacid.BEFORE", 1000))
        )
        .await,
        200
    );
    assert_eq!(call_id_of(&next_event(&mut rx).await), "wacid.BEFORE");
    tokio::time::timeout(WAIT, server.shutdown()).await.unwrap();
    assert!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .is_none()
    );
    let fresh = reqwest::Client::new();
    assert!(fresh.post(&url).body("{}").send().await.is_err());
}

#[tokio::test]
async fn rotated_access_token_reaches_every_clone_of_the_client() {
    let ok = r#"{"messaging_product":"whatsapp","success":true}"#;
    let (base, fake) = fake_graph(vec![(200, ok), (200, ok), (200, ok)]).await;
    let c = client(&base, Duration::from_secs(20), 1);
    let live_call = c.clone(); // a call that started before the reload
    let id = WaCallId::parse("wacid.ROT").unwrap();
    c.terminate(&pnid(), &id).await.unwrap();
    c.set_access_token(AccessToken::new("EAAG-rotated"));
    live_call.terminate(&pnid(), &id).await.unwrap();
    c.terminate(&pnid(), &id).await.unwrap();
    let auth: Vec<_> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.auth.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        auth,
        [
            "Bearer EAAG-test-token",
            "Bearer EAAG-rotated",
            "Bearer EAAG-rotated"
        ]
    );
}

#[tokio::test]
async fn set_credentials_swaps_the_app_secret_and_verify_token() {
    let (server, mut rx, url) = server(WebhookServerConfig::default(), wall_at(1001)).await;
    let client = reqwest::Client::new();
    let body = envelope(&connect_json("wacid.OLD", 1000));
    assert_eq!(post_signed(&client, &url, &body).await, 200, "old secret");
    let _ = next_event(&mut rx).await;
    server.set_credentials(AppSecret::new("new-secret"), VerifyToken::new("verify-456"));
    let body = envelope(&connect_json("wacid.NEW", 1000));
    assert_eq!(
        post_signed(&client, &url, &body).await,
        401,
        "a body signed with the old secret is refused after the swap"
    );
    let sig = webhook_sign(body.as_bytes(), &AppSecret::new("new-secret"));
    assert_eq!(post(&client, &url, &body, Some(&sig)).await, 200);
    let Event::Connect(c) = next_event(&mut rx).await else {
        panic!("connect expected")
    };
    assert_eq!(c.call_id.as_str(), "wacid.NEW");
    let handshake =
        |token: &str| format!("{url}?hub.mode=subscribe&hub.challenge=42&hub.verify_token={token}");
    let old = client.get(handshake("verify-123")).send().await.unwrap();
    assert_eq!(old.status().as_u16(), 403);
    let new = client.get(handshake("verify-456")).send().await.unwrap();
    assert_eq!(new.status().as_u16(), 200);
}
