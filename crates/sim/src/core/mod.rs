//! The sans-IO model of Meta's side (reference §9): Graph API semantics, call machines,
//! permissions and limits. No sockets, no clock: every input carries `now` (`Instant`, for
//! timers) and `wall` (`SystemTime`, for payload timestamps and permission expiry).
//!
//! User-initiated call (`UserCallState`), reference §1.3, §2.1, §9:
//!
//! ```text
//!  user_calls ──► Offered ──pre_accept──► PreAccepted ──accept (same SDP)──► Active
//!                   │  └──────────────accept──────────────────────────────────┘ │
//!                   ├─ reject / answer timeout / user hangs up ─► Terminated    │
//!                   │     (COMPLETED, no start/end/duration)                     │
//!                   └──────────────────────────────────────────── terminate / user hangs up:
//!                                                                 COMPLETED + start/end/duration
//!                                                                 media watchdog: FAILED + 138021
//! ```
//!
//! Business-initiated call (`BusinessCallState`), reference §1.4, §1.5, §2.2, §9:
//!
//! ```text
//!  POST connect ─checks─► AwaitingAnswer ─peer answer─► Ringing ─user answers─► Active
//!     (138000, 138013, 138006, 138012,     connect webhook + RINGING     ACCEPTED
//!      138003, 138002, 138005 in order)                │
//!                         user declines: REJECTED + terminate; ring timeout: terminate
//!                         (both count toward nudge at 2 / auto-revoke at 4 misses)
//! ```
//!
//! Drive loop: after each `handle_*`/command, drain [`MetaCore::poll_event`] until `None`,
//! then arm one timer at [`MetaCore::poll_timeout`] and call [`MetaCore::handle_timeout`].

pub(crate) mod config;
mod payload;
mod settings;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::debug;

use crate::error::{GraphError, SimError};
use crate::ids::{PhoneNumberId, WaCallId, WaId, Wamid, mint_fbtrace};
use crate::sdp::{self, KeyExchange, SdpRole};

pub use config::{
    BusinessCallBehaviour, BusinessNumber, CallTiming, CoreConfig, DtmfStep, Limits, MediaWatchdog,
    PermissionRequestBehaviour, UserBehaviour, UserProfile,
};
pub use payload::{MetaOrder, Webhook, envelope};

use payload::{NumberMeta, PermissionReplyPayload, epoch_secs};
use timers::{CallTimer, TimerKey, Timers};

const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_BIZ_OPAQUE: usize = 512;

/// Output of the core for its driver.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CoreEvent {
    /// Deliver this change to the business's webhook URL.
    Webhook(Webhook),
    /// Business-initiated: ask the user's media peer to answer `offer`, then call
    /// [`MetaCore::handle_peer_answer`].
    PeerAnswerOffer {
        /// Call.
        call_id: WaCallId,
        /// Business SDP offer.
        offer: String,
    },
    /// User-initiated: hand the business's answer to the media peer.
    PeerApplyAnswer {
        /// Call.
        call_id: WaCallId,
        /// Business SDP answer.
        answer: String,
    },
    /// The call is answered: the peer starts media.
    PeerStartMedia {
        /// Call.
        call_id: WaCallId,
    },
    /// The scripted user presses digits.
    PeerSendDtmf {
        /// Call.
        call_id: WaCallId,
        /// Digits.
        digits: String,
    },
    /// The call ended: stop and drop the peer.
    PeerStop {
        /// Call.
        call_id: WaCallId,
    },
    /// A call changed state (snapshot after the change).
    CallChanged(CallInfo),
    /// The user got Meta's nudge after consecutive missed business calls (§3.6).
    Nudge {
        /// Business number.
        phone_number_id: PhoneNumberId,
        /// User.
        user: WaId,
    },
}

/// A Graph API request as received (method, path, query, `Authorization`, raw body).
#[derive(Clone, Debug)]
pub struct GraphRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path, e.g. `/v23.0/106540352242922/calls`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// `Authorization` header value.
    pub authorization: Option<String>,
    /// Raw body.
    pub body: Vec<u8>,
}

/// The core's answer to a Graph request.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Meta error code when `status != 200`.
    pub error_code: Option<u32>,
    /// `action` of a `/calls` request, `type` of a `/messages` request, if parseable.
    pub action: Option<String>,
}

/// Who placed the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    /// The WhatsApp user called the business.
    UserInitiated,
    /// The business called the user.
    BusinessInitiated,
}

/// Observable call state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallState {
    /// User-initiated, `connect` sent, waiting for the business.
    Offered,
    /// User-initiated, `pre_accept` received.
    PreAccepted,
    /// Business-initiated, waiting for the user's phone to produce the SDP answer.
    AwaitingAnswer,
    /// Business-initiated, the user's phone rings.
    Ringing,
    /// Answered.
    Active,
    /// Ended; see [`CallInfo::end`].
    Terminated,
}

/// `terminate` webhook `status` (§1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TerminateStatus {
    /// Normal end, including unanswered and rejected calls.
    Completed,
    /// Failure with `errors[]`.
    Failed,
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// The business sent `reject`.
    BusinessRejected,
    /// The business sent `terminate`.
    BusinessTerminated,
    /// The user hung up.
    UserHungUp,
    /// The user declined a business call.
    UserRejected,
    /// User-initiated: the business did not accept within the answer timeout.
    NotAnswered,
    /// Business-initiated: the user did not pick up before the ring timeout.
    NoAnswer,
    /// A media watchdog fired (138021).
    MediaTimeout,
    /// The user's media peer failed (138019).
    PeerFailed,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallEnd {
    /// `terminate` status.
    pub status: TerminateStatus,
    /// Reason.
    pub reason: EndReason,
    /// `duration` if the call was picked up.
    pub duration_s: Option<u64>,
    /// `errors[0].code` if any.
    pub error_code: Option<u32>,
}

/// A snapshot of one call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallInfo {
    /// Call id.
    pub id: WaCallId,
    /// Direction.
    pub direction: Direction,
    /// Business number.
    pub phone_number_id: PhoneNumberId,
    /// The WhatsApp user.
    pub user: WaId,
    /// State.
    pub state: CallState,
    /// `biz_opaque_callback_data` from `connect` or `accept`.
    pub biz_opaque_callback_data: Option<String>,
    /// Business SDP (offer for business-initiated, answer for user-initiated).
    pub business_sdp: Option<String>,
    /// Meta-side SDP (offer for user-initiated, answer for business-initiated).
    pub meta_sdp: Option<String>,
    /// Epoch seconds the call was picked up.
    pub start_time: Option<u64>,
    /// Set once terminated.
    pub end: Option<CallEnd>,
}

/// Options of a user-initiated call.
#[derive(Clone, Debug)]
pub struct UserCall {
    /// Caller.
    pub from: WaId,
    /// Business number called.
    pub to: PhoneNumberId,
    /// Hang up this long after the business accepts.
    pub hang_up_after: Option<Duration>,
    /// Hang up if not accepted within this time (before Meta's answer timeout).
    pub give_up_after: Option<Duration>,
    /// Digits pressed after the business accepts.
    pub dtmf: Vec<DtmfStep>,
    /// `deeplink_payload` (call from a `wa.me/call` link, §1.3).
    pub deeplink_payload: Option<String>,
    /// `cta_payload` (call from a voice-call button, §7.6).
    pub cta_payload: Option<String>,
}

impl UserCall {
    /// A plain call from `from` to `to`, no script.
    pub fn new(from: WaId, to: PhoneNumberId) -> Self {
        Self {
            from,
            to,
            hang_up_after: None,
            give_up_after: None,
            dtmf: Vec::new(),
            deeplink_payload: None,
            cta_payload: None,
        }
    }
}

/// A permission state to set directly (test setup, no webhook).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionGrant {
    /// `no_permission`.
    None,
    /// 7 days from now.
    Temporary,
    /// No expiry.
    Permanent,
}

/// A user's reply to a permission request (or a grant from the business profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionReply {
    /// Accept for 7 days.
    AcceptTemporary,
    /// Accept permanently.
    AcceptPermanent,
    /// Decline.
    Reject,
}

/// The pair's permission as `GET call_permissions` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionStatus {
    /// None or expired.
    NoPermission,
    /// Temporary, expiring at the given epoch seconds.
    Temporary(u64),
    /// Permanent.
    Permanent,
}

