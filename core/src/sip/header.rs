//! Header names (with RFC 3261 §7.3.3 compact forms expanded) and the ordered header
//! list of a message.
//!
//! `decode` turns `v:`, `i:`, `MaX-fOrWaRdS:` into one canonical [`HeaderName`], so no
//! other module ever compares header names as strings.

use std::fmt;

use super::text::split_list;

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, compact $compact:literal)? ; )*) => {
        /// A header field name. Known names are variants; anything else is kept as
        /// written in [`HeaderName::Other`].
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $( $variant, )*
            Other(Box<str>),
        }

        impl HeaderName {
            /// The canonical spelling used when Vigil writes a message.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canonical, )*
                    HeaderName::Other(name) => name,
                }
            }

            /// Maps a name as written on the wire (any case, compact or long form).
            pub fn from_wire(name: &str) -> HeaderName {
                if name.len() == 1 {
                    let c = name.as_bytes()[0].to_ascii_lowercase();
                    $( $( if c == $compact { return HeaderName::$variant; } )? )*
                }
                $( if name.eq_ignore_ascii_case($canonical) { return HeaderName::$variant; } )*
                HeaderName::Other(name.into())
            }
        }
    };
}

header_names! {
    Accept => "Accept";
    AcceptContact => "Accept-Contact", compact b'a';
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    AlertInfo => "Alert-Info";
    Allow => "Allow";
    AllowEvents => "Allow-Events", compact b'u';
    AuthenticationInfo => "Authentication-Info";
    Authorization => "Authorization";
    CallId => "Call-ID", compact b'i';
    CallInfo => "Call-Info";
    Contact => "Contact", compact b'm';
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", compact b'e';
    ContentLanguage => "Content-Language";
    ContentLength => "Content-Length", compact b'l';
    ContentType => "Content-Type", compact b'c';
    CSeq => "CSeq";
    Date => "Date";
    Diversion => "Diversion";
    ErrorInfo => "Error-Info";
    Event => "Event", compact b'o';
    Expires => "Expires";
    From => "From", compact b'f';
    Identity => "Identity", compact b'y';
    InReplyTo => "In-Reply-To";
    InfoPackage => "Info-Package";
    MaxForwards => "Max-Forwards";
    MinExpires => "Min-Expires";
    MinSe => "Min-SE";
    MimeVersion => "MIME-Version";
    Organization => "Organization";
    PAssertedIdentity => "P-Asserted-Identity";
    PPreferredIdentity => "P-Preferred-Identity";
    Priority => "Priority";
    Privacy => "Privacy";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RAck => "RAck";
    Reason => "Reason";
    RecordRoute => "Record-Route";
    ReferTo => "Refer-To", compact b'r';
    ReferredBy => "Referred-By", compact b'b';
    RejectContact => "Reject-Contact", compact b'j';
    RemotePartyId => "Remote-Party-ID";
    RecvInfo => "Recv-Info";
    ReplyTo => "Reply-To";
    RequestDisposition => "Request-Disposition", compact b'd';
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    RSeq => "RSeq";
    Server => "Server";
    SessionExpires => "Session-Expires", compact b'x';
    Subject => "Subject", compact b's';
    SubscriptionState => "Subscription-State";
    Supported => "Supported", compact b'k';
    Timestamp => "Timestamp";
    To => "To", compact b't';
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    UserToUser => "User-to-User";
    Via => "Via", compact b'v';
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field line: a canonical name and the unfolded value, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

/// The header fields of a message in wire order, minus the ones a [`super::Request`]
/// or [`super::Response`] holds typed (Via, From, To, Call-ID, CSeq, Max-Forwards,
/// Content-Length).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Replaces every field of this name by one with `value`.
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        self.remove(&name);
        self.push(name, value);
    }

    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| &h.name != name);
    }

    /// The first field of this name.
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every field of this name, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every list element of this name across all its fields (RFC 3261 §7.3.1: a
    /// comma-separated list may be split over several fields).
    pub fn list<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(split_list)
            .filter(|element| !element.is_empty())
    }

    /// True if the option-tag list (Supported, Require, Allow, …) contains `tag`,
    /// compared case-insensitively.
    pub fn has_tag(&self, name: &HeaderName, tag: &str) -> bool {
        self.list(name).any(|t| t.eq_ignore_ascii_case(tag))
    }

    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| &h.name == name).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive_names() {
        for (wire, canonical) in [
            ("v", "Via"),
            ("I", "Call-ID"),
            ("f", "From"),
            ("t", "To"),
            ("m", "Contact"),
            ("l", "Content-Length"),
            ("k", "Supported"),
            ("x", "Session-Expires"),
            ("s", "Subject"),
            ("c", "Content-Type"),
            ("e", "Content-Encoding"),
            ("MaX-fOrWaRdS", "Max-Forwards"),
            ("min-se", "Min-SE"),
            ("cseq", "CSeq"),
        ] {
            assert_eq!(HeaderName::from_wire(wire).as_str(), canonical, "{wire}");
        }
        assert_eq!(
            HeaderName::from_wire("X-Custom"),
            HeaderName::Other("X-Custom".into())
        );
        assert_eq!(HeaderName::from_wire("q"), HeaderName::Other("q".into()));
    }

    #[test]
    fn lists_span_fields() {
        let mut h = Headers::new();
        h.push(HeaderName::Supported, "timer, 100rel");
        h.push(HeaderName::Supported, "replaces");
        assert_eq!(
            h.list(&HeaderName::Supported).collect::<Vec<_>>(),
            vec!["timer", "100rel", "replaces"]
        );
        assert!(h.has_tag(&HeaderName::Supported, "TIMER"));
        assert!(!h.has_tag(&HeaderName::Require, "timer"));
    }
}
