//! A new INVITE: who sends it (a trunk by its address, or a user by digest
//! credentials), where it goes (a registered user's contact, a prefix route or the
//! source's default route), and the start of the call.

use std::sync::Arc;
use std::time::Instant;

use super::Engine;
use crate::call::{
    Call, Env, Failover, Inbound as InboundLeg, Outbound, Parties, Placement, outbound_to,
};
use crate::cdr::{CdrRecord, EndReason, EndedBy};
use crate::config::{MediaMode, SessionTimerConfig};
use crate::metrics::Metrics;
use crate::policy::{
    AddrText, CallOverrides, CallStartDecision, CallStartView, RouteDecision, RouteView,
    route_headers,
};
use crate::registrar::digest::Verdict;
use crate::registrar::location::Target;
use crate::session_timer::{UasOutcome, negotiate};
use crate::sip::{DigestCredentials, HeaderName, Host, Reply, Request, SipUri, Uri};
use crate::transaction::{Path, ServerTxId};

/// Who a call comes from.
enum Source {
    Trunk(usize),
    /// A user who proved its password (digest) on this INVITE.
    User(Arc<str>),
}

/// Where a call goes.
enum Destination {
    /// Trunks, tried in order (each one's gateways in turn).
    Trunks(Vec<usize>),
    /// A registered user's best contact.
    Contact { user: Arc<str>, target: Arc<Target> },
}

/// Who a refused call was between, for its CDR.
struct Unplaced {
    caller: String,
    callee: String,
    trunk_in: Arc<str>,
    trunk_out: Option<Arc<str>>,
}

/// What a `route` policy rewrote for the B leg.
#[derive(Default)]
struct Rewrite {
    callee: Option<String>,
    caller: Option<String>,
}

/// A call that cannot be placed: what the caller is answered, and the CDR's
/// end reason.
type Unroutable = (Reply, EndReason);