/// The sans-IO Meta model. See the module docs.
pub struct MetaCore {
    cfg: CoreConfig,
    rng: ChaCha8Rng,
    numbers: HashMap<PhoneNumberId, Number>,
    users: HashMap<WaId, UserProfile>,
    pairs: HashMap<(PhoneNumberId, WaId), Pair>,
    calls: HashMap<WaCallId, Call>,
    terminated_order: VecDeque<WaCallId>,
    timers: Timers,
    events: VecDeque<CoreEvent>,
    sip_password: String,
    graph_count: u64,
}

struct Number {
    cfg: BusinessNumber,
    settings: Map<String, Value>,
    active_calls: usize,
    bic_attempts: VecDeque<SystemTime>,
}

#[derive(Default)]
struct Pair {
    permission: Permission,
    requests: VecDeque<SystemTime>,
    connected_bic: VecDeque<SystemTime>,
    consecutive_missed: u32,
    pending_request: Option<Wamid>,
    active_call: Option<WaCallId>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Permission {
    #[default]
    None,
    Temporary(SystemTime),
    Permanent,
}

struct Call {
    id: WaCallId,
    pnid: PhoneNumberId,
    user: WaId,
    machine: Machine,
    biz_opaque: Option<String>,
    deeplink: Option<String>,
    cta: Option<String>,
    business_sdp: Option<String>,
    meta_sdp: Option<String>,
    script: Script,
    end: Option<CallEnd>,
}

#[derive(Default)]
struct Script {
    hang_up_after: Option<Duration>,
    dtmf: VecDeque<DtmfStep>,
    answered_at: Option<Instant>,
    /// Business-initiated: what the user will do when `UserDecision` fires.
    decision: Option<Decision>,
}

#[derive(Clone, Copy)]
enum Decision {
    Answer,
    Reject,
}

enum Machine {
    User(UserCallState),
    Business(BusinessCallState),
}

/// User-initiated machine (§9).
enum UserCallState {
    Offered,
    PreAccepted {
        answer: String,
        first_media: Option<SystemTime>,
    },
    Active(Active),
    Terminated,
}

/// Business-initiated machine (§9).
enum BusinessCallState {
    AwaitingAnswer,
    Ringing,
    Active(Active),
    Terminated,
}

#[derive(Clone, Copy)]
struct Active {
    start_wall: SystemTime,
    media_seen: bool,
}

impl MetaCore {
    /// Builds the model from plain configuration.
    pub fn new(cfg: CoreConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let numbers = cfg
            .numbers
            .iter()
            .map(|n| {
                (
                    n.phone_number_id.clone(),
                    Number {
                        settings: initial_settings(n),
                        cfg: n.clone(),
                        active_calls: 0,
                        bic_attempts: VecDeque::new(),
                    },
                )
            })
            .collect();
        let users = cfg
            .users
            .iter()
            .map(|u| (u.wa_id.clone(), u.clone()))
            .collect();
        let sip_password = mint_fbtrace(&mut rng);
        Self {
            cfg,
            rng,
            numbers,
            users,
            pairs: HashMap::new(),
            calls: HashMap::new(),
            terminated_order: VecDeque::new(),
            timers: Timers::default(),
            events: VecDeque::new(),
            sip_password,
            graph_count: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Next output, if any.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// Earliest pending deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Number of armed timers (for tests and bounded-memory checks).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Snapshot of one call (live or among the recently terminated).
    pub fn call(&self, id: &WaCallId) -> Option<CallInfo> {
        self.calls.get(id).map(Call::info)
    }

    /// Snapshots of all known calls.
    pub fn calls(&self) -> Vec<CallInfo> {
        self.calls.values().map(Call::info).collect()
    }

    /// Adds or replaces a user profile.
    pub fn set_user(&mut self, profile: UserProfile) {
        self.users.insert(profile.wa_id.clone(), profile);
    }

    /// Sets a pair's permission directly, without webhooks (test setup).
    pub fn set_permission(
        &mut self,
        pnid: &PhoneNumberId,
        user: &WaId,
        grant: PermissionGrant,
        wall: SystemTime,
    ) {
        let ttl = self.cfg.limits.temporary_permission;
        self.pair(pnid, user).permission = match grant {
            PermissionGrant::None => Permission::None,
            PermissionGrant::Temporary => Permission::Temporary(wall + ttl),
            PermissionGrant::Permanent => Permission::Permanent,
        };
    }

    /// The pair's permission at `wall`.
    pub fn permission(
        &self,
        pnid: &PhoneNumberId,
        user: &WaId,
        wall: SystemTime,
    ) -> PermissionStatus {
        let p = self
            .pairs
            .get(&(pnid.clone(), user.clone()))
            .map(|p| p.permission)
            .unwrap_or_default();
        match effective(p, wall) {
            Permission::None => PermissionStatus::NoPermission,
            Permission::Temporary(t) => PermissionStatus::Temporary(epoch_secs(t)),
            Permission::Permanent => PermissionStatus::Permanent,
        }
    }

    /// Consecutive unanswered or rejected business calls of the pair.
    pub fn consecutive_missed(&self, pnid: &PhoneNumberId, user: &WaId) -> u32 {
        self.pairs
            .get(&(pnid.clone(), user.clone()))
            .map_or(0, |p| p.consecutive_missed)
    }

    /// The user calls the business with `offer` (produced by the user's media peer).
    /// Meta refuses without any webhook when the number cannot take the call (§7.3).
    pub fn user_calls(
        &mut self,
        call: UserCall,
        offer: String,
        now: Instant,
        wall: SystemTime,
    ) -> Result<WaCallId, SimError> {
        let number = self
            .numbers
            .get(&call.to)
            .ok_or_else(|| SimError::UnknownNumber(call.to.to_string()))?;
        if number.cfg.sip_enabled {
            return Err(SimError::CallNotPlaced(
                "the number is in SIP mode; Meta would send a SIP INVITE, not webhooks",
            ));
        }
        if !number.cfg.calling_enabled {
            return Err(SimError::CallNotPlaced(
                "calling is not enabled on the number",
            ));
        }
        if number.active_calls >= number.cfg.max_concurrent_calls {
            return Err(SimError::CallNotPlaced(
                "concurrent calls limit of the number",
            ));
        }
        let display = number.cfg.display_phone_number.clone();
        let callback = number.cfg.callback_permission;
        if self.pair(&call.to, &call.from).active_call.is_some() {
            return Err(SimError::CallNotPlaced(
                "a call between the pair is already ongoing",
            ));
        }
        let id = WaCallId::mint(&mut self.rng, &call.from, &display);
        let c = Call {
            id: id.clone(),
            pnid: call.to.clone(),
            user: call.from.clone(),
            machine: Machine::User(UserCallState::Offered),
            biz_opaque: None,
            deeplink: call.deeplink_payload,
            cta: call.cta_payload,
            business_sdp: None,
            meta_sdp: Some(offer.clone()),
            script: Script {
                hang_up_after: call.hang_up_after,
                dtmf: sorted_steps(call.dtmf),
                ..Script::default()
            },
            end: None,
        };
        self.calls.insert(id.clone(), c);
        self.pair(&call.to, &call.from).active_call = Some(id.clone());
        if let Some(n) = self.numbers.get_mut(&call.to) {
            n.active_calls += 1;
        }
        self.set_call_timer(
            &id,
            CallTimer::AnswerTimeout,
            now + self.cfg.timing.answer_timeout,
        );
        if let Some(g) = call.give_up_after {
            self.set_call_timer(&id, CallTimer::GiveUp, now + g);
        }
        let mut obj = json!({
            "id": id.as_str(),
            "from": call.from.as_str(),
            "to": display,
            "event": "connect",
            "timestamp": payload::epoch_str(wall),
            "direction": "USER_INITIATED",
            "session": { "sdp_type": "offer", "sdp": offer },
        });
        self.add_payloads(&id, &mut obj);
        self.emit_call_webhook(&id, "connect", obj, None);
        self.emit_changed(&id);
        if callback {
            self.grant_callback_permission(&call.to, &call.from, &id, wall);
        }
        debug!(call_id = %id, "user-initiated call offered");
        Ok(id)
    }

    /// The user hangs up (or cancels before being answered).
    pub fn user_hangs_up(
        &mut self,
        id: &WaCallId,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), SimError> {
        let call = self
            .calls
            .get(id)
            .ok_or_else(|| SimError::UnknownCall(id.to_string()))?;
        match &call.machine {
            Machine::Business(BusinessCallState::Ringing) => self.user_rejects(id, now, wall),
            _ if call.end.is_some() => Err(wrong_state(call, "hang up")),
            _ => {
                self.end_call(
                    id,
                    TerminateStatus::Completed,
                    EndReason::UserHungUp,
                    None,
                    wall,
                );
                Ok(())
            }
        }
    }

    /// The user picks up a ringing business-initiated call.
    pub fn user_answers(
        &mut self,
        id: &WaCallId,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), SimError> {
        let call = self
            .calls
            .get_mut(id)
            .ok_or_else(|| SimError::UnknownCall(id.to_string()))?;
        if !matches!(call.machine, Machine::Business(BusinessCallState::Ringing)) {
            return Err(wrong_state(call, "answer"));
        }
        call.machine = Machine::Business(BusinessCallState::Active(Active {
            start_wall: wall,
            media_seen: false,
        }));
        call.script.answered_at = Some(now);
        let (pnid, user, opaque) = (
            call.pnid.clone(),
            call.user.clone(),
            call.biz_opaque.clone(),
        );
        self.timers
            .cancel(&TimerKey::Call(id.clone(), CallTimer::RingTimeout));
        self.timers
            .cancel(&TimerKey::Call(id.clone(), CallTimer::UserDecision));
        let pair = self.pair(&pnid, &user);
        pair.consecutive_missed = 0;
        pair.connected_bic.push_back(wall);
        // A connected call resets the pair's permission request limits (§3.6).
        pair.requests.clear();
        self.emit_status(id, "ACCEPTED", wall, opaque.as_deref());
        self.events.push_back(CoreEvent::PeerStartMedia {
            call_id: id.clone(),
        });
        self.arm_active_timers(id, now);
        self.emit_changed(id);
        Ok(())
    }

    /// The user declines a ringing business-initiated call: `REJECTED`, then `terminate`.
    pub fn user_rejects(
        &mut self,
        id: &WaCallId,
        _now: Instant,
        wall: SystemTime,
    ) -> Result<(), SimError> {
        let call = self
            .calls
            .get(id)
            .ok_or_else(|| SimError::UnknownCall(id.to_string()))?;
        if !matches!(call.machine, Machine::Business(BusinessCallState::Ringing)) {
            return Err(wrong_state(call, "reject"));
        }
        let opaque = call.biz_opaque.clone();
        self.emit_status(id, "REJECTED", wall, opaque.as_deref());
        self.end_call(
            id,
            TerminateStatus::Completed,
            EndReason::UserRejected,
            None,
            wall,
        );
        Ok(())
    }

    /// The user presses digits on an active call (forwarded to the media peer).
    pub fn user_presses(&mut self, id: &WaCallId, digits: &str) -> Result<(), SimError> {
        let call = self
            .calls
            .get(id)
            .ok_or_else(|| SimError::UnknownCall(id.to_string()))?;
        if call.state() != CallState::Active {
            return Err(wrong_state(call, "press digits"));
        }
        self.events.push_back(CoreEvent::PeerSendDtmf {
            call_id: id.clone(),
            digits: digits.to_owned(),
        });
        Ok(())
    }

    /// The user replies to the pending permission request, or (with none pending) grants
    /// or revokes from the business profile (§3.4 table).
    pub fn user_replies_permission(
        &mut self,
        pnid: &PhoneNumberId,
        user: &WaId,
        reply: PermissionReply,
        wall: SystemTime,
    ) -> Result<(), SimError> {
        if !self.numbers.contains_key(pnid) {
            return Err(SimError::UnknownNumber(pnid.to_string()));
        }
        let pending = self.pair(pnid, user).pending_request.take();
        self.timers
            .cancel(&TimerKey::PermissionReply(pnid.clone(), user.clone()));
        self.apply_permission_reply(pnid, user, reply, pending, wall);
        Ok(())
    }

    /// Media (any packet) from the business arrived on the call's peer at `now`.
    pub fn handle_business_media(&mut self, id: &WaCallId, now: Instant, wall: SystemTime) {
        let mid = self.cfg.timing.watchdog.mid_call;
        let enabled = self.cfg.timing.watchdog.enabled;
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        match &mut call.machine {
            Machine::User(UserCallState::PreAccepted { first_media, .. }) => {
                // The client counts the first media packet as the answer (§2.1).
                first_media.get_or_insert(wall);
            }
            Machine::User(UserCallState::Active(a))
            | Machine::Business(BusinessCallState::Active(a)) => {
                a.media_seen = true;
                if enabled {
                    self.set_call_timer(id, CallTimer::MediaWatchdog, now + mid);
                }
            }
            _ => {}
        }
    }

    /// Business-initiated: the user's peer produced its answer (or failed).
    pub fn handle_peer_answer(
        &mut self,
        id: &WaCallId,
        answer: Result<String, String>,
        now: Instant,
        wall: SystemTime,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if !matches!(
            call.machine,
            Machine::Business(BusinessCallState::AwaitingAnswer)
        ) {
            debug!(call_id = %id, "peer answer for a call not awaiting one");
            return;
        }
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let err = payload::call_error(
                    138019,
                    "Client failed to set up the call",
                    &format!("Client failed to set up the call: {e}"),
                );
                self.end_call(
                    id,
                    TerminateStatus::Failed,
                    EndReason::PeerFailed,
                    Some((138019, err)),
                    wall,
                );
                return;
            }
        };
        call.machine = Machine::Business(BusinessCallState::Ringing);
        call.meta_sdp = Some(answer.clone());
        let (pnid, user, opaque) = (
            call.pnid.clone(),
            call.user.clone(),
            call.biz_opaque.clone(),
        );
        let display = self.display(&pnid);
        let mut obj = json!({
            "id": id.as_str(),
            "from": display,
            "to": user.as_str(),
            "event": "connect",
            "timestamp": payload::epoch_str(wall),
            "direction": "BUSINESS_INITIATED",
            "session": { "sdp_type": "answer", "sdp": answer },
        });
        if let (Some(o), Some(m)) = (&opaque, obj.as_object_mut()) {
            m.insert("biz_opaque_callback_data".into(), Value::from(o.as_str()));
        }
        self.emit_call_webhook(id, "connect", obj, None);
        self.emit_status(id, "RINGING", wall, opaque.as_deref());
        self.set_call_timer(
            id,
            CallTimer::RingTimeout,
            now + self.cfg.timing.ring_timeout,
        );
        let behaviour = self.behaviour(&user).on_business_call;
        let call = self.calls.get_mut(id);
        match (behaviour, call) {
            (
                BusinessCallBehaviour::Answer {
                    after,
                    hang_up_after,
                    dtmf,
                },
                Some(call),
            ) => {
                call.script.decision = Some(Decision::Answer);
                call.script.hang_up_after = hang_up_after;
                call.script.dtmf = sorted_steps(dtmf);
                self.set_call_timer(id, CallTimer::UserDecision, now + after);
            }
            (BusinessCallBehaviour::Reject { after }, Some(call)) => {
                call.script.decision = Some(Decision::Reject);
                self.set_call_timer(id, CallTimer::UserDecision, now + after);
            }
            _ => {}
        }
        self.emit_changed(id);
        let _ = pnid;
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        // Bounded: each pop removes one timer; handlers add at most a few new ones, each
        // in the future except a zero-delay decision.
        for _ in 0..100_000 {
            let Some(key) = self.timers.pop_due(now) else {
                return;
            };
            match key {
                TimerKey::Call(id, t) => self.fire_call_timer(&id, t, now, wall),
                TimerKey::PermissionReply(pnid, user) => {
                    self.fire_permission_reply(&pnid, &user, wall)
                }
            }
        }
    }

