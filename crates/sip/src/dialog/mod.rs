//! Dialogs, RFC 3261 §12 (with §13.3.1.4 2xx retransmission and §14 re-INVITE).
//!
//! ```text
//!   1xx with To tag          2xx
//!  ----------------> Early ---------> Confirmed ----+
//!                      |                 |          | BYE sent or received,
//!   2xx                |  3xx-6xx        |          | ACK never came (2xx
//!  ------------------------------------->+          | retransmit gave up)
//!                      V                            V
//!                  Terminated <-------------------- +
//! ```
//!
//! A [`Dialog`] is built from the INVITE and the response that created it, from the
//! UAC side ([`Dialog::uac`]) or the UAS side ([`Dialog::uas`]). It keeps:
//!
//! - the [`DialogId`] (Call-ID, local tag, remote tag);
//! - the route set from Record-Route, each entry kept **exactly as received**
//!   (reversed for the UAC, §12.1.2), and builds Route headers from it with loose
//!   (`lr`) or strict routing (§12.2.1.1);
//! - the remote target (Contact), updated by target refresh requests and their 2xx;
//! - local and remote CSeq numbers; out-of-order requests are refused with 500
//!   (§12.2.2).
//!
//! It builds in-dialog requests ([`Dialog::create_request`]: BYE, re-INVITE, UPDATE,
//! INFO, OPTIONS …) and the ACK for a 2xx ([`Dialog::create_ack`]), which it also
//! re-sends for each retransmitted 2xx. As UAS it retransmits its 2xx (T1 doubling up
//! to T2, UDP only) until the ACK arrives or 64·T1 passes (§13.3.1.4), then reports
//! [`DialogEvent::AckTimeout`] so the TU sends BYE.
//!
//! Requests received in the dialog are surfaced as [`DialogEvent`]s (a re-INVITE is an
//! event the gateway absorbs). Requests for unknown dialogs get
//! [`no_dialog_response`] (481).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::message::{
    CallId, HeaderName, Method, NameAddr, Request, Response, SipMessage, StatusCode, Tag, Uri, Via,
};
use crate::transaction::{TimerConfig, Transmit};

/// Identifies a dialog from one side: Call-ID, local tag, remote tag (§12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: CallId,
    /// Our tag.
    pub local_tag: Tag,
    /// The peer's tag.
    pub remote_tag: Tag,
}

impl DialogId {
    /// The id of the dialog an incoming request belongs to (we are the UAS of the
    /// request: local tag = To tag). `None` without both tags.
    pub fn for_incoming_request(req: &Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id()?,
            local_tag: req.to_tag()?,
            remote_tag: req.from_tag()?,
        })
    }

    /// The id of the dialog a response to our request belongs to (local tag = From
    /// tag).
    pub fn for_incoming_response(resp: &Response) -> Option<DialogId> {
        Some(DialogId {
            call_id: resp.call_id()?,
            local_tag: resp.from_tag()?,
            remote_tag: resp.to_tag()?,
        })
    }
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};l={};r={}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// Dialog state (§12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
    /// Ended (BYE, failure of the early dialog, or the 2xx was never ACKed).
    Terminated,
}

/// One route set entry: the raw text as received plus its parsed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Exactly the Record-Route element as received.
    pub raw: String,
    /// Its parsed form.
    pub addr: NameAddr,
}

impl RouteEntry {
    fn is_loose(&self) -> bool {
        self.addr.uri.as_sip().is_some_and(|u| u.is_loose_router())
    }
}

/// What a dialog tells its TU.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogEvent {
    /// A re-INVITE arrived (the remote target was refreshed from its Contact).
    ReInvite(Request),
    /// An UPDATE arrived (RFC 3311; remote target refreshed).
    Update(Request),
    /// BYE arrived: the dialog is terminated; answer it 200.
    Bye(Request),
    /// INFO arrived (RFC 6086).
    Info(Request),
    /// OPTIONS arrived inside the dialog.
    Options(Request),
    /// Any other in-dialog request (NOTIFY, REFER, MESSAGE, PRACK, …).
    Request(Request),
    /// The ACK for our 2xx arrived.
    AckReceived(Request),
    /// Our 2xx was retransmitted for 64·T1 without an ACK (§13.3.1.4): send BYE.
    AckTimeout,
}