impl Engine {
    pub(super) fn on_invite(&mut self, now: Instant, tx: ServerTxId, request: Request, path: Path) {
        let refusal = if self.draining {
            Some(Reply::new(503).reason("Shutting Down").retry_after(30))
        } else {
            self.uas_checks(&request)
                .or_else(|| Self::content_checks(&request))
        };
        if let Some(refusal) = refusal {
            return self.reply(now, tx, &request, refusal);
        }
        if request.max_forwards == 0 {
            return self.reply(now, tx, &request, Reply::new(483));
        }
        let a_key = (
            request.call_id.clone(),
            request.from.tag().unwrap_or_default().to_string(),
        );
        if self.by_a.contains_key(&a_key) {
            // §8.2.2.2: the same request arriving again on another path (a new
            // branch) is a merged request, not a second call.
            return self.reply(now, tx, &request, Reply::new(482).reason("Merged Request"));
        }
        let Some(source) = self.admit(now, tx, &request, path) else {
            return;
        };
        let a_timer = self.timer_of(&source);
        let negotiated = negotiate::as_uas(&request, &a_timer);
        if let UasOutcome::TooSmall { min_se } = negotiated {
            // RFC 4028 §9: the caller retries with at least our Min-SE.
            let too_small = Reply::new(422).with_header(HeaderName::MinSe, min_se.to_string());
            return self.reply(now, tx, &request, too_small);
        }
        let callee = request.uri.user_part().unwrap_or_default();
        let caller = request.from.uri.user_part().unwrap_or_default();
        let trunk_in = self.name_of(&source);
        let policy_in = match source {
            Source::Trunk(_) => Some(trunk_in.clone()),
            Source::User(_) => None,
        };
        let (routed, rewrite) = match self.ask_route(
            &request,
            path,
            &trunk_in,
            policy_in.as_deref(),
        ) {
            Ok(routed) => routed,
            Err(refusal) => {
                let status = refusal.status;
                tracing::info!(call_id = %request.call_id, %callee, %trunk_in, status, "call refused by the route policy");
                self.reply(now, tx, &request, refusal);
                let unplaced = Unplaced {
                    caller,
                    callee,
                    trunk_in,
                    trunk_out: None,
                };
                return self.record_unplaced(
                    now,
                    &request,
                    unplaced,
                    EndReason::PolicyRejected,
                    status,
                );
            }
        };
        let resolved = match routed {
            Some(trunks) => Ok(Destination::Trunks(trunks)),
            None => self.resolve(&source, &callee),
        };
        let destination = match resolved {
            Ok(d) => d,
            Err((reply, end_reason)) => {
                let status = reply.status;
                tracing::info!(call_id = %request.call_id, %callee, %trunk_in, status, "call not placed");
                self.reply(now, tx, &request, reply);
                let unplaced = Unplaced {
                    caller,
                    callee,
                    trunk_in,
                    trunk_out: None,
                };
                return self.record_unplaced(now, &request, unplaced, end_reason, status);
            }
        };
        let relay = self.relay_wanted(&source, &destination, &request, path);
        let (mut outbound, failover) = match self.outbound(now, &destination, &callee) {
            Ok(o) => o,
            Err(refusal) => return self.reply(now, tx, &request, refusal),
        };
        outbound.callee = rewrite.callee;
        outbound.caller = rewrite.caller;
        let trunk_out: Arc<str> = match (&destination, &failover) {
            (_, Some(f)) => f.current().trunk.clone(),
            (Destination::Trunks(t), None) => self.config.trunks[t[0]].name.clone(),
            (Destination::Contact { user, .. }, None) => format!("user:{user}").into(),
        };
        let policy_out = match destination {
            Destination::Trunks(_) => Some(trunk_out.clone()),
            Destination::Contact { .. } => None,
        };
        let source = AddrText::new(path.remote);
        let view = CallStartView {
            call_id: &request.call_id,
            trunk_in: &trunk_in,
            trunk_out: &trunk_out,
            caller: &caller,
            callee: &callee,
            source: source.as_str(),
        };
        let overrides = match self.call_start(&view, policy_in.as_deref(), policy_out.as_deref()) {
            Ok(overrides) => overrides,
            Err(refusal) => {
                let status = refusal.status;
                tracing::info!(call_id = %request.call_id, %callee, %trunk_in, status, reason = ?refusal.reason, "call refused by policy");
                self.reply(now, tx, &request, refusal);
                let unplaced = Unplaced {
                    caller,
                    callee,
                    trunk_in,
                    trunk_out: Some(trunk_out),
                };
                return self.record_unplaced(
                    now,
                    &request,
                    unplaced,
                    EndReason::PolicyRejected,
                    status,
                );
            }
        };
        let mut a_timer = a_timer;
        self.apply_overrides(
            [&mut a_timer, &mut outbound.timer],
            &overrides,
            &request.call_id,
        );
        // The interval on the A leg follows an overridden `ttl`; Min-SE (and so
        // the 422 above) is not something a policy changes.
        let negotiated = if overrides.ttl.is_some() {
            negotiate::as_uas(&request, &a_timer)
        } else {
            negotiated
        };
        let a_advertised = self
            .sockets
            .iter()
            .find(|s| s.bind == path.local && s.proto == path.proto)
            .map_or(path.local, |s| s.advertised);
        let key = self.next_key;
        self.next_key += 1;
        let parties = Parties {
            caller,
            callee,
            trunk_in,
            trunk_out,
            policy_in,
            policy_out,
        };
        let mut env = Env {
            tx: &mut self.tx,
            ids: &mut self.ids,
            cdrs: &mut self.cdrs,
            settings: &self.settings,
            policies: &self.policies,
            metrics: &self.metrics,
            media: self.media.as_mut(),
            sockets: &self.sockets,
        };
        let inbound = InboundLeg {
            tx,
            invite: request,
            path,
            advertised: a_advertised,
            timer: a_timer,
            negotiated,
        };
        let placement = Placement {
            outbound,
            failover,
            relay,
        };
        let call = Call::start(now, key, inbound, parties, placement, &mut env);
        self.metrics.call_placed();
        self.by_b.insert(call.b_call_id().to_string(), key);
        self.by_a.insert(a_key, key);
        self.calls.insert(key, Box::new(call));
        self.with_call(key, |_, _| {});
    }