    /// Handles one Graph API request.
    pub fn handle_graph(
        &mut self,
        req: &GraphRequest,
        now: Instant,
        wall: SystemTime,
    ) -> GraphResponse {
        let mut action = None;
        let result = self.graph_inner(req, &mut action, now, wall);
        // Lookups create pair entries; sweep the ones holding no state now and then so
        // requests about arbitrary users cannot grow memory without bound.
        self.graph_count = self.graph_count.wrapping_add(1);
        if self.graph_count.is_multiple_of(1024) {
            self.sweep_pairs(wall);
        }
        match result {
            Ok(body) => GraphResponse {
                status: 200,
                body,
                error_code: None,
                action,
            },
            Err(e) => {
                let trace = mint_fbtrace(&mut self.rng);
                debug!(code = e.code, details = %e.details, "graph request refused");
                GraphResponse {
                    status: e.http_status,
                    body: e.to_body(&trace),
                    error_code: Some(e.code),
                    action,
                }
            }
        }
    }

    fn graph_inner(
        &mut self,
        req: &GraphRequest,
        action: &mut Option<String>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Value, GraphError> {
        self.check_token(req.authorization.as_deref())?;
        let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        let [version, pnid, endpoint] = segs.as_slice() else {
            return Err(GraphError::invalid_parameter(format!(
                "Unknown path components: {}",
                crate::ids::truncate(&req.path, 64)
            )));
        };
        if !is_version(version) {
            return Err(GraphError::invalid_parameter(format!(
                "Unknown API version {:?}",
                crate::ids::truncate(version, 16)
            )));
        }
        let pnid = PhoneNumberId::parse(pnid)
            .ok()
            .filter(|p| self.numbers.contains_key(p))
            .ok_or_else(|| {
                GraphError::invalid_parameter(format!(
                    "Unsupported {} request. Object with ID '{}' does not exist, cannot be loaded due to missing permissions, or does not support this operation",
                    req.method.to_ascii_lowercase(),
                    crate::ids::truncate(pnid, 32)
                ))
            })?;
        match (req.method.as_str(), *endpoint) {
            ("POST", "calls") => {
                let body = parse_body(&req.body)?;
                *action = body
                    .get("action")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.post_calls(&pnid, &body, now, wall)
            }
            ("GET", "call_permissions") => self.get_call_permissions(&pnid, &req.query, wall),
            ("POST", "messages") => {
                let body = parse_body(&req.body)?;
                *action = body.get("type").and_then(Value::as_str).map(str::to_owned);
                self.post_messages(&pnid, &body, now, wall)
            }
            ("GET", "settings") => {
                let creds =
                    query_param(&req.query, "include_sip_credentials").as_deref() == Some("true");
                let n = self.number(&pnid)?;
                Ok(
                    json!({ "calling": settings::view_calling(&n.settings, creds, &self.sip_password) }),
                )
            }
            ("POST", "settings") => {
                let body = parse_body(&req.body)?;
                self.post_settings(&pnid, &body, wall)
            }
            (m, e) => Err(GraphError::invalid_parameter(format!(
                "Unsupported {} request on edge {:?}",
                m.to_ascii_lowercase(),
                crate::ids::truncate(e, 32)
            ))),
        }
    }

    fn check_token(&self, auth: Option<&str>) -> Result<(), GraphError> {
        let Some(auth) = auth else {
            return Err(GraphError::new(104, "missing Authorization header"));
        };
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("OAuth "))
            .map(str::trim)
            .unwrap_or("");
        let ok = if self.cfg.access_tokens.is_empty() {
            !token.is_empty()
        } else {
            self.cfg.access_tokens.iter().any(|t| t == token)
        };
        if ok {
            Ok(())
        } else {
            Err(GraphError::new(190, "the access token is invalid"))
        }
    }