/// Why the dialog refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// The response has no To tag, so it cannot create a dialog.
    #[error("response has no to tag")]
    MissingToTag,
    /// The request has no From tag.
    #[error("request has no from tag")]
    MissingFromTag,
    /// A header needed to build the dialog is missing or malformed.
    #[error("missing or invalid {0} header")]
    BadHeader(&'static str),
    /// The response cannot create a dialog (not 1xx-with-tag or 2xx to INVITE).
    #[error("status {0} does not create a dialog")]
    NotDialogCreating(u16),
    /// A request arrived with a CSeq lower than the last one (§12.2.2): answer 500.
    #[error("cseq {got} is not above {last}")]
    OutOfOrder {
        /// The CSeq received.
        got: u32,
        /// The highest CSeq seen.
        last: u32,
    },
    /// The request does not belong to this dialog (Call-ID or tags differ).
    #[error("request does not belong to this dialog")]
    NotThisDialog,
    /// The dialog is terminated.
    #[error("dialog is terminated")]
    Terminated,
}

impl DialogError {
    /// The response status for a request refused with this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            DialogError::OutOfOrder { .. } => StatusCode::SERVER_INTERNAL_ERROR,
            DialogError::NotThisDialog | DialogError::Terminated => StatusCode::CALL_DOES_NOT_EXIST,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[derive(Debug, Clone)]
struct Retransmit2xx {
    response: Response,
    cseq: u32,
    next: Option<Instant>,
    interval: Duration,
    give_up: Instant,
}

/// A UAC or UAS dialog (RFC 3261 §12).
#[derive(Debug)]
pub struct Dialog {
    id: DialogId,
    state: DialogState,
    local_seq: u32,
    remote_seq: Option<u32>,
    local_uri: NameAddr,
    remote_uri: NameAddr,
    remote_target: Uri,
    route_set: Vec<RouteEntry>,
    local_contact: String,
    secure: bool,
    timers: TimerConfig,
    reliable: bool,
    acks: Vec<(u32, Request)>,
    retransmit_2xx: Option<Retransmit2xx>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DialogEvent>,
}

fn route_set(raw: Vec<String>) -> Result<Vec<RouteEntry>, DialogError> {
    raw.into_iter()
        .map(|raw| {
            let addr = NameAddr::parse(&raw).ok_or(DialogError::BadHeader("Record-Route"))?;
            Ok(RouteEntry { raw, addr })
        })
        .collect()
}

fn contact_uri(headers: &crate::message::Headers) -> Option<Uri> {
    headers
        .contacts()
        .and_then(|c| c.addresses().first().map(|a| a.uri.clone()))
}

fn state_for(resp: &Response) -> Result<DialogState, DialogError> {
    match resp.status.as_u16() {
        101..=199 => Ok(DialogState::Early),
        200..=299 => Ok(DialogState::Confirmed),
        c => Err(DialogError::NotDialogCreating(c)),
    }
}

impl Dialog {
    /// The UAC side: `invite` we sent, `resp` (1xx with To tag or 2xx) we received.
    /// The route set is the response's Record-Route reversed; the remote target its
    /// Contact (§12.1.2). `local_contact` is the Contact value we put in requests.
    pub fn uac(
        invite: &Request,
        resp: &Response,
        local_contact: impl Into<String>,
        reliable: bool,
        timers: &TimerConfig,
    ) -> Result<Dialog, DialogError> {
        let state = state_for(resp)?;
        let remote_tag = resp.to_tag().ok_or(DialogError::MissingToTag)?;
        let local_tag = invite.from_tag().ok_or(DialogError::MissingFromTag)?;
        let mut rr = resp.headers.raw_list("Record-Route");
        rr.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: invite.call_id().ok_or(DialogError::BadHeader("Call-ID"))?,
                local_tag,
                remote_tag,
            },
            state,
            local_seq: invite.cseq().ok_or(DialogError::BadHeader("CSeq"))?.seq,
            remote_seq: None,
            local_uri: invite.from().ok_or(DialogError::BadHeader("From"))?,
            remote_uri: resp.to().ok_or(DialogError::BadHeader("To"))?,
            remote_target: contact_uri(&resp.headers).unwrap_or_else(|| invite.uri.clone()),
            route_set: route_set(rr)?,
            local_contact: local_contact.into(),
            secure: invite.uri.scheme() == "sips",
            timers: timers.clone(),
            reliable,
            acks: Vec::new(),
            retransmit_2xx: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The UAS side: `invite` we received, `resp` (1xx with To tag or 2xx) we send.
    /// The route set is the request's Record-Route in order; the remote target its
    /// Contact (§12.1.1).
    pub fn uas(
        invite: &Request,
        resp: &Response,
        local_contact: impl Into<String>,
        reliable: bool,
        timers: &TimerConfig,
    ) -> Result<Dialog, DialogError> {
        let state = state_for(resp)?;
        let local_tag = resp.to_tag().ok_or(DialogError::MissingToTag)?;
        let remote_tag = invite.from_tag().ok_or(DialogError::MissingFromTag)?;
        Ok(Dialog {
            id: DialogId {
                call_id: invite.call_id().ok_or(DialogError::BadHeader("Call-ID"))?,
                local_tag,
                remote_tag,
            },
            state,
            local_seq: 0,
            remote_seq: Some(invite.cseq().ok_or(DialogError::BadHeader("CSeq"))?.seq),
            local_uri: resp.to().ok_or(DialogError::BadHeader("To"))?,
            remote_uri: invite.from().ok_or(DialogError::BadHeader("From"))?,
            remote_target: contact_uri(&invite.headers).ok_or(DialogError::BadHeader("Contact"))?,
            route_set: route_set(invite.headers.raw_list("Record-Route"))?,
            local_contact: local_contact.into(),
            secure: invite.uri.scheme() == "sips",
            timers: timers.clone(),
            reliable,
            acks: Vec::new(),
            retransmit_2xx: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The dialog id.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// The state.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The remote target (where in-dialog requests go, subject to the route set).
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The route set, each entry as received.
    pub fn route_set(&self) -> &[RouteEntry] {
        &self.route_set
    }

    /// The last local CSeq number used.
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    /// The highest remote CSeq number seen.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// Whether the dialog was set up over `sips:`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Where to send the next in-dialog request: the first route's URI if there is a
    /// route set, else the remote target (§12.2.1.1 + §8.1.2).
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map_or(&self.remote_target, |r| &r.addr.uri)
    }

    /// A response to our INVITE (UAC) in this dialog: a 2xx confirms an early
    /// dialog, recomputes its route set and refreshes the remote target; a 3xx-6xx
    /// terminates an early dialog. A 2xx to a re-INVITE or UPDATE refreshes the
    /// remote target (§12.2.1.2).
    pub fn handle_response(&mut self, resp: &Response) {
        let code = resp.status.as_u16();
        let method = resp.cseq().map(|c| c.method);
        match (self.state, code) {
            (DialogState::Early, 200..=299) => {
                self.state = DialogState::Confirmed;
                let mut rr = resp.headers.raw_list("Record-Route");
                rr.reverse();
                if let Ok(rs) = route_set(rr) {
                    self.route_set = rs;
                }
                if let Some(t) = contact_uri(&resp.headers) {
                    self.remote_target = t;
                }
            }
            (DialogState::Early, 300..=699) if method == Some(Method::Invite) => {
                self.state = DialogState::Terminated;
            }
            (DialogState::Confirmed, 200..=299)
                if matches!(method, Some(Method::Invite | Method::Update)) =>
            {
                if let Some(t) = contact_uri(&resp.headers) {
                    self.remote_target = t;
                }
            }
            (DialogState::Confirmed, 481 | 408) => {
                // §12.2.1.2: these end the dialog.
                self.state = DialogState::Terminated;
            }
            _ => {}
        }
    }

    /// Builds an in-dialog request (BYE, re-INVITE, UPDATE, INFO, OPTIONS, …) with
    /// the next local CSeq, Request-URI and Route per §12.2.1.1 (loose or strict
    /// routing), and our Contact on target refresh requests. `via` is the Via the
    /// endpoint puts on it (fresh branch). Sending BYE terminates the dialog.
    pub fn create_request(&mut self, method: Method, via: &Via) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1) & 0x7fff_ffff;
        if method == Method::Bye {
            self.state = DialogState::Terminated;
            self.retransmit_2xx = None;
        }
        self.build(method, self.local_seq, via)
    }

