//! The location service (RFC 3261 §10.3): each address-of-record's contacts,
//! with the address their REGISTER really came from (the NAT's public side,
//! RFC 3581), their expiry, and the Call-ID/CSeq that orders updates.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::sip::Protocol;
use crate::sip::{HeaderName, NameAddr, Reply, Request, Uri};
use crate::transaction::Path;

/// A contact's handle.
pub type ContactId = u64;

/// One registered contact. Kept small: a registrar holds 100,000 of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub id: ContactId,
    /// The user (address-of-record's user part).
    pub aor: Arc<str>,
    /// Where and how to reach it, shared with the call workers' view.
    pub contact: Arc<Target>,
    pub expires: Instant,
    pub call_id: Box<str>,
    pub cseq: u32,
}

/// A change to persist, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Box<Binding>),
    Remove { aor: Arc<str>, uri: String },
}

/// Why a REGISTER cannot be applied: the answer it gets.
fn refusal(status: u16, reason: &'static str) -> Reply {
    Reply::new(status).reason(reason)
}

/// `Retry-After` of a `503` from a full registrar: contacts expire and
/// unregister over minutes, so a client should not come back at once.
pub const FULL_RETRY_AFTER: u32 = 60;

/// Registration limits from `registrar:`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_expires: u32,
    pub max_expires: u32,
    pub max_contacts: u32,
    /// Contacts of every user together (`limits.max_registrations`).
    pub max_total: Option<u32>,
}

/// A registered contact as calls and keep-alives need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Contact URI as registered (Vigil's own printing of it, so two
    /// registrations of the same URI compare equal).
    pub uri: Box<str>,
    /// Where the REGISTER came from: where calls and keep-alives go.
    pub received: SocketAddr,
    /// The local socket it came in on: the one that answers.
    pub local: SocketAddr,
    /// The transport it registered over: over TCP or TLS, `received` and
    /// `local` name its connection (RFC 5626's flow), the only way to it.
    pub proto: Protocol,
    /// `q` preference, 0..=1000 (thousandths).
    pub q: u16,
    /// When the binding was last written.
    pub updated: Instant,
}

impl Target {
    pub fn new(uri: &Uri, flow: Path, q: u16, updated: Instant) -> Target {
        Target {
            uri: uri.to_string().into_boxed_str(),
            received: flow.remote,
            local: flow.local,
            proto: flow.proto,
            q,
            updated,
        }
    }

    /// Where calls and keep-alives to it go.
    pub fn flow(&self) -> Path {
        Path {
            local: self.local,
            remote: self.received,
            proto: self.proto,
        }
    }

    /// The contact URI, parsed (it was valid when it was registered).
    pub fn parsed_uri(&self) -> Option<Uri> {
        Uri::parse(&self.uri).ok()
    }
}

/// A read-mostly view of every user's reachable contacts, written only by the
/// registrar and read by the call workers when an INVITE is for a user.
#[derive(Debug, Default)]
pub struct LocationView {
    targets: RwLock<HashMap<Arc<str>, Vec<Arc<Target>>>>,
}

impl LocationView {
    /// The best contact of `user`: highest q, then most recently registered.
    pub fn best(&self, user: &str) -> Option<Arc<Target>> {
        // A poisoned lock means a panic while writing; the map itself is intact.
        let map = self.targets.read().unwrap_or_else(|e| e.into_inner());
        map.get(user)?
            .iter()
            .max_by_key(|t| (t.q, t.updated))
            .cloned()
    }

    fn set(&self, user: &Arc<str>, targets: Vec<Arc<Target>>) {
        let mut map = self.targets.write().unwrap_or_else(|e| e.into_inner());
        if targets.is_empty() {
            map.remove(user);
        } else {
            map.insert(user.clone(), targets);
        }
    }

    pub fn contacts(&self) -> usize {
        let map = self.targets.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
    }