    fn post_calls(
        &mut self,
        pnid: &PhoneNumberId,
        body: &Value,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Value, GraphError> {
        if self.number(pnid)?.cfg.sip_enabled {
            return Err(GraphError::new(
                131055,
                "Graph calling APIs cannot be used on SIP enabled numbers",
            ));
        }
        check_messaging_product(body)?;
        let action = body
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::invalid_parameter("action is required"))?;
        match action {
            "connect" => self.graph_connect(pnid, body, now, wall),
            "pre_accept" | "accept" | "reject" | "terminate" => {
                let id = body
                    .get("call_id")
                    .and_then(Value::as_str)
                    .and_then(|s| WaCallId::parse(s).ok())
                    .filter(|id| self.calls.get(id).is_some_and(|c| &c.pnid == pnid))
                    .ok_or_else(|| GraphError::invalid_parameter("Invalid call_id"))?;
                match action {
                    "pre_accept" => self.graph_pre_accept(&id, body),
                    "accept" => self.graph_accept(&id, body, now, wall),
                    "reject" => self.graph_reject(&id, wall),
                    _ => self.graph_terminate(&id, wall),
                }?;
                Ok(json!({ "messaging_product": "whatsapp", "success": true }))
            }
            other => Err(GraphError::invalid_parameter(format!(
                "Invalid action {:?}: expected connect, pre_accept, accept, reject or terminate",
                crate::ids::truncate(other, 32)
            ))),
        }
    }

