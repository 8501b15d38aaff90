//! The Graph API HTTP client (reqwest + rustls).
//!
//! Requests and replies are built and parsed by [`crate::graph`]; this driver adds the bearer
//! token, timeouts and retries. It retries only when [`GraphError::is_retry_safe`] says so:
//! idempotent GETs (and settings POSTs) after timeouts, 5xx or 429; any request whose
//! connection failed before it was sent. `connect`, `accept`, `pre_accept`, `reject`,
//! `terminate` and message sends are never retried after they may have reached Meta: a
//! second `connect` could ring the user twice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, trace, warn};

use crate::graph::{
    ApiVersion, CallAction, CallPermissions, CallingSettings, GraphError, GraphRequest, HttpMethod,
    MessageSent, PhoneSettings, call_action_request, call_permission_request_message,
    call_permissions_request, parse_call_permissions_reply, parse_connect_reply, parse_error_reply,
    parse_message_reply, parse_settings_reply, parse_success_reply, settings_request,
    update_settings_request,
};
use crate::id::{PhoneNumberId, WaCallId, WaId};
use crate::secret::AccessToken;
use crate::side::WhatsAppSide;

/// Graph client settings; `Default` is the production value.
#[derive(Debug, Clone)]
pub struct GraphClientConfig {
    /// Scheme and host, no version (default `https://graph.facebook.com`; point it at the
    /// simulator in tests, e.g. `http://127.0.0.1:9000`).
    pub base_url: String,
    /// API version (default `v23.0`).
    pub api_version: ApiVersion,
    /// Whole-request timeout per attempt (default 15 s).
    pub request_timeout: Duration,
    /// TCP/TLS connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Attempts including the first (default 3).
    pub max_attempts: u32,
    /// Backoff before the second attempt, doubling after (default 250 ms).
    pub initial_backoff: Duration,
    /// Backoff cap (default 4 s).
    pub max_backoff: Duration,
    /// HTTP(S) proxy URL for egress, e.g. `http://proxy:3128` (default none). Proxy
    /// environment variables are deliberately not read: only the gateway reads the
    /// environment, and it passes the value here.
    pub proxy: Option<String>,
}

impl Default for GraphClientConfig {
    fn default() -> Self {
        Self {
            base_url: "https://graph.facebook.com".into(),
            api_version: ApiVersion::v23(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            proxy: None,
        }
    }
}

/// A successful (2xx) raw reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphReply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

/// Graph API client. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    config: Arc<GraphClientConfig>,
    /// Shared by every clone, so a rotated token reaches live calls' later requests.
    token: Arc<std::sync::RwLock<AccessToken>>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("config", &self.config)
            .field("token", &self.token)
            .finish()
    }
}