    /// Every registered contact, by user, as an operator sees it.
    pub fn snapshot(&self, now: Instant) -> Vec<RegistrationSnapshot> {
        let map = self.targets.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<RegistrationSnapshot> = map
            .iter()
            .flat_map(|(user, targets)| {
                targets.iter().map(move |t| RegistrationSnapshot {
                    user: user.to_string(),
                    contact: t.uri.to_string(),
                    received: t.received.to_string(),
                    socket: t.local.to_string(),
                    q: f64::from(t.q) / 1000.0,
                    registered_ago: now.saturating_duration_since(t.updated).as_secs_f64(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.user.cmp(&b.user).then(a.contact.cmp(&b.contact)));
        out
    }
}

/// A registered contact, for `vigil ctl registrations`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegistrationSnapshot {
    pub user: String,
    pub contact: String,
    /// Where the REGISTER came from (where calls and keep-alives go).
    pub received: String,
    /// Vigil's socket it came in on.
    pub socket: String,
    pub q: f64,
    /// Seconds since the contact last registered.
    pub registered_ago: f64,
}

/// Every binding, by AoR, with their expiries.
#[derive(Debug, Default)]
pub struct Location {
    bindings: HashMap<ContactId, Binding>,
    by_aor: HashMap<Arc<str>, Vec<ContactId>>,
    expiry: BTreeSet<(Instant, ContactId)>,
    next_id: ContactId,
    view: Arc<LocationView>,
}

impl Location {
    pub fn new(view: Arc<LocationView>) -> Location {
        Location {
            view,
            ..Location::default()
        }
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn get(&self, id: ContactId) -> Option<&Binding> {
        self.bindings.get(&id)
    }

    /// The bindings registered on `flow` (a connection that closed).
    pub fn on_flow(&self, flow: Path) -> Vec<ContactId> {
        self.bindings
            .values()
            .filter(|b| b.contact.flow() == flow)
            .map(|b| b.id)
            .collect()
    }

    pub fn of(&self, aor: &str) -> impl Iterator<Item = &Binding> + '_ {
        self.by_aor
            .get(aor)
            .into_iter()
            .flatten()
            .filter_map(|id| self.bindings.get(id))
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(at, _)| *at)
    }

    fn publish(&self, aor: &Arc<str>) {
        let targets = self.of(aor).map(|b| b.contact.clone()).collect();
        self.view.set(aor, targets);
    }

    /// Adds or replaces a binding (also used when loading from the store).
    pub fn insert(&mut self, mut binding: Binding) -> ContactId {
        let existing = self
            .of(&binding.aor)
            .find(|b| b.contact.uri == binding.contact.uri)
            .map(|b| b.id);
        if let Some(id) = existing {
            self.remove(id);
        }
        self.next_id += 1;
        binding.id = self.next_id;
        let id = binding.id;
        let aor = binding.aor.clone();
        self.expiry.insert((binding.expires, id));
        self.by_aor.entry(aor.clone()).or_default().push(id);
        self.bindings.insert(id, binding);
        self.publish(&aor);
        id
    }

    pub fn remove(&mut self, id: ContactId) -> Option<Binding> {
        let binding = self.bindings.remove(&id)?;
        self.expiry.remove(&(binding.expires, id));
        if let Some(ids) = self.by_aor.get_mut(&binding.aor) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_aor.remove(&binding.aor);
            }
        }
        self.publish(&binding.aor);
        Some(binding)
    }