    fn session_sdp<'a>(
        &self,
        pnid: &PhoneNumberId,
        body: &'a Value,
        role: SdpRole,
    ) -> Result<&'a str, GraphError> {
        let session = body.get("session").ok_or_else(|| {
            GraphError::invalid_parameter(
                "session is required (the legacy connection.webrtc form is not accepted)",
            )
        })?;
        let want = if role == SdpRole::Offer {
            "offer"
        } else {
            "answer"
        };
        match session.get("sdp_type").and_then(Value::as_str) {
            Some(t) if t == want => {}
            Some(t) => {
                return Err(GraphError::invalid_parameter(format!(
                    "session.sdp_type must be {want:?}, got {:?}",
                    crate::ids::truncate(t, 16)
                )));
            }
            None => {
                return Err(GraphError::invalid_parameter(
                    "session.sdp_type is required",
                ));
            }
        }
        let sdp = session
            .get("sdp")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::invalid_parameter("session.sdp must be a string"))?;
        let keying = self
            .numbers
            .get(pnid)
            .map(|n| n.cfg.srtp_key_exchange)
            .unwrap_or_default();
        sdp::validate_business_sdp(sdp, role, keying).map_err(GraphError::invalid_parameter)?;
        Ok(sdp)
    }

    fn graph_connect(
        &mut self,
        pnid: &PhoneNumberId,
        body: &Value,
        _now: Instant,
        wall: SystemTime,
    ) -> Result<Value, GraphError> {
        let to = body
            .get("to")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::invalid_parameter("to is required"))?;
        let user = WaId::normalize(to)
            .map_err(|_| GraphError::invalid_parameter("to is not a valid phone number"))?;
        let offer = self.session_sdp(pnid, body, SdpRole::Offer)?.to_owned();
        let opaque = biz_opaque(body)?;
        // Checks in reference §9 order.
        let limits = self.cfg.limits.clone();
        let n = self.number(pnid)?;
        if !n.cfg.calling_enabled {
            return Err(GraphError::new(
                138000,
                "Calling is not enabled for this phone number",
            ));
        }
        let display = n.cfg.display_phone_number.clone();
        if self
            .cfg
            .blocked_bic_country_codes
            .iter()
            .any(|cc| !cc.is_empty() && display.starts_with(cc.as_str()))
        {
            return Err(GraphError::new(
                138013,
                "Business initiated calling is not available for business phone numbers in this country",
            ));
        }
        let max_concurrent = n.cfg.max_concurrent_calls;
        let active_calls = n.active_calls;
        let pair = self.pair(pnid, &user);
        if effective(pair.permission, wall) == Permission::None {
            return Err(GraphError::new(
                138006,
                "No approved call permission from the recipient",
            ));
        }
        prune(&mut pair.connected_bic, wall, DAY);
        if pair.connected_bic.len() >= limits.connected_calls_per_day {
            let next = pair.connected_bic.front().map_or(wall, |t| *t + DAY);
            return Err(GraphError::new(
                138012,
                format!(
                    "Business initiated connected calls limit reached; next call allowed at {}",
                    epoch_secs(next)
                ),
            ));
        }
        if pair.active_call.is_some() {
            return Err(GraphError::new(
                138003,
                "A call with this user is already ongoing",
            ));
        }
        if active_calls >= max_concurrent {
            return Err(GraphError::new(
                138002,
                format!("Concurrent calls limit of {max_concurrent} reached"),
            ));
        }
        let n = self
            .numbers
            .get_mut(pnid)
            .ok_or_else(|| GraphError::invalid_parameter("unknown number"))?;
        prune(&mut n.bic_attempts, wall, DAY);
        if n.bic_attempts.len() >= limits.bic_attempts_per_day {
            return Err(GraphError::new(
                138005,
                "Business initiated call attempts limit reached for this number",
            ));
        }
        n.bic_attempts.push_back(wall);
        n.active_calls += 1;
        let id = WaCallId::mint(&mut self.rng, &user, &display);
        self.calls.insert(
            id.clone(),
            Call {
                id: id.clone(),
                pnid: pnid.clone(),
                user: user.clone(),
                machine: Machine::Business(BusinessCallState::AwaitingAnswer),
                biz_opaque: opaque,
                deeplink: None,
                cta: None,
                business_sdp: Some(offer.clone()),
                meta_sdp: None,
                script: Script::default(),
                end: None,
            },
        );
        self.pair(pnid, &user).active_call = Some(id.clone());
        self.events.push_back(CoreEvent::PeerAnswerOffer {
            call_id: id.clone(),
            offer,
        });
        self.emit_changed(&id);
        debug!(call_id = %id, "business-initiated call created");
        Ok(json!({ "messaging_product": "whatsapp", "calls": [ { "id": id.as_str() } ] }))
    }

    fn graph_pre_accept(&mut self, id: &WaCallId, body: &Value) -> Result<(), GraphError> {
        let pnid = self
            .calls
            .get(id)
            .map(|c| c.pnid.clone())
            .ok_or_else(|| GraphError::invalid_parameter("Invalid call_id"))?;
        let answer = self.session_sdp(&pnid, body, SdpRole::Answer)?.to_owned();
        let call = self
            .calls
            .get_mut(id)
            .ok_or_else(|| GraphError::invalid_parameter("Invalid call_id"))?;
        match &call.machine {
            Machine::User(UserCallState::Offered) => {
                call.machine = Machine::User(UserCallState::PreAccepted {
                    answer: answer.clone(),
                    first_media: None,
                });
                call.business_sdp = Some(answer.clone());
                self.events.push_back(CoreEvent::PeerApplyAnswer {
                    call_id: id.clone(),
                    answer,
                });
                self.emit_changed(id);
                Ok(())
            }
            Machine::User(UserCallState::PreAccepted { answer: prev, .. }) if *prev == answer => {
                Ok(())
            }
            Machine::User(UserCallState::PreAccepted { .. }) => Err(GraphError::invalid_parameter(
                "the call was already pre-accepted with a different SDP answer",
            )),
            Machine::Business(_) => Err(GraphError::invalid_parameter(
                "pre_accept is only valid for user-initiated calls",
            )),
            _ => Err(state_error(call, "pre_accept")),
        }
    }

    fn graph_accept(
        &mut self,
        id: &WaCallId,
        body: &Value,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), GraphError> {
        let pnid = self
            .calls
            .get(id)
            .map(|c| c.pnid.clone())
            .ok_or_else(|| GraphError::invalid_parameter("Invalid call_id"))?;
        let answer = self.session_sdp(&pnid, body, SdpRole::Answer)?.to_owned();
        let opaque = biz_opaque(body)?;
        let call = self
            .calls
            .get_mut(id)
            .ok_or_else(|| GraphError::invalid_parameter("Invalid call_id"))?;
        let start_wall = match &call.machine {
            Machine::User(UserCallState::Offered) => {
                call.business_sdp = Some(answer.clone());
                self.events.push_back(CoreEvent::PeerApplyAnswer {
                    call_id: id.clone(),
                    answer,
                });
                wall
            }
            Machine::User(UserCallState::PreAccepted {
                answer: prev,
                first_media,
            }) => {
                if *prev != answer {
                    return Err(GraphError::invalid_parameter(
                        "SDP answer in accept must be identical to the one sent in pre_accept",
                    ));
                }
                first_media.unwrap_or(wall)
            }
            Machine::Business(_) => {
                return Err(GraphError::invalid_parameter(
                    "accept is only valid for user-initiated calls",
                ));
            }
            _ => return Err(state_error(call, "accept")),
        };
        call.machine = Machine::User(UserCallState::Active(Active {
            start_wall,
            media_seen: false,
        }));
        call.script.answered_at = Some(now);
        if opaque.is_some() {
            call.biz_opaque = opaque;
        }
        let (pnid, user) = (call.pnid.clone(), call.user.clone());
        self.timers
            .cancel(&TimerKey::Call(id.clone(), CallTimer::AnswerTimeout));
        self.timers
            .cancel(&TimerKey::Call(id.clone(), CallTimer::GiveUp));
        // A connected call resets the pair's permission request limits (§3.6).
        self.pair(&pnid, &user).requests.clear();
        self.events.push_back(CoreEvent::PeerStartMedia {
            call_id: id.clone(),
        });
        self.arm_active_timers(id, now);
        self.emit_changed(id);
        Ok(())
    }

    fn graph_reject(&mut self, id: &WaCallId, wall: SystemTime) -> Result<(), GraphError> {
        let call = self
            .calls
            .get(id)
            .ok_or_else(|| GraphError::invalid_parameter("Invalid call_id"))?;
        match &call.machine {
            Machine::User(UserCallState::Offered | UserCallState::PreAccepted { .. }) => {
                self.end_call(
                    id,
                    TerminateStatus::Completed,
                    EndReason::BusinessRejected,
                    None,
                    wall,
                );
                Ok(())
            }
            Machine::Business(_) => Err(GraphError::invalid_parameter(
                "reject is only valid for user-initiated calls; use terminate",
            )),
            _ => Err(state_error(call, "reject")),
        }
    }

    fn graph_terminate(&mut self, id: &WaCallId, wall: SystemTime) -> Result<(), GraphError> {
        let call = self
            .calls
            .get(id)
            .ok_or_else(|| GraphError::invalid_parameter("Invalid call_id"))?;
        if call.end.is_some() {
            return Err(state_error(call, "terminate"));
        }
        self.end_call(
            id,
            TerminateStatus::Completed,
            EndReason::BusinessTerminated,
            None,
            wall,
        );
        Ok(())
    }

    fn get_call_permissions(
        &mut self,
        pnid: &PhoneNumberId,
        query: &str,
        wall: SystemTime,
    ) -> Result<Value, GraphError> {
        let user = query_param(query, "user_wa_id")
            .and_then(|u| WaId::normalize(&u).ok())
            .ok_or_else(|| {
                GraphError::invalid_parameter("user_wa_id is required and must be a phone number")
            })?;
        let limits = self.cfg.limits.clone();
        let pair = self.pair(pnid, &user);
        prune(&mut pair.requests, wall, WEEK);
        prune(&mut pair.connected_bic, wall, DAY);
        let perm = effective(pair.permission, wall);
        let day_usage = pair
            .requests
            .iter()
            .filter(|t| within(**t, wall, DAY))
            .count();
        let week_usage = pair.requests.len();
        let connected = pair.connected_bic.len();
        let permission = match perm {
            Permission::None => json!({ "status": "no_permission" }),
            Permission::Temporary(t) => {
                json!({ "status": "temporary", "expiration_time": epoch_secs(t) })
            }
            Permission::Permanent => json!({ "status": "permanent" }),
        };
        let mut day_limit = json!({ "time_period": "PT24H", "max_allowed": limits.permission_requests_per_day, "current_usage": day_usage });
        if day_usage >= limits.permission_requests_per_day
            && let Some(first) = pair.requests.iter().find(|t| within(**t, wall, DAY))
        {
            day_limit["limit_expiration_time"] = json!(epoch_secs(*first + DAY));
        }
        let mut week_limit = json!({ "time_period": "P7D", "max_allowed": limits.permission_requests_per_week, "current_usage": week_usage });
        if week_usage >= limits.permission_requests_per_week
            && let Some(first) = pair.requests.front()
        {
            week_limit["limit_expiration_time"] = json!(epoch_secs(*first + WEEK));
        }
        let mut call_limit = json!({ "time_period": "PT24H", "max_allowed": limits.connected_calls_per_day, "current_usage": connected });
        if connected >= limits.connected_calls_per_day
            && let Some(first) = pair.connected_bic.front()
        {
            call_limit["limit_expiration_time"] = json!(epoch_secs(*first + DAY));
        }
        let can_request = perm != Permission::Permanent
            && day_usage < limits.permission_requests_per_day
            && week_usage < limits.permission_requests_per_week;
        let can_call = perm != Permission::None && connected < limits.connected_calls_per_day;
        Ok(json!({
            "messaging_product": "whatsapp",
            "permission": permission,
            "actions": [
                { "action_name": "send_call_permission_request", "can_perform_action": can_request,
                  "limits": [day_limit, week_limit] },
                { "action_name": "start_call", "can_perform_action": can_call, "limits": [call_limit] },
            ],
        }))
    }

    fn post_messages(
        &mut self,
        pnid: &PhoneNumberId,
        body: &Value,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Value, GraphError> {
        check_messaging_product(body)?;
        let to_raw = body
            .get("to")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::invalid_parameter("to is required"))?;
        let user = WaId::normalize(to_raw)
            .map_err(|_| GraphError::invalid_parameter("to is not a valid phone number"))?;
        let kind = body.get("type").and_then(Value::as_str).unwrap_or("text");
        let is_cpr = kind == "interactive"
            && body.pointer("/interactive/type").and_then(Value::as_str)
                == Some("call_permission_request");
        if is_cpr {
            let interactive = body.get("interactive").unwrap_or(&Value::Null);
            if interactive.pointer("/action/name").and_then(Value::as_str)
                != Some("call_permission_request")
            {
                return Err(GraphError::invalid_parameter(
                    "interactive.action.name must be \"call_permission_request\"",
                ));
            }
            if interactive.get("header").is_some() || interactive.get("footer").is_some() {
                return Err(GraphError::invalid_parameter(
                    "header and footer are not allowed in a free-form call_permission_request",
                ));
            }
            let limits = self.cfg.limits.clone();
            let pair = self.pair(pnid, &user);
            prune(&mut pair.requests, wall, WEEK);
            if effective(pair.permission, wall) == Permission::Permanent {
                return Err(GraphError::new(
                    138017,
                    "The user already granted a permanent call permission",
                ));
            }
            let day = pair
                .requests
                .iter()
                .filter(|t| within(**t, wall, DAY))
                .count();
            if day >= limits.permission_requests_per_day
                || pair.requests.len() >= limits.permission_requests_per_week
            {
                return Err(GraphError::new(
                    138009,
                    format!(
                        "Call permission request limit reached for this user ({} per 24 hours, {} per 7 days)",
                        limits.permission_requests_per_day, limits.permission_requests_per_week
                    ),
                ));
            }
            pair.requests.push_back(wall);
        }
        let wamid = Wamid::mint(&mut self.rng, &user);
        let meta_display = self.display(pnid);
        let meta = NumberMeta {
            pnid,
            display: &meta_display,
        };
        for status in ["sent", "delivered"] {
            self.events.push_back(CoreEvent::Webhook(Webhook {
                waba_id: self.cfg.waba_id.clone(),
                field: "messages",
                value: payload::message_status_value(&meta, &user, &wamid, status, wall),
                call_id: None,
                label: "message_status".into(),
            }));
        }
        if is_cpr {
            self.pair(pnid, &user).pending_request = Some(wamid.clone());
            let key = TimerKey::PermissionReply(pnid.clone(), user.clone());
            match self.behaviour(&user).on_permission_request {
                PermissionRequestBehaviour::AcceptTemporary { after }
                | PermissionRequestBehaviour::AcceptPermanent { after }
                | PermissionRequestBehaviour::Decline { after } => {
                    self.timers.set(key, now + after)
                }
                PermissionRequestBehaviour::Ignore => self.timers.cancel(&key),
            }
        }
        Ok(json!({
            "messaging_product": "whatsapp",
            "contacts": [ { "input": to_raw, "wa_id": user.as_str() } ],
            "messages": [ { "id": wamid.as_str() } ],
        }))
    }

    fn post_settings(
        &mut self,
        pnid: &PhoneNumberId,
        body: &Value,
        wall: SystemTime,
    ) -> Result<Value, GraphError> {
        let Some(calling) = body.get("calling") else {
            return Err(GraphError::invalid_parameter("calling is required"));
        };
        let days = i64::try_from(epoch_secs(wall) / 86_400).unwrap_or(0);
        settings::validate_calling(calling, settings::civil_from_days(days))?;
        let update = calling.as_object().cloned().unwrap_or_default();
        let app_id = self.cfg.app_id;
        let n = self
            .numbers
            .get_mut(pnid)
            .ok_or_else(|| GraphError::invalid_parameter("unknown number"))?;
        let enabling = update.get("status").and_then(Value::as_str) == Some("ENABLED");
        if enabling && n.cfg.messaging_limit < 2000 {
            return Err(GraphError::new(
                138015,
                "Calling requires a messaging limit of at least 2000",
            ));
        }
        let sip_after = update
            .get("sip")
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str)
            .map_or(n.cfg.sip_enabled, |s| s == "ENABLED");
        if enabling && !n.cfg.calls_subscribed && !sip_after {
            return Err(GraphError::new(
                138018,
                "No app is subscribed to the calls webhook field and SIP is not configured",
            ));
        }
        let before = settings::notify_view(&n.settings);
        settings::merge_calling(&mut n.settings, &update, app_id);
        n.cfg.calling_enabled = n.settings.get("status").and_then(Value::as_str) == Some("ENABLED");
        n.cfg.callback_permission = n
            .settings
            .get("callback_permission_status")
            .and_then(Value::as_str)
            == Some("ENABLED");
        n.cfg.sip_enabled = n
            .settings
            .get("sip")
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str)
            == Some("ENABLED");
        n.cfg.srtp_key_exchange = match n
            .settings
            .get("srtp_key_exchange_protocol")
            .and_then(Value::as_str)
        {
            Some("SDES") => KeyExchange::Sdes,
            _ => KeyExchange::Dtls,
        };
        let after = settings::notify_view(&n.settings);
        if before != after {
            let calling = settings::view_calling(&n.settings, false, "");
            self.events.push_back(CoreEvent::Webhook(Webhook {
                waba_id: self.cfg.waba_id.clone(),
                field: "account_settings_update",
                value: payload::settings_update_value(pnid, &calling, wall),
                call_id: None,
                label: "account_settings_update".into(),
            }));
        }
        Ok(json!({ "success": true }))
    }

    fn fire_call_timer(&mut self, id: &WaCallId, t: CallTimer, now: Instant, wall: SystemTime) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let state = call.state();
        match (t, state) {
            (CallTimer::AnswerTimeout, CallState::Offered | CallState::PreAccepted) => {
                self.end_call(
                    id,
                    TerminateStatus::Completed,
                    EndReason::NotAnswered,
                    None,
                    wall,
                );
            }
            (CallTimer::GiveUp, CallState::Offered | CallState::PreAccepted) => {
                self.end_call(
                    id,
                    TerminateStatus::Completed,
                    EndReason::UserHungUp,
                    None,
                    wall,
                );
            }
            (CallTimer::RingTimeout, CallState::Ringing) => {
                self.end_call(
                    id,
                    TerminateStatus::Completed,
                    EndReason::NoAnswer,
                    None,
                    wall,
                );
            }
            (CallTimer::UserDecision, CallState::Ringing) => {
                let r = match call.script.decision {
                    Some(Decision::Answer) => self.user_answers(id, now, wall),
                    Some(Decision::Reject) => self.user_rejects(id, now, wall),
                    None => Ok(()),
                };
                if let Err(e) = r {
                    debug!(call_id = %id, error = %e, "scripted decision not applied");
                }
            }
            (CallTimer::HangUp, CallState::Active) => {
                self.end_call(
                    id,
                    TerminateStatus::Completed,
                    EndReason::UserHungUp,
                    None,
                    wall,
                );
            }
            (CallTimer::Dtmf, CallState::Active) => {
                let answered = call.script.answered_at;
                let Some(call) = self.calls.get_mut(id) else {
                    return;
                };
                if let Some(step) = call.script.dtmf.pop_front() {
                    let next = call.script.dtmf.front().map(|s| s.after);
                    self.events.push_back(CoreEvent::PeerSendDtmf {
                        call_id: id.clone(),
                        digits: step.digits,
                    });
                    if let (Some(next), Some(a)) = (next, answered) {
                        self.set_call_timer(id, CallTimer::Dtmf, (a + next).max(now));
                    }
                }
            }
            (CallTimer::MediaWatchdog, CallState::Active) => {
                let title = "WhatsApp client terminated the call due to not receiving any media for a long time. Please try again";
                let err = payload::call_error(
                    138021,
                    title,
                    "WhatsApp client terminated the call due to not receiving any media for a long time.",
                );
                self.end_call(
                    id,
                    TerminateStatus::Failed,
                    EndReason::MediaTimeout,
                    Some((138021, err)),
                    wall,
                );
            }
            (t, s) => debug!(call_id = %id, timer = ?t, state = ?s, "stale call timer"),
        }
    }

    fn fire_permission_reply(&mut self, pnid: &PhoneNumberId, user: &WaId, wall: SystemTime) {
        let Some(pending) = self.pair(pnid, user).pending_request.take() else {
            return;
        };
        let reply = match self.behaviour(user).on_permission_request {
            PermissionRequestBehaviour::AcceptTemporary { .. } => PermissionReply::AcceptTemporary,
            PermissionRequestBehaviour::AcceptPermanent { .. } => PermissionReply::AcceptPermanent,
            PermissionRequestBehaviour::Decline { .. } => PermissionReply::Reject,
            PermissionRequestBehaviour::Ignore => return,
        };
        self.apply_permission_reply(pnid, user, reply, Some(pending), wall);
    }

    fn apply_permission_reply(
        &mut self,
        pnid: &PhoneNumberId,
        user: &WaId,
        reply: PermissionReply,
        context: Option<Wamid>,
        wall: SystemTime,
    ) {
        let ttl = self.cfg.limits.temporary_permission;
        let (permission, accept, permanent, expires) = match reply {
            PermissionReply::AcceptTemporary => (
                Permission::Temporary(wall + ttl),
                true,
                false,
                Some(wall + ttl),
            ),
            PermissionReply::AcceptPermanent => (Permission::Permanent, true, true, None),
            PermissionReply::Reject => (Permission::None, false, false, None),
        };
        let pair = self.pair(pnid, user);
        pair.permission = permission;
        pair.consecutive_missed = 0;
        let ctx = context.as_ref().map(|w| w.as_str().to_owned());
        self.emit_permission_reply(
            pnid,
            user,
            wall,
            &PermissionReplyPayload {
                accept,
                permanent,
                expires,
                automatic: false,
                context_id: ctx.as_deref(),
            },
        );
    }

    fn grant_callback_permission(
        &mut self,
        pnid: &PhoneNumberId,
        user: &WaId,
        id: &WaCallId,
        wall: SystemTime,
    ) {
        let ttl = self.cfg.limits.temporary_permission;
        let pair = self.pair(pnid, user);
        if effective(pair.permission, wall) == Permission::Permanent {
            return;
        }
        pair.permission = Permission::Temporary(wall + ttl);
        self.emit_permission_reply(
            pnid,
            user,
            wall,
            &PermissionReplyPayload {
                accept: true,
                permanent: false,
                expires: Some(wall + ttl),
                automatic: true,
                context_id: Some(id.as_str()),
            },
        );
    }

    fn emit_permission_reply(
        &mut self,
        pnid: &PhoneNumberId,
        user: &WaId,
        wall: SystemTime,
        r: &PermissionReplyPayload<'_>,
    ) {
        let display = self.display(pnid);
        let name = self.user_name(user);
        let msg_id = Wamid::mint(&mut self.rng, user);
        let value = payload::permission_reply_value(
            &NumberMeta {
                pnid,
                display: &display,
            },
            user,
            &name,
            &msg_id,
            wall,
            r,
        );
        self.events.push_back(CoreEvent::Webhook(Webhook {
            waba_id: self.cfg.waba_id.clone(),
            field: "messages",
            value,
            call_id: None,
            label: "call_permission_reply".into(),
        }));
    }

    /// Counts an unanswered or rejected business call: nudge at 2, auto-revoke at 4 (§3.6).
    fn count_missed(&mut self, pnid: &PhoneNumberId, user: &WaId, wall: SystemTime) {
        let (nudge, revoke) = (
            self.cfg.limits.nudge_after_missed,
            self.cfg.limits.revoke_after_missed,
        );
        let pair = self.pair(pnid, user);
        pair.consecutive_missed = pair.consecutive_missed.saturating_add(1);
        let missed = pair.consecutive_missed;
        if missed == nudge {
            self.events.push_back(CoreEvent::Nudge {
                phone_number_id: pnid.clone(),
                user: user.clone(),
            });
        }
        if missed >= revoke {
            let pair = self.pair(pnid, user);
            pair.consecutive_missed = 0;
            if effective(pair.permission, wall) != Permission::None {
                pair.permission = Permission::None;
                self.emit_permission_reply(
                    pnid,
                    user,
                    wall,
                    &PermissionReplyPayload {
                        accept: false,
                        permanent: false,
                        expires: None,
                        automatic: true,
                        context_id: None,
                    },
                );
            }
        }
    }

    fn end_call(
        &mut self,
        id: &WaCallId,
        status: TerminateStatus,
        reason: EndReason,
        error: Option<(u32, Value)>,
        wall: SystemTime,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.end.is_some() {
            return;
        }
        let active = match &call.machine {
            Machine::User(UserCallState::Active(a))
            | Machine::Business(BusinessCallState::Active(a)) => Some(*a),
            _ => None,
        };
        let was_ringing_bic = matches!(call.machine, Machine::Business(BusinessCallState::Ringing));
        let direction = call.direction();
        call.machine = match call.machine {
            Machine::User(_) => Machine::User(UserCallState::Terminated),
            Machine::Business(_) => Machine::Business(BusinessCallState::Terminated),
        };
        let (start, end, duration) = match active {
            Some(a) => {
                let s = epoch_secs(a.start_wall);
                let e = epoch_secs(wall).max(s);
                (Some(s), Some(e), Some(e - s))
            }
            None => (None, None, None),
        };
        call.end = Some(CallEnd {
            status,
            reason,
            duration_s: duration,
            error_code: error.as_ref().map(|e| e.0),
        });
        let (pnid, user, opaque) = (
            call.pnid.clone(),
            call.user.clone(),
            call.biz_opaque.clone(),
        );
        let (deeplink, cta) = (call.deeplink.clone(), call.cta.clone());
        let display = self.display(&pnid);
        let (from, to) = match direction {
            Direction::UserInitiated => (user.as_str().to_owned(), display),
            Direction::BusinessInitiated => (display, user.as_str().to_owned()),
        };
        let mut obj = Map::new();
        obj.insert("id".into(), json!(id.as_str()));
        obj.insert("from".into(), json!(from));
        obj.insert("to".into(), json!(to));
        obj.insert("event".into(), json!("terminate"));
        obj.insert("timestamp".into(), json!(payload::epoch_str(wall)));
        obj.insert(
            "direction".into(),
            json!(match direction {
                Direction::UserInitiated => "USER_INITIATED",
                Direction::BusinessInitiated => "BUSINESS_INITIATED",
            }),
        );
        if let (Some(s), Some(e), Some(d)) = (start, end, duration) {
            obj.insert("start_time".into(), json!(s.to_string()));
            obj.insert("end_time".into(), json!(e.to_string()));
            obj.insert("duration".into(), json!(d));
        }
        obj.insert(
            "status".into(),
            json!(match status {
                TerminateStatus::Completed => "COMPLETED",
                TerminateStatus::Failed => "FAILED",
            }),
        );
        if let Some(o) = opaque {
            obj.insert("biz_opaque_callback_data".into(), json!(o));
        }
        if let Some(d) = deeplink {
            obj.insert("deeplink_payload".into(), json!(d));
        }
        if let Some(c) = cta {
            obj.insert("cta_payload".into(), json!(c));
        }
        let errors = error.map(|(_, v)| v);
        if let Some(e) = &errors {
            // The live capture carries `errors` both in the call and at `value` (§1.6).
            obj.insert("errors".into(), e.clone());
        }
        self.timers.cancel_call(id);
        if let Some(p) = self.pairs.get_mut(&(pnid.clone(), user.clone()))
            && p.active_call.as_ref() == Some(id)
        {
            p.active_call = None;
        }
        if let Some(n) = self.numbers.get_mut(&pnid) {
            n.active_calls = n.active_calls.saturating_sub(1);
        }
        self.emit_call_webhook(id, "terminate", Value::Object(obj), errors);
        self.events.push_back(CoreEvent::PeerStop {
            call_id: id.clone(),
        });
        self.emit_changed(id);
        if was_ringing_bic && matches!(reason, EndReason::NoAnswer | EndReason::UserRejected) {
            self.count_missed(&pnid, &user, wall);
        }
        debug!(call_id = %id, ?reason, ?status, "call terminated");
        self.terminated_order.push_back(id.clone());
        while self.terminated_order.len() > self.cfg.max_terminated_calls_kept {
            if let Some(old) = self.terminated_order.pop_front() {
                self.calls.remove(&old);
            }
        }
    }

    fn arm_active_timers(&mut self, id: &WaCallId, now: Instant) {
        let wd = self.cfg.timing.watchdog.clone();
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let hang = call.script.hang_up_after;
        let first_dtmf = call.script.dtmf.front().map(|s| s.after);
        if wd.enabled {
            self.set_call_timer(id, CallTimer::MediaWatchdog, now + wd.initial);
        }
        if let Some(h) = hang {
            self.set_call_timer(id, CallTimer::HangUp, now + h);
        }
        if let Some(d) = first_dtmf {
            self.set_call_timer(id, CallTimer::Dtmf, now + d);
        }
    }

    fn set_call_timer(&mut self, id: &WaCallId, t: CallTimer, at: Instant) {
        self.timers.set(TimerKey::Call(id.clone(), t), at);
    }

    fn emit_call_webhook(
        &mut self,
        id: &WaCallId,
        label: &str,
        call_obj: Value,
        errors: Option<Value>,
    ) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let (pnid, user) = (call.pnid.clone(), call.user.clone());
        let display = self.display(&pnid);
        let name = self.user_name(&user);
        let value = payload::calls_value(
            &NumberMeta {
                pnid: &pnid,
                display: &display,
            },
            &user,
            &name,
            call_obj,
            errors,
        );
        self.events.push_back(CoreEvent::Webhook(Webhook {
            waba_id: self.cfg.waba_id.clone(),
            field: "calls",
            value,
            call_id: Some(id.clone()),
            label: label.to_owned(),
        }));
    }

    fn emit_status(&mut self, id: &WaCallId, status: &str, wall: SystemTime, opaque: Option<&str>) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let (pnid, user) = (call.pnid.clone(), call.user.clone());
        let display = self.display(&pnid);
        let name = self.user_name(&user);
        let value = payload::status_value(
            &NumberMeta {
                pnid: &pnid,
                display: &display,
            },
            &user,
            &name,
            id,
            status,
            wall,
            opaque,
        );
        self.events.push_back(CoreEvent::Webhook(Webhook {
            waba_id: self.cfg.waba_id.clone(),
            field: "calls",
            value,
            call_id: Some(id.clone()),
            label: status.to_owned(),
        }));
    }

    fn emit_changed(&mut self, id: &WaCallId) {
        if let Some(c) = self.calls.get(id) {
            self.events.push_back(CoreEvent::CallChanged(c.info()));
        }
    }

    fn add_payloads(&self, id: &WaCallId, obj: &mut Value) {
        let Some(c) = self.calls.get(id) else { return };
        if let Some(m) = obj.as_object_mut() {
            if let Some(d) = &c.deeplink {
                m.insert("deeplink_payload".into(), json!(d));
            }
            if let Some(p) = &c.cta {
                m.insert("cta_payload".into(), json!(p));
            }
        }
    }

    /// Drops pairs equivalent to a fresh one (no permission, no counters, no call).
    fn sweep_pairs(&mut self, wall: SystemTime) {
        let keep_requests = WEEK;
        self.pairs.retain(|_, p| {
            prune(&mut p.requests, wall, keep_requests);
            prune(&mut p.connected_bic, wall, DAY);
            effective(p.permission, wall) != Permission::None
                || !p.requests.is_empty()
                || !p.connected_bic.is_empty()
                || p.consecutive_missed != 0
                || p.pending_request.is_some()
                || p.active_call.is_some()
        });
    }

    /// Number of business–user pairs holding state (for bounded-memory tests).
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    fn pair(&mut self, pnid: &PhoneNumberId, user: &WaId) -> &mut Pair {
        self.pairs.entry((pnid.clone(), user.clone())).or_default()
    }

    fn number(&self, pnid: &PhoneNumberId) -> Result<&Number, GraphError> {
        self.numbers
            .get(pnid)
            .ok_or_else(|| GraphError::invalid_parameter("unknown phone number id"))
    }

    fn display(&self, pnid: &PhoneNumberId) -> String {
        self.numbers
            .get(pnid)
            .map(|n| n.cfg.display_phone_number.clone())
            .unwrap_or_default()
    }

    fn user_name(&self, user: &WaId) -> String {
        self.users
            .get(user)
            .map_or_else(|| "Simulated User".to_owned(), |u| u.name.clone())
    }

    fn behaviour(&self, user: &WaId) -> UserBehaviour {
        self.users
            .get(user)
            .map_or_else(|| self.cfg.default_user.clone(), |u| u.behaviour.clone())
    }
}