    /// Asks the `route` policy of the trunk the call comes from (the default
    /// policy for a user's call) where it goes: trunks by name, in order,
    /// with a new callee or caller for the B leg; `None` when it leaves the
    /// call to the configured routes (as it does when it names a trunk the
    /// config does not have, which is reported as a policy error).
    fn ask_route(
        &self,
        request: &Request,
        path: Path,
        trunk_in: &str,
        policy_in: Option<&str>,
    ) -> Result<(Option<Vec<usize>>, Rewrite), Reply> {
        let callee = request.uri.user_part().unwrap_or_default();
        let caller = request.from.uri.user_part().unwrap_or_default();
        let headers = route_headers(&request.headers);
        let source = AddrText::new(path.remote);
        let view = RouteView {
            call_id: &request.call_id,
            trunk_in,
            caller: &caller,
            callee: &callee,
            source: source.as_str(),
            headers: &headers,
        };
        match self.policies.for_trunk(policy_in).route(&view) {
            RouteDecision::Default => Ok((None, Rewrite::default())),
            RouteDecision::Reject { status, reason } => Err(Reply::new(status).reason(reason)),
            RouteDecision::Route {
                trunks,
                callee,
                caller,
            } => {
                let found: Vec<Option<usize>> = trunks
                    .iter()
                    .map(|t| self.config.outbound_trunk(t))
                    .collect();
                let rewrite = Rewrite { callee, caller };
                if let Some(i) = found.iter().position(Option::is_none) {
                    Metrics::count(&self.metrics.policy_errors);
                    tracing::error!(call_id = %request.call_id, trunk = %trunks[i], "route policy named a trunk that is not configured to take calls: the configured routes apply");
                    return Ok((None, rewrite));
                }
                Ok((Some(found.into_iter().flatten().collect()), rewrite))
            }
        }
    }

    /// Asks the policies of the trunk the call comes from, then of the one it
    /// goes to: the first refusal wins; overrides of both apply, the outbound
    /// trunk's where both set one.
    fn call_start(
        &self,
        view: &CallStartView<'_>,
        policy_in: Option<&str>,
        policy_out: Option<&str>,
    ) -> Result<CallOverrides, Reply> {
        let mut asked = vec![policy_in];
        if !self.policies.same(policy_in, policy_out) {
            asked.push(policy_out);
        }
        let mut merged = CallOverrides::default();
        for trunk in asked {
            match self.policies.for_trunk(trunk).call_start(view) {
                CallStartDecision::Reject { status, reason } => {
                    return Err(Reply::new(status).reason(reason));
                }
                CallStartDecision::Accept(o) => {
                    merged = CallOverrides {
                        ttl: o.ttl.or(merged.ttl),
                        update_segment: o.update_segment.or(merged.update_segment),
                        refresh_method: o.refresh_method.or(merged.refresh_method),
                        no_timer_max_duration: o
                            .no_timer_max_duration
                            .or(merged.no_timer_max_duration),
                    };
                }
            }
        }
        Ok(merged)
    }

    /// Applies a policy's overrides to both legs' settings if they pass the
    /// config's own checks on both; otherwise (reported once) neither changes.
    fn apply_overrides(
        &self,
        timers: [&mut SessionTimerConfig; 2],
        overrides: &CallOverrides,
        call_id: &str,
    ) {
        if *overrides == CallOverrides::default() {
            return;
        }
        let changed = timers.each_ref().map(|t| SessionTimerConfig {
            ttl: overrides.ttl.unwrap_or(t.ttl),
            update_segment: overrides.update_segment.unwrap_or(t.update_segment),
            refresh_method: overrides.refresh_method.unwrap_or(t.refresh_method),
            no_timer_max_duration: overrides
                .no_timer_max_duration
                .unwrap_or(t.no_timer_max_duration),
            ..**t
        });
        let problems: Vec<String> = changed
            .iter()
            .flat_map(|t| t.problems("session_timer"))
            .map(|(k, m)| format!("{k}: {m}"))
            .collect();
        if problems.is_empty() {
            for (timer, changed) in timers.into_iter().zip(changed) {
                *timer = changed;
            }
            return;
        }
        Metrics::count(&self.metrics.policy_errors);
        tracing::error!(%call_id, ?overrides, problems = %problems.join("; "), "call_start overrides refused: the trunks' settings apply");
    }

    /// The CDR of a call that was refused before any leg was set up.
    fn record_unplaced(
        &mut self,
        now: Instant,
        request: &Request,
        unplaced: Unplaced,
        end_reason: EndReason,
        status: u16,
    ) {
        Metrics::count(&self.metrics.calls_started);
        self.cdrs.push_back(CdrRecord {
            id: crate::ids::cdr_id_text(self.ids.cdr_id()),
            call_id: request.call_id.clone(),
            b_call_id: None,
            caller: unplaced.caller,
            callee: unplaced.callee,
            trunk_in: unplaced.trunk_in,
            trunk_out: unplaced.trunk_out,
            start: now,
            answer: None,
            end: now,
            end_reason,
            ended_by: EndedBy::Switch,
            sip_code: Some(status),
            refresh_failure: None,
            extra: Vec::new(),
            media: None,
            attempts: Vec::new(),
        });
    }

