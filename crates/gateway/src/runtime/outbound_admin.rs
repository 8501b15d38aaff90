//! Admin routes for call permissions (issue 6): show what whatsip knows about a user's
//! permission and counters, and send a `call_permission_request` by hand (through the
//! same 1/24 h, 2/7 d limits the automatic requests respect).
//!
//! - `GET  /permissions/{business}/{user}`: the cached permission, consecutive unanswered
//!   calls and whether a request may be sent now;
//! - `POST /permissions/{business}/{user}/request`: sends the request (`409` with the
//!   reason when a limit forbids it).
//!
//! Numbers are E.164, with or without `+`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::{info, warn};
use whatsip_meta::WaId;
use whatsip_meta::rt::GraphSide;

use super::call::Shared;
use super::clock::SystemClock;
use crate::config::Config;
use crate::permission::{Permission, PermissionTracker};
use crate::types::E164;

/// What a request sees: the config and Graph sides as of that request (a reload
/// applies to the next one).
struct PermState {
    config: Arc<Config>,
    tracker: Arc<Mutex<PermissionTracker>>,
    sides: Arc<HashMap<String, GraphSide>>,
}

impl PermState {
    fn now(shared: &Shared) -> Self {
        Self {
            config: shared.live(),
            tracker: shared.permissions.clone(),
            sides: shared.graph_sides(),
        }
    }
}

/// The permission routes, to merge into the admin server's router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/permissions/{business}/{user}", get(show))
        .route("/permissions/{business}/{user}/request", post(request))
        .with_state(shared)
}

fn number(s: &str) -> Option<E164> {
    let s = s.trim();
    if s.starts_with('+') {
        E164::parse(s).ok()
    } else {
        E164::parse(&format!("+{s}")).ok()
    }
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "error": text }))).into_response()
}

fn lock(t: &Mutex<PermissionTracker>) -> std::sync::MutexGuard<'_, PermissionTracker> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn permission_json(p: Permission) -> serde_json::Value {
    match p {
        Permission::Unknown => json!({ "status": "unknown" }),
        Permission::None => json!({ "status": "no_permission" }),
        Permission::Temporary { expires } => {
            json!({ "status": "temporary", "expires": expires.to_string() })
        }
        Permission::Permanent => json!({ "status": "permanent" }),
    }
}

/// Resolves the path numbers to a configured business and a user.
fn resolve(state: &PermState, business: &str, user: &str) -> Result<(E164, E164), Box<Response>> {
    let business = number(business)
        .filter(|b| state.config.business_by_number(b).is_some())
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                "business number not configured",
            ))
        })?;
    let user = number(user)
        .ok_or_else(|| Box::new(error(StatusCode::BAD_REQUEST, "user is not E.164")))?;
    Ok((business, user))
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Path((business, user)): Path<(String, String)>,
) -> Response {
    let state = PermState::now(&shared);
    let (business, user) = match resolve(&state, &business, &user) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let now = SystemClock::timestamp();
    let mut t = lock(&state.tracker);
    let permission = t.permission(&business, &user, now);
    let may_request = t.may_request(&business, &user, now);
    let body = json!({
        "business": business.as_str(),
        "user": user.as_str(),
        "permission": permission_json(permission),
        "consecutive_unanswered": t.consecutive_unanswered(&business, &user),
        "may_request": may_request.is_ok(),
        "request_refused_because": may_request.err().map(|e| e.to_string()),
    });
    axum::Json(body).into_response()
}

async fn request(
    State(shared): State<Arc<Shared>>,
    Path((business, user)): Path<(String, String)>,
) -> Response {
    let state = PermState::now(&shared);
    let (business, user) = match resolve(&state, &business, &user) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let now = SystemClock::timestamp();
    if let Err(why) = lock(&state.tracker).may_request(&business, &user, now) {
        return error(StatusCode::CONFLICT, &why.to_string());
    }
    let side = state
        .config
        .business_by_number(&business)
        .and_then(|b| state.sides.get(b.phone_number_id.as_str()));
    let (Some(side), Ok(wa)) = (side, WaId::parse(user.digits())) else {
        return error(StatusCode::NOT_FOUND, "business number has no graph side");
    };
    let text = state.config.outbound.permission_request_text.clone();
    let started = SystemClock::now();
    let sent = side
        .client()
        .send_call_permission_request(side.phone_number_id(), &wa, text.as_deref())
        .await;
    super::ops_admin::graph_request_done(
        &shared,
        "call_permission_request",
        started.elapsed(),
        sent.as_ref()
            .err()
            .map(|e| e as &(dyn std::error::Error + 'static)),
    );
    match sent {
        Ok(sent) => {
            info!("call permission request sent by hand (admin)");
            lock(&state.tracker).record_request(&business, &user, now);
            axum::Json(json!({ "sent": true, "message": format!("{sent:?}") })).into_response()
        }
        Err(e) => {
            warn!(error = %e, "call permission request failed");
            error(StatusCode::BAD_GATEWAY, &e.to_string())
        }
    }
}