impl Call {
    fn direction(&self) -> Direction {
        match self.machine {
            Machine::User(_) => Direction::UserInitiated,
            Machine::Business(_) => Direction::BusinessInitiated,
        }
    }

    fn state(&self) -> CallState {
        match &self.machine {
            Machine::User(UserCallState::Offered) => CallState::Offered,
            Machine::User(UserCallState::PreAccepted { .. }) => CallState::PreAccepted,
            Machine::Business(BusinessCallState::AwaitingAnswer) => CallState::AwaitingAnswer,
            Machine::Business(BusinessCallState::Ringing) => CallState::Ringing,
            Machine::User(UserCallState::Active(_))
            | Machine::Business(BusinessCallState::Active(_)) => CallState::Active,
            Machine::User(UserCallState::Terminated)
            | Machine::Business(BusinessCallState::Terminated) => CallState::Terminated,
        }
    }

    fn info(&self) -> CallInfo {
        let start_time = match &self.machine {
            Machine::User(UserCallState::Active(a))
            | Machine::Business(BusinessCallState::Active(a)) => Some(epoch_secs(a.start_wall)),
            _ => None,
        };
        CallInfo {
            id: self.id.clone(),
            direction: self.direction(),
            phone_number_id: self.pnid.clone(),
            user: self.user.clone(),
            state: self.state(),
            biz_opaque_callback_data: self.biz_opaque.clone(),
            business_sdp: self.business_sdp.clone(),
            meta_sdp: self.meta_sdp.clone(),
            start_time,
            end: self.end.clone(),
        }
    }
}

