//! What the core holds of the `route` hook whatever the backend: which
//! headers of an INVITE a [`RouteView`] carries ([`route_headers`]), and what
//! makes a [`RouteDecision`] one the engine can carry out ([`check`]).
//!
//! The chain checks every source's decision here, once, so a plugin and a
//! script are held to the same rules and a bad one is a failure of that
//! source (reported, counted, the next source decides). Whether the trunks
//! exist is not checked here: the config can change under a loaded policy,
//! so the engine checks names when it routes.

#[cfg(doc)]
use super::RouteView;
use super::{HeaderView, MAX_ROUTE_TRUNKS, ROUTE_HEADERS, RouteDecision};
use crate::sip::{Headers, is_plain_user};

/// The longest trunk name a decision may give: far beyond any configured
/// name, short enough to log.
pub const MAX_TRUNK_NAME: usize = 64;

/// The longest callee or caller a decision may set: an E.164 number is at
/// most 16 characters with its `+`; the rest is room for user names and a
/// routing-number parameter.
pub const MAX_ROUTE_USER: usize = 64;

/// Why a route decision cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteProblem {
    #[error("reject status {0} is not a final error status (400..=699)")]
    RejectStatus(u16),
    #[error("a route with no trunk")]
    NoTrunks,
    #[error("a route with {0} trunks (at most {MAX_ROUTE_TRUNKS})")]
    TooManyTrunks(usize),
    #[error(
        "trunk name {0} is not 1..={MAX_TRUNK_NAME} bytes without whitespace or control characters"
    )]
    TrunkName(String),
    #[error(
        "{field} {value} is not a plain SIP user part: 1..={MAX_ROUTE_USER} letters, digits or \
         -_.!~*'()&=+$,;?/"
    )]
    User { field: &'static str, value: String },
}

/// `Ok` if the engine can carry `decision` out (given trunks that exist).
pub fn check(decision: &RouteDecision) -> Result<(), RouteProblem> {
    match decision {
        RouteDecision::Default => Ok(()),
        RouteDecision::Reject { status, .. } if !(400..=699).contains(status) => {
            Err(RouteProblem::RejectStatus(*status))
        }
        RouteDecision::Reject { .. } => Ok(()),
        RouteDecision::Route {
            trunks,
            callee,
            caller,
        } => {
            match trunks.len() {
                0 => return Err(RouteProblem::NoTrunks),
                n if n > MAX_ROUTE_TRUNKS => return Err(RouteProblem::TooManyTrunks(n)),
                _ => {}
            }
            if let Some(bad) = trunks.iter().find(|t| !is_trunk_name(t)) {
                return Err(RouteProblem::TrunkName(shown(bad)));
            }
            for (field, value) in [("callee", callee), ("caller", caller)] {
                if let Some(value) = value
                    && !(value.len() <= MAX_ROUTE_USER && is_plain_user(value))
                {
                    return Err(RouteProblem::User {
                        field,
                        value: shown(value),
                    });
                }
            }
            Ok(())
        }
    }
}

