//! RFC 3262's headers for reliable provisional responses: `RSeq` (the number a
//! UAS gives each reliable provisional), `RAck` (the PRACK naming the one it
//! acknowledges) and the `100rel` option tag in `Supported` / `Require`.

use std::fmt;

use super::header::{HeaderName, Headers};
use super::text::trim_lws;
use super::typed::{Method, ValueError, parse_bounded};

/// The option tag of RFC 3262.
pub const TAG_100REL: &str = "100rel";

/// RSeq and RAck numbers are below 2**31 (RFC 3262 §7.1).
const MAX_RSEQ: u64 = (1 << 31) - 1;

/// `RSeq = "RSeq" HCOLON response-num`, `response-num = 1*DIGIT`
/// (RFC 3262 §7.1): the sequence number of a reliable provisional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RSeq(pub u32);

impl RSeq {
    pub fn parse(s: &str) -> Result<RSeq, ValueError> {
        let s = trim_lws(s);
        parse_bounded(s, MAX_RSEQ)
            .filter(|&n| n > 0)
            .map(|n| RSeq(n as u32))
            .ok_or_else(|| ValueError::new(format!("RSeq {s:?} is not a number in 1..2^31")))
    }

    /// The RSeq of a response, if it has a valid one.
    pub fn of(headers: &Headers) -> Option<RSeq> {
        headers
            .get(&HeaderName::RSeq)
            .and_then(|v| RSeq::parse(v).ok())
    }
}

/// `RAck = "RAck" HCOLON response-num LWS CSeq-num LWS Method`
/// (RFC 3262 §7.2): which reliable provisional a PRACK acknowledges, by its
/// RSeq and the CSeq of the request it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    pub rseq: u32,
    pub cseq: u32,
    pub method: Method,
}

impl RAck {
    pub fn parse(s: &str) -> Result<RAck, ValueError> {
        let mut parts = trim_lws(s).split_ascii_whitespace();
        let bad = || ValueError::new(format!("RAck {s:?} is not `RSeq CSeq Method`"));
        let rseq = parts
            .next()
            .and_then(|p| parse_bounded(p, MAX_RSEQ))
            .ok_or_else(bad)?;
        let cseq = parts
            .next()
            .and_then(|p| parse_bounded(p, MAX_RSEQ))
            .ok_or_else(bad)?;
        let method = parts.next().and_then(Method::parse).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(RAck {
            rseq: rseq as u32,
            cseq: cseq as u32,
            method,
        })
    }

    /// The RAck of a PRACK, if it has a valid one.
    pub fn of(headers: &Headers) -> Option<RAck> {
        headers
            .get(&HeaderName::RAck)
            .and_then(|v| RAck::parse(v).ok())
    }
}

impl fmt::Display for RAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.rseq, self.cseq, self.method)
    }
}

/// Whether a message's `Supported` or `Require` lists `100rel`: its sender
/// can take (or send) reliable provisionals.
pub fn supports_100rel(headers: &Headers) -> bool {
    headers.has_tag(&HeaderName::Supported, TAG_100REL) || requires_100rel(headers)
}

/// Whether a message's `Require` lists `100rel`: an INVITE whose sender wants
/// every provisional reliable, or a provisional sent reliably.
pub fn requires_100rel(headers: &Headers) -> bool {
    headers.has_tag(&HeaderName::Require, TAG_100REL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rseq_is_a_number_from_1_below_2_pow_31() {
        assert_eq!(RSeq::parse(" 988789 "), Ok(RSeq(988789)));
        assert_eq!(RSeq::parse("2147483647"), Ok(RSeq(2147483647)));
        for bad in ["0", "2147483648", "", "12a", "-1", "1 2"] {
            assert!(RSeq::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rack_names_rseq_cseq_and_method() {
        let r = RAck::parse("776656 1 INVITE").expect("valid");
        assert_eq!(
            r,
            RAck {
                rseq: 776656,
                cseq: 1,
                method: Method::Invite
            }
        );
        assert_eq!(r.to_string(), "776656 1 INVITE");
        assert_eq!(RAck::parse("  7 \t 3   INVITE ").map(|r| r.rseq), Ok(7));
        for bad in ["", "1", "1 2", "x 2 INVITE", "1 2 INVITE extra", "1 2 @"] {
            assert!(RAck::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn option_tag_in_supported_or_require() {
        let mut h = Headers::new();
        assert!(!supports_100rel(&h));
        h.push(HeaderName::Supported, "timer, 100REL");
        assert!(supports_100rel(&h));
        assert!(!requires_100rel(&h));
        let mut r = Headers::new();
        r.push(HeaderName::Require, "100rel");
        assert!(supports_100rel(&r), "Require implies support");
        assert!(requires_100rel(&r));
    }
}
