//! The HTTP front: Graph API (any path not under `/_sim`) and the control API under
//! `/_sim/` used by the CLI. Both listen on the same 127.0.0.1 socket.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::GraphResponse;
use crate::core::config::opt_secs;
use crate::core::{
    DtmfStep, GraphRequest, MetaOrder, PermissionGrant, PermissionReply, UserCall, UserProfile,
};
use crate::driver::SimHandle;
use crate::driver::deliver::{Faults, GraphFault};
use crate::driver::engine::Command;
use crate::error::GraphError;
use crate::error::SimError;
use crate::ids::{WaCallId, WaId};

/// Largest Graph request body accepted.
const MAX_BODY: usize = 1024 * 1024;

pub(crate) fn router(handle: SimHandle) -> Router {
    Router::new()
        .route("/_sim/calls", post(control_user_calls).get(control_calls))
        .route("/_sim/calls/{id}", get(control_call))
        .route("/_sim/calls/{id}/{action}", post(control_call_action))
        .route(
            "/_sim/permissions",
            post(control_set_permission).get(control_permission),
        )
        .route("/_sim/permission_replies", post(control_permission_reply))
        .route("/_sim/users", post(control_set_user))
        .route("/_sim/graph_requests", get(control_graph_requests))
        .route("/_sim/webhooks", get(control_webhooks))
        .route("/_sim/faults", put(control_set_faults).get(control_faults))
        .fallback(graph)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(handle)
}

async fn graph(
    State(h): State<SimHandle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let req = GraphRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        authorization,
        body: body.to_vec(),
    };
    let fault = graph_fault(&h, &req);
    let resp = match &fault {
        Some(GraphFault::Error { code }) => {
            let e = GraphError::new(*code, "injected by whatsip-sim fault rule");
            let resp = GraphResponse {
                status: e.http_status,
                body: e.to_body("whatsip-sim-fault"),
                error_code: Some(e.code),
                action: body_action(&req.body),
            };
            // (requests the engine handles are recorded by the engine)
            h.shared.recorder.record_graph(
                &req.method,
                &req.path,
                &req.query,
                req.authorization.as_deref(),
                &req.body,
                &resp,
            );
            resp
        }
        Some(GraphFault::NoResponse) => {
            let resp = GraphResponse {
                status: 0,
                body: Value::Null,
                error_code: None,
                action: body_action(&req.body),
            };
            h.shared.recorder.record_graph(
                &req.method,
                &req.path,
                &req.query,
                req.authorization.as_deref(),
                &req.body,
                &resp,
            );
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        _ => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if h.shared
                .cmd
                .send(Command::Graph(req.clone(), tx))
                .await
                .is_err()
            {
                return (StatusCode::SERVICE_UNAVAILABLE, "simulator stopped").into_response();
            }
            let Ok(resp) = rx.await else {
                return (StatusCode::SERVICE_UNAVAILABLE, "simulator stopped").into_response();
            };
            resp
        }
    };
    if let Some(GraphFault::Delay { delay }) = fault {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(&MetaOrder(&resp.body)).unwrap_or_default();
    let mut r = (
        status,
        [(
            http::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )],
        bytes,
    )
        .into_response();
    // Graph sends this header on every response; harmless and helps eyeballing captures.
    r.headers_mut().insert(
        "x-fb-trace-id",
        http::HeaderValue::from_static("whatsip-sim"),
    );
    r
}

fn graph_fault(h: &SimHandle, req: &GraphRequest) -> Option<GraphFault> {
    let mut faults = h.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
    if faults.graph.is_empty() {
        return None;
    }
    let endpoint = req
        .path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let action = body_action(&req.body);
    faults.take_graph_fault(endpoint, action.as_deref())
}

fn body_action(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("action")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn err(e: SimError) -> Response {
    let status = match e {
        SimError::UnknownCall(_) | SimError::UnknownNumber(_) => StatusCode::NOT_FOUND,
        SimError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        SimError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::CONFLICT,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}

fn bad(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": msg.to_string() })),
    )
        .into_response()
}

/// Body of `POST /_sim/calls`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserCallBody {
    from: String,
    /// Phone number id or display number.
    to: String,
    #[serde(default, rename = "hang_up_after_s", with = "opt_secs")]
    hang_up_after: Option<Duration>,
    #[serde(default, rename = "give_up_after_s", with = "opt_secs")]
    give_up_after: Option<Duration>,
    #[serde(default)]
    dtmf: Vec<DtmfStep>,
    #[serde(default)]
    deeplink_payload: Option<String>,
    #[serde(default)]
    cta_payload: Option<String>,
}