    /// The ACK for a 2xx to our (re-)INVITE with CSeq number `invite_seq`
    /// (§13.2.2.4). It is kept and re-sent for each retransmission of that 2xx
    /// ([`Dialog::ack_for_retransmission`]).
    pub fn create_ack(&mut self, invite_seq: u32, via: &Via) -> Request {
        let ack = self.build(Method::Ack, invite_seq, via);
        self.acks.retain(|(s, _)| *s != invite_seq);
        self.acks.push((invite_seq, ack.clone()));
        if self.acks.len() > 4 {
            self.acks.remove(0);
        }
        ack
    }

    /// The ACK already sent for this 2xx, if it is a retransmission of a 2xx we
    /// acknowledged (the INVITE client transaction passes those up, RFC 6026).
    pub fn ack_for_retransmission(&self, resp: &Response) -> Option<&Request> {
        let cseq = resp.cseq()?;
        if cseq.method != Method::Invite || !resp.status.is_success() {
            return None;
        }
        self.acks
            .iter()
            .find(|(s, _)| *s == cseq.seq)
            .map(|(_, a)| a)
    }

    fn build(&self, method: Method, seq: u32, via: &Via) -> Request {
        let (uri, routes): (Uri, Vec<String>) = match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if first.is_loose() => (
                self.remote_target.clone(),
                self.route_set.iter().map(|r| r.raw.clone()).collect(),
            ),
            Some(first) => {
                // Strict router (§12.2.1.1): its URI becomes the Request-URI (minus
                // parameters not allowed there), the remote target goes last.
                let mut uri = first.addr.uri.clone();
                if let Uri::Sip(u) = &mut uri {
                    u.params.remove("method");
                    u.params.remove("ttl");
                    u.headers.clear();
                }
                let mut rest: Vec<String> = self
                    .route_set
                    .iter()
                    .skip(1)
                    .map(|r| r.raw.clone())
                    .collect();
                rest.push(format!("<{}>", self.remote_target));
                (uri, rest)
            }
        };
        let mut req = Request::new(method.clone(), uri);
        req.headers.push(HeaderName::VIA, via.to_string());
        req.headers.push(HeaderName::MAX_FORWARDS, "70");
        for r in routes {
            req.headers.push(HeaderName::ROUTE, r);
        }
        req.headers
            .push(HeaderName::FROM, self.local_uri.to_string());
        req.headers
            .push(HeaderName::TO, self.remote_uri.to_string());
        req.headers
            .push(HeaderName::CALL_ID, self.id.call_id.as_str());
        req.headers
            .push(HeaderName::CSEQ, format!("{seq} {method}"));
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Refer
        ) {
            req.headers
                .push(HeaderName::CONTACT, self.local_contact.clone());
        }
        req
    }

    /// A request received in this dialog. Checks the CSeq order (§12.2.2), refreshes
    /// the remote target on re-INVITE/UPDATE, ends the dialog on BYE, stops the 2xx
    /// retransmission on a matching ACK, and queues the matching [`DialogEvent`].
    /// On `Err`, answer with [`DialogError::status_code`].
    pub fn handle_request(&mut self, req: Request, _now: Instant) -> Result<(), DialogError> {
        if DialogId::for_incoming_request(&req).as_ref() != Some(&self.id) {
            return Err(DialogError::NotThisDialog);
        }
        let cseq = req.cseq().ok_or(DialogError::BadHeader("CSeq"))?;
        if req.method == Method::Ack {
            let acked = self
                .retransmit_2xx
                .as_ref()
                .is_some_and(|r| r.cseq == cseq.seq);
            if acked {
                self.retransmit_2xx = None;
                self.events.push_back(DialogEvent::AckReceived(req));
            } else {
                debug!(cseq = cseq.seq, "ACK without a pending 2xx absorbed");
            }
            return Ok(());
        }
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        if req.method != Method::Cancel {
            if let Some(last) = self.remote_seq
                && cseq.seq <= last
            {
                return Err(DialogError::OutOfOrder {
                    got: cseq.seq,
                    last,
                });
            }
            self.remote_seq = Some(cseq.seq);
        }
        let event = match req.method {
            Method::Invite => {
                self.refresh_target(&req);
                DialogEvent::ReInvite(req)
            }
            Method::Update => {
                self.refresh_target(&req);
                DialogEvent::Update(req)
            }
            Method::Bye => {
                self.state = DialogState::Terminated;
                self.retransmit_2xx = None;
                DialogEvent::Bye(req)
            }
            Method::Info => DialogEvent::Info(req),
            Method::Options => DialogEvent::Options(req),
            _ => DialogEvent::Request(req),
        };
        self.events.push_back(event);
        Ok(())
    }

    fn refresh_target(&mut self, req: &Request) {
        if let Some(t) = contact_uri(&req.headers) {
            self.remote_target = t;
        }
    }

    /// As UAS: the 2xx to an INVITE (initial or re-INVITE) was just sent; retransmit
    /// it until its ACK arrives (§13.3.1.4): T1 doubling up to T2 over UDP, and give
    /// up after 64·T1 with [`DialogEvent::AckTimeout`] (on reliable transports only
    /// the give-up timer runs).
    pub fn start_2xx_retransmission(&mut self, response: Response, now: Instant) {
        let cseq = response.cseq().map_or(0, |c| c.seq);
        if self.state == DialogState::Early && response.status.is_success() {
            self.state = DialogState::Confirmed;
        }
        self.retransmit_2xx = Some(Retransmit2xx {
            response,
            cseq,
            next: (!self.reliable).then(|| now + self.timers.t1),
            interval: self.timers.t1,
            give_up: now + self.timers.t1x64(),
        });
    }

    /// Whether a 2xx is waiting for its ACK.
    pub fn is_awaiting_ack(&self) -> bool {
        self.retransmit_2xx.is_some()
    }

    /// Fires the 2xx retransmission / give-up timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(r) = self.retransmit_2xx.as_mut() else {
            return;
        };
        if now >= r.give_up {
            self.retransmit_2xx = None;
            self.state = DialogState::Terminated;
            self.events.push_back(DialogEvent::AckTimeout);
            return;
        }
        if let Some(next) = r.next
            && now >= next
        {
            self.transmits.push_back(Transmit {
                message: SipMessage::Response(r.response.clone()),
                retransmission: true,
            });
            r.interval = r.interval.saturating_mul(2).min(self.timers.t2);
            r.next = Some(now + r.interval);
        }
    }

    /// Next message to send (2xx retransmissions).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<DialogEvent> {
        self.events.pop_front()
    }

    /// Earliest timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let r = self.retransmit_2xx.as_ref()?;
        Some(r.next.map_or(r.give_up, |n| n.min(r.give_up)))
    }

    /// Whether the dialog is over.
    pub fn is_terminated(&self) -> bool {
        self.state == DialogState::Terminated
    }
}

/// The 481 for a request that carries a To tag but matches no dialog (§12.2.2).
pub fn no_dialog_response(req: &Request) -> Response {
    req.response(StatusCode::CALL_DOES_NOT_EXIST, None)
}

#[cfg(test)]
mod tests;