fn state_name(s: CallState) -> &'static str {
    match s {
        CallState::Offered => "offered",
        CallState::PreAccepted => "pre-accepted",
        CallState::AwaitingAnswer => "awaiting the user's answer",
        CallState::Ringing => "ringing",
        CallState::Active => "already in progress",
        CallState::Terminated => "already terminated",
    }
}

fn wrong_state(call: &Call, action: &'static str) -> SimError {
    SimError::WrongState {
        call: call.id.to_string(),
        state: state_name(call.state()),
        action,
    }
}

/// Acting on a call in the wrong state (e.g. already terminated): code 100 with details.
/// Meta's exact code is undocumented (§9, §10); 100 keeps gateways from retrying.
fn state_error(call: &Call, action: &str) -> GraphError {
    GraphError::invalid_parameter(format!(
        "Cannot {action}: the call is {}",
        state_name(call.state())
    ))
}

fn effective(p: Permission, wall: SystemTime) -> Permission {
    match p {
        Permission::Temporary(t) if t <= wall => Permission::None,
        other => other,
    }
}

fn within(t: SystemTime, wall: SystemTime, window: Duration) -> bool {
    wall.duration_since(t).map_or(true, |d| d < window)
}

fn prune(q: &mut VecDeque<SystemTime>, wall: SystemTime, window: Duration) {
    while q.front().is_some_and(|t| !within(*t, wall, window)) {
        q.pop_front();
    }
}