async fn control_user_calls(State(h): State<SimHandle>, body: Bytes) -> Response {
    let b: UserCallBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    let from = match WaId::normalize(&b.from) {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    let Some(to) = h.resolve_number(&b.to) else {
        return err(SimError::UnknownNumber(b.to));
    };
    let call = UserCall {
        hang_up_after: b.hang_up_after,
        give_up_after: b.give_up_after,
        dtmf: b.dtmf,
        deeplink_payload: b.deeplink_payload,
        cta_payload: b.cta_payload,
        ..UserCall::new(from, to)
    };
    match h.user_calls(call).await {
        Ok(id) => Json(json!({ "call_id": id })).into_response(),
        Err(e) => err(e),
    }
}

async fn control_calls(State(h): State<SimHandle>) -> Response {
    Json(h.calls()).into_response()
}

async fn control_call(State(h): State<SimHandle>, Path(id): Path<String>) -> Response {
    let Ok(id) = WaCallId::parse(&id) else {
        return bad("not a call id");
    };
    match h.call(&id) {
        Some(c) => Json(c).into_response(),
        None => err(SimError::UnknownCall(id.to_string())),
    }
}

#[derive(Deserialize, Default)]
struct ActionBody {
    #[serde(default)]
    digits: String,
}

async fn control_call_action(
    State(h): State<SimHandle>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(id) = WaCallId::parse(&id) else {
        return bad("not a call id");
    };
    let b: ActionBody = if body.is_empty() {
        ActionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return bad(e),
        }
    };
    let r = match action.as_str() {
        "hangup" => h.user_hangs_up(&id).await,
        "answer" => h.user_answers(&id).await,
        "reject" => h.user_rejects(&id).await,
        "dtmf" => h.user_presses(&id, &b.digits).await,
        "media" => h.business_media(&id).await,
        _ => return bad("action must be hangup, answer, reject, dtmf or media"),
    };
    match r {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionBody {
    phone_number_id: String,
    user: String,
    grant: PermissionGrant,
}

async fn control_set_permission(State(h): State<SimHandle>, body: Bytes) -> Response {
    let b: PermissionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    let (Some(p), Ok(u)) = (
        h.resolve_number(&b.phone_number_id),
        WaId::normalize(&b.user),
    ) else {
        return bad("unknown phone_number_id or bad user");
    };
    match h.set_permission(&p, &u, b.grant).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct PermissionQuery {
    phone_number_id: String,
    user: String,
}

async fn control_permission(
    State(h): State<SimHandle>,
    Query(q): Query<PermissionQuery>,
) -> Response {
    let (Some(p), Ok(u)) = (
        h.resolve_number(&q.phone_number_id),
        WaId::normalize(&q.user),
    ) else {
        return bad("unknown phone_number_id or bad user");
    };
    match h.permission(&p, &u).await {
        Ok(s) => Json(json!({ "permission": s })).into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    phone_number_id: String,
    user: String,
    reply: PermissionReply,
}

async fn control_permission_reply(State(h): State<SimHandle>, body: Bytes) -> Response {
    let b: ReplyBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    let (Some(p), Ok(u)) = (
        h.resolve_number(&b.phone_number_id),
        WaId::normalize(&b.user),
    ) else {
        return bad("unknown phone_number_id or bad user");
    };
    match h.user_replies_permission(&p, &u, b.reply).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => err(e),
    }
}

async fn control_set_user(State(h): State<SimHandle>, body: Bytes) -> Response {
    let p: UserProfile = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    match h.set_user(p).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => err(e),
    }
}

async fn control_graph_requests(State(h): State<SimHandle>) -> Response {
    Json(h.graph_requests()).into_response()
}

async fn control_webhooks(State(h): State<SimHandle>) -> Response {
    Json(h.webhooks()).into_response()
}

async fn control_set_faults(State(h): State<SimHandle>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            h.set_faults(f);
            Json(json!({ "ok": true })).into_response()
        }
        Err(e) => bad(e),
    }
}

async fn control_faults(State(h): State<SimHandle>) -> Response {
    Json::<Value>(serde_json::to_value(h.faults()).unwrap_or(Value::Null)).into_response()
}