impl GraphClient {
    /// Builds a client.
    pub fn new(config: GraphClientConfig, token: AccessToken) -> Result<Self, GraphError> {
        if !(config.base_url.starts_with("https://") || config.base_url.starts_with("http://")) {
            return Err(GraphError::InvalidRequest {
                reason: "base_url must start with http:// or https://".into(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("whatsip/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(proxy) = &config.proxy {
            let proxy = reqwest::Proxy::all(proxy).map_err(|e| GraphError::InvalidRequest {
                reason: format!("invalid proxy url: {}", e.without_url()),
            })?;
            builder = builder.proxy(proxy);
        }
        let http = builder.build().map_err(|e| GraphError::InvalidRequest {
            reason: e.without_url().to_string(),
        })?;
        Ok(Self {
            http,
            config: Arc::new(config),
            token: Arc::new(std::sync::RwLock::new(token)),
        })
    }

    /// Replaces the access token for every clone of this client (config reload); requests
    /// already on the wire finish with the old one.
    pub fn set_access_token(&self, token: AccessToken) {
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    fn bearer(&self) -> String {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .expose()
            .to_owned()
    }

    /// The settings in use.
    pub fn config(&self) -> &GraphClientConfig {
        &self.config
    }

    /// Sends `req`, retrying while it is safe. A non-2xx reply becomes [`GraphError`].
    pub async fn send(&self, req: &GraphRequest) -> Result<GraphReply, GraphError> {
        let attempts = self.config.max_attempts.max(1);
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 1;
        loop {
            let result = self.send_once(req).await;
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(err) => err,
            };
            if attempt >= attempts || !err.is_retry_safe(req.idempotent) {
                debug!(request = req.name, attempt, error = %err, "graph request failed");
                return Err(err);
            }
            warn!(request = req.name, attempt, error = %err, backoff_ms = backoff.as_millis() as u64, "graph request failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
            attempt += 1;
        }
    }

    async fn send_once(&self, req: &GraphRequest) -> Result<GraphReply, GraphError> {
        let url = req.url(&self.config.base_url, &self.config.api_version);
        let builder = match req.method {
            HttpMethod::Get => self.http.get(&url),
            HttpMethod::Post => self.http.post(&url),
        };
        let mut builder = builder.bearer_auth(self.bearer());
        if let Some(body) = &req.body {
            let bytes = serde_json::to_vec(body).map_err(|e| GraphError::InvalidRequest {
                reason: e.to_string(),
            })?;
            trace!(target: "whatsip::wire", method = ?req.method, %url, body = %String::from_utf8_lossy(&bytes), "graph request");
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        } else {
            trace!(target: "whatsip::wire", method = ?req.method, %url, "graph request");
        }
        let response = builder.send().await.map_err(|e| self.map_error(e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| self.map_error(e))?;
        trace!(target: "whatsip::wire", status, body = %String::from_utf8_lossy(&body), "graph reply");
        if (200..300).contains(&status) {
            Ok(GraphReply { status, body })
        } else {
            Err(parse_error_reply(status, &body))
        }
    }

    fn map_error(&self, e: reqwest::Error) -> GraphError {
        // Connect errors (including connect timeouts) happen before any byte of the request
        // is written, so the request was not executed.
        if e.is_connect() {
            GraphError::Connect {
                reason: error_chain(&e.without_url()),
            }
        } else if e.is_timeout() {
            GraphError::Timeout {
                timeout_ms: self.config.request_timeout.as_millis() as u64,
            }
        } else if e.is_builder() {
            GraphError::InvalidRequest {
                reason: e.without_url().to_string(),
            }
        } else {
            GraphError::Transport {
                reason: error_chain(&e.without_url()),
            }
        }
    }

    /// `POST /{id}/calls` for any action. `connect` returns the new call id, the others `None`.
    pub async fn call_action(
        &self,
        phone_number_id: &PhoneNumberId,
        action: &CallAction,
    ) -> Result<Option<WaCallId>, GraphError> {
        let req = call_action_request(phone_number_id, action)?;
        let reply = self.send(&req).await?;
        match action {
            CallAction::Connect { .. } => parse_connect_reply(reply.status, &reply.body).map(Some),
            _ => parse_success_reply(reply.status, &reply.body).map(|()| None),
        }
    }

    /// Business-initiated call; returns the call id (the SDP answer comes by webhook).
    pub async fn connect(
        &self,
        phone_number_id: &PhoneNumberId,
        to: &WaId,
        offer_sdp: &str,
        biz_opaque_callback_data: Option<&str>,
    ) -> Result<WaCallId, GraphError> {
        let action = CallAction::Connect {
            to: to.clone(),
            offer_sdp: offer_sdp.to_owned(),
            biz_opaque_callback_data: biz_opaque_callback_data.map(str::to_owned),
        };
        self.call_action(phone_number_id, &action)
            .await?
            .ok_or_else(|| GraphError::InvalidReply {
                reason: "connect reply without a call id".into(),
            })
    }

    /// `pre_accept` with the SDP answer.
    pub async fn pre_accept(
        &self,
        phone_number_id: &PhoneNumberId,
        call_id: &WaCallId,
        answer_sdp: &str,
    ) -> Result<(), GraphError> {
        let action = CallAction::PreAccept {
            call_id: call_id.clone(),
            answer_sdp: answer_sdp.to_owned(),
        };
        self.call_action(phone_number_id, &action).await.map(drop)
    }

    /// `accept` with the same SDP answer as `pre_accept`.
    pub async fn accept(
        &self,
        phone_number_id: &PhoneNumberId,
        call_id: &WaCallId,
        answer_sdp: &str,
        biz_opaque_callback_data: Option<&str>,
    ) -> Result<(), GraphError> {
        let action = CallAction::Accept {
            call_id: call_id.clone(),
            answer_sdp: answer_sdp.to_owned(),
            biz_opaque_callback_data: biz_opaque_callback_data.map(str::to_owned),
        };
        self.call_action(phone_number_id, &action).await.map(drop)
    }

    /// `reject`.
    pub async fn reject(
        &self,
        phone_number_id: &PhoneNumberId,
        call_id: &WaCallId,
    ) -> Result<(), GraphError> {
        self.call_action(
            phone_number_id,
            &CallAction::Reject {
                call_id: call_id.clone(),
            },
        )
        .await
        .map(drop)
    }

    /// `terminate`.
    pub async fn terminate(
        &self,
        phone_number_id: &PhoneNumberId,
        call_id: &WaCallId,
    ) -> Result<(), GraphError> {
        self.call_action(
            phone_number_id,
            &CallAction::Terminate {
                call_id: call_id.clone(),
            },
        )
        .await
        .map(drop)
    }

    /// `GET /{id}/call_permissions?user_wa_id=`.
    pub async fn call_permissions(
        &self,
        phone_number_id: &PhoneNumberId,
        user: &WaId,
    ) -> Result<CallPermissions, GraphError> {
        let reply = self
            .send(&call_permissions_request(phone_number_id, user))
            .await?;
        parse_call_permissions_reply(reply.status, &reply.body)
    }

    /// Sends the free-form interactive `call_permission_request` message.
    pub async fn send_call_permission_request(
        &self,
        phone_number_id: &PhoneNumberId,
        to: &WaId,
        body_text: Option<&str>,
    ) -> Result<MessageSent, GraphError> {
        let reply = self
            .send(&call_permission_request_message(
                phone_number_id,
                to,
                body_text,
            ))
            .await?;
        parse_message_reply(reply.status, &reply.body)
    }

    /// `GET /{id}/settings`.
    pub async fn settings(
        &self,
        phone_number_id: &PhoneNumberId,
        include_sip_credentials: bool,
    ) -> Result<PhoneSettings, GraphError> {
        let reply = self
            .send(&settings_request(phone_number_id, include_sip_credentials))
            .await?;
        parse_settings_reply(reply.status, &reply.body)
    }

    /// `POST /{id}/settings`.
    pub async fn update_settings(
        &self,
        phone_number_id: &PhoneNumberId,
        calling: &CallingSettings,
    ) -> Result<(), GraphError> {
        let reply = self
            .send(&update_settings_request(phone_number_id, calling)?)
            .await?;
        parse_success_reply(reply.status, &reply.body)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    crate::id::cut(&text, 256).to_owned()
}

/// [`WhatsAppSide`] over the Graph API for one business number.
#[derive(Debug, Clone)]
pub struct GraphSide {
    client: GraphClient,
    phone_number_id: PhoneNumberId,
}

impl GraphSide {
    /// The WhatsApp side of `phone_number_id` through `client`.
    pub fn new(client: GraphClient, phone_number_id: PhoneNumberId) -> Self {
        Self {
            client,
            phone_number_id,
        }
    }

    /// The business number.
    pub fn phone_number_id(&self) -> &PhoneNumberId {
        &self.phone_number_id
    }

    /// The client, for permission and settings calls.
    pub fn client(&self) -> &GraphClient {
        &self.client
    }
}

impl WhatsAppSide for GraphSide {
    type Error = GraphError;

    async fn pre_accept(&self, call_id: &WaCallId, answer_sdp: &str) -> Result<(), GraphError> {
        self.client
            .pre_accept(&self.phone_number_id, call_id, answer_sdp)
            .await
    }

    async fn accept(
        &self,
        call_id: &WaCallId,
        answer_sdp: &str,
        biz_opaque_callback_data: Option<&str>,
    ) -> Result<(), GraphError> {
        self.client
            .accept(
                &self.phone_number_id,
                call_id,
                answer_sdp,
                biz_opaque_callback_data,
            )
            .await
    }

    async fn reject(&self, call_id: &WaCallId) -> Result<(), GraphError> {
        self.client.reject(&self.phone_number_id, call_id).await
    }

    async fn terminate(&self, call_id: &WaCallId) -> Result<(), GraphError> {
        self.client.terminate(&self.phone_number_id, call_id).await
    }

    async fn connect(
        &self,
        to: &WaId,
        offer_sdp: &str,
        biz_opaque_callback_data: Option<&str>,
    ) -> Result<WaCallId, GraphError> {
        self.client
            .connect(
                &self.phone_number_id,
                to,
                offer_sdp,
                biz_opaque_callback_data,
            )
            .await
    }
}