fn sorted_steps(mut steps: Vec<DtmfStep>) -> VecDeque<DtmfStep> {
    steps.truncate(64);
    steps.sort_by_key(|s| s.after);
    steps.into()
}

fn is_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let mut it = rest.splitn(2, '.');
    let major = it.next().unwrap_or("");
    let minor = it.next().unwrap_or("");
    crate::ids::is_digits(major, 4) && crate::ids::is_digits(minor, 4)
}

fn parse_body(body: &[u8]) -> Result<Value, GraphError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        GraphError::invalid_parameter(format!("request body is not valid JSON: {e}"))
    })?;
    if !v.is_object() {
        return Err(GraphError::invalid_parameter(
            "request body must be a JSON object",
        ));
    }
    Ok(v)
}

fn check_messaging_product(body: &Value) -> Result<(), GraphError> {
    match body.get("messaging_product").and_then(Value::as_str) {
        Some("whatsapp") => Ok(()),
        Some(_) => Err(GraphError::invalid_parameter(
            "messaging_product must be \"whatsapp\"",
        )),
        None => Err(GraphError::invalid_parameter(
            "messaging_product is required",
        )),
    }
}

fn biz_opaque(body: &Value) -> Result<Option<String>, GraphError> {
    match body.get("biz_opaque_callback_data") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_BIZ_OPAQUE => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(GraphError::invalid_parameter(
            "biz_opaque_callback_data is limited to 512 characters",
        )),
        Some(_) => Err(GraphError::invalid_parameter(
            "biz_opaque_callback_data must be a string",
        )),
    }
}

/// First value of `key` in a query string, percent-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn initial_settings(n: &BusinessNumber) -> Map<String, Value> {
    let on = |b: bool| if b { "ENABLED" } else { "DISABLED" };
    let mut m = Map::new();
    m.insert("status".into(), json!(on(n.calling_enabled)));
    m.insert("call_icon_visibility".into(), json!("DEFAULT"));
    m.insert(
        "callback_permission_status".into(),
        json!(on(n.callback_permission)),
    );
    m.insert(
        "sip".into(),
        json!({ "status": on(n.sip_enabled), "servers": [] }),
    );
    if n.srtp_key_exchange == KeyExchange::Sdes {
        m.insert("srtp_key_exchange_protocol".into(), json!("SDES"));
    }
    m
}

#[cfg(test)]
mod tests;