/// A name that can be looked up and logged as it is: no whitespace or
/// control characters (a trunk name is one word in the config).
fn is_trunk_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TRUNK_NAME
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A value for a log line: quoted, escaped, and cut short.
fn shown(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// The fields of an INVITE a [`RouteView`] carries: those among
/// [`ROUTE_HEADERS`], in message order, each named as [`ROUTE_HEADERS`]
/// spells it whatever the case it came in. Allocates only when there are
/// some.
pub fn route_headers(headers: &Headers) -> Vec<HeaderView<'_>> {
    headers
        .iter()
        .filter_map(|h| {
            let wanted = h.name.as_str();
            ROUTE_HEADERS
                .iter()
                .find(|name| name.eq_ignore_ascii_case(wanted))
                .map(|name| HeaderView {
                    name,
                    value: h.value.as_str(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::HeaderName;

    fn route(trunks: &[&str], callee: Option<&str>, caller: Option<&str>) -> RouteDecision {
        RouteDecision::Route {
            trunks: trunks.iter().map(|t| t.to_string()).collect(),
            callee: callee.map(str::to_owned),
            caller: caller.map(str::to_owned),
        }
    }

    #[test]
    fn decisions_the_engine_can_carry_out_pass() {
        assert_eq!(check(&RouteDecision::Default), Ok(()));
        let reject = RouteDecision::Reject {
            status: 403,
            reason: "Forbidden".into(),
        };
        assert_eq!(check(&reject), Ok(()));
        assert_eq!(check(&route(&["carrier"], None, None)), Ok(()));
        let sixteen = ["t"; MAX_ROUTE_TRUNKS];
        let full = route(&sixteen, Some("+4930123456"), Some("anonymous"));
        assert_eq!(check(&full), Ok(()));
        let npdi = route(&["carrier-2"], Some("+4930123;npdi"), Some("+49.30-1"));
        assert_eq!(check(&npdi), Ok(()));
    }

    #[test]
    fn malformed_decisions_are_refused_saying_why() {
        let reject = |status| RouteDecision::Reject {
            status,
            reason: "x".into(),
        };
        assert_eq!(check(&reject(200)), Err(RouteProblem::RejectStatus(200)));
        assert_eq!(check(&reject(700)), Err(RouteProblem::RejectStatus(700)));
        assert_eq!(check(&route(&[], None, None)), Err(RouteProblem::NoTrunks));
        let seventeen = ["t"; MAX_ROUTE_TRUNKS + 1];
        assert_eq!(
            check(&route(&seventeen, None, None)),
            Err(RouteProblem::TooManyTrunks(17))
        );
        let long_name = "x".repeat(65);
        for bad in ["", "two words", "tab\there", "nl\n", long_name.as_str()] {
            let err = check(&route(&["ok", bad], None, None));
            assert!(matches!(err, Err(RouteProblem::TrunkName(_))), "{bad:?}");
        }
        let long_number = "1".repeat(65);
        for bad in [
            "",
            "49 30",
            "a@b",
            "50%",
            "sip:x",
            "é",
            "1\r\nX: y",
            long_number.as_str(),
        ] {
            let err = check(&route(&["ok"], Some(bad), None));
            assert!(
                matches!(
                    err,
                    Err(RouteProblem::User {
                        field: "callee",
                        ..
                    })
                ),
                "{bad:?}"
            );
            let err = check(&route(&["ok"], None, Some(bad)));
            assert!(
                matches!(
                    err,
                    Err(RouteProblem::User {
                        field: "caller",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        // Long values are cut in the message.
        let long = "y".repeat(1000);
        let message = check(&route(&[&long], None, None))
            .expect_err("too long")
            .to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn route_headers_picks_identity_and_diversion_in_order_by_canonical_name() {
        let mut headers = Headers::new();
        headers.push(HeaderName::Contact, "<sip:a@192.0.2.1>");
        headers.push(HeaderName::Diversion, "<sip:+4930111@pbx>;reason=busy");
        headers.push(
            HeaderName::PAssertedIdentity,
            "\"Alice\" <sip:+4930123@pbx>",
        );
        headers.push(
            HeaderName::Other("history-INFO".into()),
            "<sip:x@y>;index=1",
        );
        headers.push(HeaderName::Diversion, "<sip:+4930222@pbx>;reason=no-answer");
        headers.push(HeaderName::Privacy, "id");
        headers.push(HeaderName::UserAgent, "phone");
        let picked = route_headers(&headers);
        let pairs: Vec<(&str, &str)> = picked.iter().map(|h| (h.name, h.value)).collect();
        assert_eq!(
            pairs,
            [
                ("Diversion", "<sip:+4930111@pbx>;reason=busy"),
                ("P-Asserted-Identity", "\"Alice\" <sip:+4930123@pbx>"),
                ("History-Info", "<sip:x@y>;index=1"),
                ("Diversion", "<sip:+4930222@pbx>;reason=no-answer"),
                ("Privacy", "id"),
            ]
        );
        assert!(route_headers(&Headers::new()).is_empty());
    }
}