    /// Removes every binding expired at `now` (nobody has to ask).
    pub fn expire(&mut self, now: Instant) -> Vec<Binding> {
        let mut gone = Vec::new();
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            if let Some(b) = self.remove(id) {
                gone.push(b);
            }
        }
        gone
    }

    /// [`Location::register_over`] for a REGISTER over UDP.
    #[cfg(test)]
    pub fn register(
        &mut self,
        now: Instant,
        aor: &Arc<str>,
        request: &Request,
        received: SocketAddr,
        local: SocketAddr,
        limits: Limits,
    ) -> Result<Vec<Change>, Reply> {
        self.register_over(now, aor, request, Path::udp(local, received), limits)
    }

    /// Applies a REGISTER for `aor` that arrived on `flow` (RFC 3261 §10.3
    /// steps 6–8). Returns the changes to persist.
    pub fn register_over(
        &mut self,
        now: Instant,
        aor: &Arc<str>,
        request: &Request,
        flow: Path,
        limits: Limits,
    ) -> Result<Vec<Change>, Reply> {
        let default_expires = match request.headers.get(&HeaderName::Expires) {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| refusal(400, "Invalid Expires"))?,
            None => 3600,
        };
        let contacts: Vec<&str> = request.headers.list(&HeaderName::Contact).collect();
        // §10.3 step 6: "*" only alone and with Expires: 0.
        if contacts.contains(&"*") {
            if contacts.len() != 1 || default_expires != 0 {
                return Err(refusal(400, "Wildcard Contact Needs Expires 0"));
            }
            let ids: Vec<ContactId> = self.of(aor).map(|b| b.id).collect();
            let mut changes = Vec::new();
            for id in ids {
                if let Some(b) = self.bindings.get(&id)
                    && *b.call_id == *request.call_id
                    && request.cseq.seq <= b.cseq
                {
                    return Err(refusal(500, "Out Of Order Request"));
                }
                if let Some(b) = self.remove(id) {
                    changes.push(Change::Remove {
                        aor: b.aor,
                        uri: b.contact.uri.to_string(),
                    });
                }
            }
            return Ok(changes);
        }
        // Parse and check everything before changing anything.
        let mut wanted = Vec::with_capacity(contacts.len());
        for c in contacts {
            let na = NameAddr::parse(c).map_err(|_| refusal(400, "Invalid Contact"))?;
            let expires = match na.param("expires").and_then(|p| p.value.as_deref()) {
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| refusal(400, "Invalid Contact Expires"))?,
                None => default_expires,
            };
            if expires != 0 && expires < u64::from(limits.min_expires) {
                return Err(refusal(423, "Interval Too Brief")
                    .with_header(HeaderName::MinExpires, limits.min_expires.to_string()));
            }
            let q = na
                .param("q")
                .and_then(|p| p.value.as_deref())
                .and_then(|v| v.parse::<f32>().ok())
                .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16);
            wanted.push((na.uri, expires.min(u64::from(limits.max_expires)), q));
        }
        let printed: Vec<String> = wanted.iter().map(|(uri, _, _)| uri.to_string()).collect();
        for uri in &printed {
            if let Some(b) = self.of(aor).find(|b| *b.contact.uri == **uri)
                && *b.call_id == *request.call_id
                && request.cseq.seq <= b.cseq
            {
                return Err(refusal(500, "Out Of Order Request"));
            }
        }
        let new_ones = wanted
            .iter()
            .zip(&printed)
            .filter(|((_, exp, _), uri)| {
                *exp > 0 && !self.of(aor).any(|b| *b.contact.uri == ***uri)
            })
            .count();
        if self.of(aor).count() + new_ones > limits.max_contacts as usize {
            return Err(refusal(403, "Too Many Contacts"));
        }
        // Refreshes and removals add nothing, so they pass a full registrar.
        if let Some(max) = limits.max_total
            && new_ones > 0
            && self.len() + new_ones > max as usize
        {
            return Err(refusal(503, "Registrar Full").retry_after(FULL_RETRY_AFTER));
        }
        let mut changes = Vec::new();
        for ((uri, expires, q), printed) in wanted.into_iter().zip(printed) {
            if expires == 0 {
                let id = self
                    .of(aor)
                    .find(|b| *b.contact.uri == *printed)
                    .map(|b| b.id);
                if let Some(b) = id.and_then(|id| self.remove(id)) {
                    changes.push(Change::Remove {
                        aor: b.aor,
                        uri: printed,
                    });
                }
                continue;
            }
            let binding = Binding {
                id: 0,
                aor: aor.clone(),
                contact: Arc::new(Target::new(&uri, flow, q, now)),
                expires: now + Duration::from_secs(expires),
                call_id: request.call_id.as_str().into(),
                cseq: request.cseq.seq,
            };
            let id = self.insert(binding);
            if let Some(b) = self.bindings.get(&id) {
                changes.push(Change::Upsert(Box::new(b.clone())));
            }
        }
        Ok(changes)
    }
}