    /// A trunk admits the source address, or a configured user proves its
    /// password with digest credentials (RFC 3261 §22.3: 407 and
    /// Proxy-Authorization). Answers the request itself when it is not admitted.
    fn admit(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: &Request,
        path: Path,
    ) -> Option<Source> {
        match self.admission(now, request, path) {
            Ok(source) => Some(source),
            Err(refusal) => {
                self.reply(now, tx, request, refusal);
                None
            }
        }
    }

    /// Who `request` comes from, or how it is refused (403, or a 407
    /// challenge).
    fn admission(&mut self, now: Instant, request: &Request, path: Path) -> Result<Source, Reply> {
        if let Some(trunk) = self.config.inbound_trunk(path.remote.ip()).or_else(|| {
            // A call the carrier sends to the contact Vigil registered with it.
            let callee = request.uri.user_part().unwrap_or_default();
            self.config.registered_trunk(path.remote.ip(), &callee)
        }) {
            return Ok(Source::Trunk(trunk));
        }
        let from_user = request.from.uri.user_part().unwrap_or_default();
        let (Some(users), Some(user)) = (self.users.as_mut(), self.config.user(&from_user)) else {
            return Err(Reply::new(403).reason("Not An Inbound Trunk"));
        };
        let auth = &mut users.auth;
        let source = path.remote.ip();
        let too_many = || Reply::new(403).reason("Too Many Failures");
        if auth.is_blocked(now, source) {
            return Err(too_many());
        }
        let credentials = request
            .headers
            .get(&HeaderName::ProxyAuthorization)
            .and_then(|v| DigestCredentials::parse(v).ok());
        let verdict = match &credentials {
            None => None,
            Some(c) if c.username != *user.name => {
                Some(Verdict::Rejected("username is not the caller"))
            }
            Some(c) => {
                let fingerprint = auth.fingerprint(request);
                // The INVITE's server transaction absorbs its retransmissions.
                Some(
                    match auth.verify(
                        now,
                        "INVITE",
                        c,
                        &user.password,
                        &user.digest_algorithms,
                        fingerprint,
                    ) {
                        Verdict::Retransmission => Verdict::Rejected("replayed nonce"),
                        verdict => verdict,
                    },
                )
            }
        };
        if verdict == Some(Verdict::Accepted) {
            return Ok(Source::User(user.name.clone()));
        }
        if let Some(Verdict::Rejected(why)) = verdict {
            auth.note_failure(now, source);
            tracing::warn!(source = %path.remote, user = %user.name, reason = why, "INVITE credentials refused");
            if auth.is_blocked(now, source) {
                return Err(too_many());
            }
        }
        let challenge = auth
            .challenges(
                now,
                verdict == Some(Verdict::Stale),
                &user.digest_algorithms,
            )
            .iter()
            .fold(Reply::new(407), |r, c| {
                r.with_header(HeaderName::ProxyAuthenticate, c.to_string())
            });
        Err(challenge)
    }

    /// Whether the call's media goes through rtpengine: `media:` names one,
    /// and the trunk or user on either side asks for relay. A user who says
    /// nothing is relayed when it is behind a NAT: its Contact names another
    /// address than the one its messages come from (its SDP then names an
    /// address nobody can send to).
    fn relay_wanted(
        &self,
        source: &Source,
        destination: &Destination,
        request: &Request,
        path: Path,
    ) -> bool {
        if self.config.media.is_none() {
            return false;
        }
        let behind_nat = |contact: Option<SipUri>, seen_from: std::net::SocketAddr| {
            contact
                .and_then(|c| c.socket_addr())
                .is_none_or(|named| named != seen_from)
        };
        let user_relays = |name: &str, nat: bool| match self.config.user(name).and_then(|u| u.media)
        {
            Some(mode) => mode == MediaMode::Relay,
            None => nat,
        };
        let caller_side = match source {
            Source::Trunk(t) => self.config.trunks[*t].media == MediaMode::Relay,
            Source::User(name) => {
                let contact = request.contact().and_then(|c| c.uri.as_sip().cloned());
                user_relays(name, behind_nat(contact, path.remote))
            }
        };
        let callee_side = match destination {
            Destination::Trunks(t) => t
                .first()
                .is_some_and(|&t| self.config.trunks[t].media == MediaMode::Relay),
            Destination::Contact { user, target } => {
                let contact = target.parsed_uri().and_then(|u| u.as_sip().cloned());
                user_relays(user, behind_nat(contact, target.received))
            }
        };
        caller_side || callee_side
    }