/// The Contact values of a 200 OK to REGISTER: every current binding with the
/// seconds it has left (RFC 3261 §10.3 step 8).
pub fn contact_headers<'a>(
    bindings: impl Iterator<Item = &'a Binding>,
    now: Instant,
) -> Vec<String> {
    bindings
        .map(|b| {
            format!(
                "<{}>;expires={}",
                b.contact.uri,
                b.expires.saturating_duration_since(now).as_secs()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Message, decode};

    const LIMITS: Limits = Limits {
        min_expires: 60,
        max_expires: 3600,
        max_contacts: 2,
        max_total: None,
    };

    fn register(call_id: &str, cseq: u32, contact_and_expires: &str) -> Request {
        let text = format!(
            "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK{cseq}\r\n\
From: <sip:1001@vigil.local>;tag=r\r\nTo: <sip:1001@vigil.local>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
{contact_and_expires}\r\n"
        );
        match decode(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn register_refresh_and_expire() {
        let t0 = Instant::now();
        let view = Arc::new(LocationView::default());
        let mut loc = Location::new(view.clone());
        let aor: Arc<str> = "1001".into();
        let changes = loc
            .register(
                t0,
                &aor,
                &register(
                    "c1",
                    1,
                    "Contact: <sip:1001@10.0.0.5:5060>\r\nExpires: 120\r\n",
                ),
                addr("203.0.113.5:40000"),
                addr("192.0.2.1:5060"),
                LIMITS,
            )
            .expect("registered");
        assert_eq!(changes.len(), 1);
        let target = view.best("1001").expect("reachable");
        assert_eq!(
            target.received,
            addr("203.0.113.5:40000"),
            "the NAT's public side"
        );
        assert_eq!(loc.next_expiry(), Some(t0 + Duration::from_secs(120)));
        // Refresh with a higher CSeq; an older one is refused.
        loc.register(
            t0,
            &aor,
            &register("c1", 2, "Contact: <sip:1001@10.0.0.5:5060>;expires=300\r\n"),
            addr("203.0.113.5:40000"),
            addr("192.0.2.1:5060"),
            LIMITS,
        )
        .expect("refreshed");
        assert_eq!(loc.len(), 1);
        let stale = loc.register(
            t0,
            &aor,
            &register("c1", 2, "Contact: <sip:1001@10.0.0.5:5060>\r\n"),
            addr("203.0.113.5:40000"),
            addr("192.0.2.1:5060"),
            LIMITS,
        );
        assert_eq!(stale.map_err(|r| r.status), Err(500));
        assert!(loc.expire(t0 + Duration::from_secs(299)).is_empty());
        assert_eq!(
            loc.expire(t0 + Duration::from_secs(300)).len(),
            1,
            "expired without anyone asking"
        );
        assert_eq!(view.best("1001"), None);
    }

    #[test]
    fn expiry_bounds_and_wildcard() {
        let t0 = Instant::now();
        let mut loc = Location::new(Arc::default());
        let aor: Arc<str> = "1001".into();
        let brief = loc.register(
            t0,
            &aor,
            &register("c2", 1, "Contact: <sip:a@10.0.0.5>;expires=30\r\n"),
            addr("203.0.113.5:1"),
            addr("192.0.2.1:5060"),
            LIMITS,
        );
        assert_eq!(
            brief.map_err(|r| (
                r.status,
                r.header(&HeaderName::MinExpires).map(str::to_string)
            )),
            Err((423, Some("60".to_string())))
        );
        loc.register(
            t0,
            &aor,
            &register("c2", 2, "Contact: <sip:a@10.0.0.5>;expires=99999\r\n"),
            addr("203.0.113.5:1"),
            addr("192.0.2.1:5060"),
            LIMITS,
        )
        .expect("capped");
        assert_eq!(
            loc.next_expiry(),
            Some(t0 + Duration::from_secs(3600)),
            "bounded by max_expires"
        );
        loc.register(
            t0,
            &aor,
            &register("c3", 1, "Contact: <sip:b@10.0.0.6>\r\n"),
            addr("203.0.113.6:1"),
            addr("192.0.2.1:5060"),
            LIMITS,
        )
        .expect("second contact");
        let third = loc.register(
            t0,
            &aor,
            &register("c4", 1, "Contact: <sip:c@10.0.0.7>\r\n"),
            addr("203.0.113.7:1"),
            addr("192.0.2.1:5060"),
            LIMITS,
        );
        assert_eq!(third.map_err(|r| r.status), Err(403), "max_contacts");
        let bad = loc.register(
            t0,
            &aor,
            &register("c5", 1, "Contact: *\r\n"),
            addr("203.0.113.7:1"),
            addr("192.0.2.1:5060"),
            LIMITS,
        );
        assert_eq!(bad.map_err(|r| r.status), Err(400), "* needs Expires: 0");
        let gone = loc
            .register(
                t0,
                &aor,
                &register("c5", 1, "Contact: *\r\nExpires: 0\r\n"),
                addr("203.0.113.7:1"),
                addr("192.0.2.1:5060"),
                LIMITS,
            )
            .expect("unregister all");
        assert_eq!(gone.len(), 2);
        assert!(loc.is_empty());
    }

    #[test]
    fn the_best_contact_has_the_highest_q_then_is_newest() {
        let t0 = Instant::now();
        let view = Arc::new(LocationView::default());
        let mut loc = Location::new(view.clone());
        let aor: Arc<str> = "1001".into();
        loc.register(
            t0,
            &aor,
            &register("c6", 1, "Contact: <sip:low@10.0.0.5>;q=0.5\r\n"),
            addr("203.0.113.5:1"),
            addr("192.0.2.1:5060"),
            LIMITS,
        )
        .expect("ok");
        loc.register(
            t0 + Duration::from_secs(1),
            &aor,
            &register("c7", 1, "Contact: <sip:high@10.0.0.6>;q=0.9\r\n"),
            addr("203.0.113.6:1"),
            addr("192.0.2.1:5060"),
            LIMITS,
        )
        .expect("ok");
        assert_eq!(
            view.best("1001").map(|t| t.uri.to_string()).as_deref(),
            Some("sip:high@10.0.0.6")
        );
    }

    #[test]
    fn a_full_registrar_refuses_new_contacts_but_not_refreshes_or_removals() {
        let t0 = Instant::now();
        let mut loc = Location::new(Arc::new(LocationView::default()));
        let limits = Limits {
            max_total: Some(1),
            ..LIMITS
        };
        let (source, local) = (addr("203.0.113.5:40000"), addr("192.0.2.1:5060"));
        let aor: Arc<str> = "1001".into();
        let first = register(
            "c1",
            1,
            "Contact: <sip:1001@10.0.0.5:5060>\r\nExpires: 120\r\n",
        );
        loc.register(t0, &aor, &first, source, local, limits)
            .expect("room for one");
        let other: Arc<str> = "1002".into();
        let second = register(
            "c2",
            1,
            "Contact: <sip:1002@10.0.0.6:5060>\r\nExpires: 120\r\n",
        );
        let full = loc
            .register(t0, &other, &second, source, local, limits)
            .expect_err("full");
        assert_eq!(
            (full.status, full.reason.as_deref()),
            (503, Some("Registrar Full"))
        );
        assert_eq!(
            full.header(&HeaderName::RetryAfter),
            Some(FULL_RETRY_AFTER.to_string().as_str())
        );
        let refresh = register(
            "c1",
            2,
            "Contact: <sip:1001@10.0.0.5:5060>\r\nExpires: 300\r\n",
        );
        loc.register(t0, &aor, &refresh, source, local, limits)
            .expect("a refresh adds nothing");
        let removal = register(
            "c1",
            3,
            "Contact: <sip:1001@10.0.0.5:5060>\r\nExpires: 0\r\n",
        );
        loc.register(t0, &aor, &removal, source, local, limits)
            .expect("a removal passes");
        assert!(loc.is_empty());
        loc.register(t0, &other, &second, source, local, limits)
            .expect("room again");
    }
}