    fn timer_of(&self, source: &Source) -> SessionTimerConfig {
        match source {
            Source::Trunk(t) => self.config.trunks[*t].session_timer,
            Source::User(_) => self.config.session_timer,
        }
    }

    fn name_of(&self, source: &Source) -> Arc<str> {
        match source {
            Source::Trunk(t) => self.config.trunks[*t].name.clone(),
            Source::User(u) => format!("user:{u}").into(),
        }
    }

    /// A configured user is reached at its best registered contact (480 when it
    /// has none); any other number by the longest prefix route, else the source's
    /// default route (404 without one).
    fn resolve(&self, source: &Source, callee: &str) -> Result<Destination, Unroutable> {
        if let Some(user) = self.config.user(callee)
            && let Some(location) = self.users.as_ref().map(|u| &u.location)
        {
            return match location.best(callee) {
                Some(target) => Ok(Destination::Contact {
                    user: user.name.clone(),
                    target,
                }),
                None => Err((
                    Reply::new(480).reason("Not Registered"),
                    EndReason::Rejected,
                )),
            };
        }
        let default = match source {
            Source::Trunk(t) => self.config.trunks[*t].route_to,
            Source::User(u) => self.config.user(u).and_then(|u| u.route_to),
        };
        match self.config.route_prefix(callee) {
            Some(trunks) => Ok(Destination::Trunks(trunks.to_vec())),
            None => default
                .map(|t| Destination::Trunks(vec![t]))
                .ok_or_else(|| (Reply::new(404).reason("No Route"), EndReason::NoRoute)),
        }
    }

    /// Where and how the B-leg INVITE goes: a call to trunks goes to the
    /// first gateway of its plan, and may fail over to the others.
    fn outbound(
        &mut self,
        now: Instant,
        destination: &Destination,
        callee: &str,
    ) -> Result<(Outbound, Option<Failover>), Reply> {
        match destination {
            Destination::Trunks(trunks) => {
                let sockets = &self.sockets;
                let own = |addr| {
                    sockets
                        .iter()
                        .any(|s| s.bind == addr || s.advertised == addr)
                };
                let plan = self.gateways.plan(trunks, &mut self.ids, own);
                let Some(failover) = Failover::new(plan, now, self.config.sip.max_attempts) else {
                    let ours = trunks
                        .iter()
                        .flat_map(|&t| self.gateways.of_trunk(t))
                        .any(|g| own(g.addr));
                    return Err(if ours {
                        Reply::new(482).reason("Loop Detected")
                    } else {
                        Reply::new(503).reason("No Gateway")
                    });
                };
                let outbound = outbound_to(failover.current(), &self.sockets)
                    .ok_or_else(|| Reply::new(503).reason("No Socket For Trunk"))?;
                Ok((outbound, Some(failover)))
            }
            Destination::Contact { target, .. } => {
                let advertised = self
                    .sockets
                    .iter()
                    .find(|s| s.bind == target.local && s.proto == target.proto)
                    .map_or(target.local, |s| s.advertised);
                let domain = self
                    .config
                    .registrar
                    .as_ref()
                    .map_or("", |r| r.domain.as_str());
                // RFC 3261 §16.5: the Request-URI is the registered contact, sent
                // to where the REGISTER came from (the NAT's public side).
                let outbound = Outbound {
                    path: target.flow(),
                    advertised,
                    timer: self.config.session_timer,
                    request_uri: Some(
                        target
                            .parsed_uri()
                            .ok_or_else(|| Reply::new(500).reason("Unusable Contact"))?,
                    ),
                    to: Some(Uri::Sip(SipUri::new(
                        Some(callee.to_string()),
                        Host::Domain(domain.to_string()),
                        None,
                    ))),
                    invite_timeout: None,
                    callee: None,
                    caller: None,
                    auth: None,
                };
                Ok((outbound, None))
            }
        }
    }
}
