//! Status codes and their standard reason phrases: RFC 3261 §21 and the
//! extensions in IANA's "Response Codes" registry of the SIP parameters
//! (RFC 4028's `422`, RFC 3329's `494`, RFC 8197's `607`, …).
//!
//! ```text
//! Status-Line   = SIP-Version SP Status-Code SP Reason-Phrase CRLF
//! Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII
//!                   / UTF8-CONT / SP / HTAB)
//! ```
//!
//! A phrase is only informative (§7.2), but peers and operators read it in
//! traces and logs: a `407` that says `Request Failure` looks like a bug. Where
//! Vigil has nothing more precise to say, a response carries the phrase below.

/// Every registered status code with its registered phrase, in code order.
pub const REASON_PHRASES: &[(u16, &str)] = &[
    (100, "Trying"),
    (180, "Ringing"),
    (181, "Call Is Being Forwarded"),
    (182, "Queued"),
    (183, "Session Progress"),
    (199, "Early Dialog Terminated"), // RFC 6228
    (200, "OK"),
    (202, "Accepted"),        // RFC 3265
    (204, "No Notification"), // RFC 5839
    (300, "Multiple Choices"),
    (301, "Moved Permanently"),
    (302, "Moved Temporarily"),
    (305, "Use Proxy"),
    (380, "Alternative Service"),
    (400, "Bad Request"),
    (401, "Unauthorized"),
    (402, "Payment Required"),
    (403, "Forbidden"),
    (404, "Not Found"),
    (405, "Method Not Allowed"),
    (406, "Not Acceptable"),
    (407, "Proxy Authentication Required"),
    (408, "Request Timeout"),
    (410, "Gone"),
    (412, "Conditional Request Failed"), // RFC 3903
    (413, "Request Entity Too Large"),
    (414, "Request-URI Too Long"),
    (415, "Unsupported Media Type"),
    (416, "Unsupported URI Scheme"),
    (417, "Unknown Resource-Priority"), // RFC 4412
    (420, "Bad Extension"),
    (421, "Extension Required"),
    (422, "Session Interval Too Small"), // RFC 4028
    (423, "Interval Too Brief"),
    (424, "Bad Location Information"),         // RFC 6442
    (425, "Bad Alert Message"),                // RFC 8876
    (428, "Use Identity Header"),              // RFC 8224
    (429, "Provide Referrer Identity"),        // RFC 3892
    (430, "Flow Failed"),                      // RFC 5626
    (433, "Anonymity Disallowed"),             // RFC 5079
    (436, "Bad Identity Info"),                // RFC 8224
    (437, "Unsupported Credential"),           // RFC 8224
    (438, "Invalid Identity Header"),          // RFC 8224
    (439, "First Hop Lacks Outbound Support"), // RFC 5626
    (440, "Max-Breadth Exceeded"),             // RFC 5393
    (469, "Bad Info Package"),                 // RFC 6086
    (470, "Consent Needed"),                   // RFC 5360
    (480, "Temporarily Unavailable"),
    (481, "Call/Transaction Does Not Exist"),
    (482, "Loop Detected"),
    (483, "Too Many Hops"),
    (484, "Address Incomplete"),
    (485, "Ambiguous"),
    (486, "Busy Here"),
    (487, "Request Terminated"),
    (488, "Not Acceptable Here"),
    (489, "Bad Event"), // RFC 6665
    (491, "Request Pending"),
    (493, "Undecipherable"),
    (494, "Security Agreement Required"), // RFC 3329
    (500, "Server Internal Error"),
    (501, "Not Implemented"),
    (502, "Bad Gateway"),
    (503, "Service Unavailable"),
    (504, "Server Time-out"),
    (505, "Version Not Supported"),
    (513, "Message Too Large"),
    (555, "Push Notification Service Not Supported"), // RFC 8599
    (580, "Precondition Failure"),                    // RFC 3312
    (600, "Busy Everywhere"),
    (603, "Decline"),
    (604, "Does Not Exist Anywhere"),
    (606, "Not Acceptable"),
    (607, "Unwanted"), // RFC 8197
    (608, "Rejected"), // RFC 8688
];

/// The standard reason phrase of `status`; an unregistered code gets its
/// class's name (RFC 3261 §21: a client treats it as the class's x00).
pub fn reason_phrase(status: u16) -> &'static str {
    match REASON_PHRASES.binary_search_by_key(&status, |&(code, _)| code) {
        Ok(i) => REASON_PHRASES[i].1,
        Err(_) => class_phrase(status),
    }
}

fn class_phrase(status: u16) -> &'static str {
    match status / 100 {
        1 => "Trying",
        2 => "OK",
        3 => "Redirection",
        4 => "Request Failure",
        5 => "Server Failure",
        _ => "Global Failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status Vigil originates, with the phrase its RFC gives it, written
    /// out again here rather than read from the table. A new status in the code
    /// belongs in this list.
    const SENT_BY_VIGIL: &[(u16, &str, &str)] = &[
        (100, "Trying", "transaction layer, every INVITE"),
        (200, "OK", "BYE, CANCEL, OPTIONS, refreshes, REGISTER"),
        (400, "Bad Request", "decode: malformed requests"),
        (401, "Unauthorized", "registrar: digest challenge"),
        (403, "Forbidden", "ingress and registrar refusals"),
        (404, "Not Found", "no route"),
        (405, "Method Not Allowed", "in-dialog and registrar"),
        (406, "Not Acceptable", "Accept without application/sdp"),
        (407, "Proxy Authentication Required", "a user's INVITE"),
        (
            408,
            "Request Timeout",
            "callee never answered, max_ring_time",
        ),
        (415, "Unsupported Media Type", "a body that is not SDP"),
        (416, "Unsupported URI Scheme", "Request-URI scheme"),
        (420, "Bad Extension", "Require Vigil lacks"),
        (422, "Session Interval Too Small", "RFC 4028 §6"),
        (423, "Interval Too Brief", "registrar: Min-Expires"),
        (480, "Temporarily Unavailable", "user not registered"),
        (
            481,
            "Call/Transaction Does Not Exist",
            "no dialog or transaction",
        ),
        (482, "Loop Detected", "loops, merged requests"),
        (483, "Too Many Hops", "Max-Forwards: 0"),
        (487, "Request Terminated", "the INVITE a CANCEL ended"),
        (491, "Request Pending", "glare on a re-INVITE or UPDATE"),
        (
            500,
            "Server Internal Error",
            "CSeq out of order, second offer",
        ),
        (501, "Not Implemented", "extension methods"),
        (
            503,
            "Service Unavailable",
            "overload, shutdown, registrar full",
        ),
        (505, "Version Not Supported", "not SIP/2.0"),
    ];

    #[test]
    fn every_status_vigil_sends_has_its_standard_phrase() {
        for &(status, phrase, sent_for) in SENT_BY_VIGIL {
            assert_eq!(reason_phrase(status), phrase, "{status} ({sent_for})");
        }
    }

    #[test]
    fn a_policy_may_reject_with_any_registered_code_and_get_its_phrase() {
        // `call_start` rejects with any 400..=699; without its own reason the
        // status line carries the table's phrase, never the class's.
        assert!(REASON_PHRASES.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        for &(status, phrase) in REASON_PHRASES {
            assert_eq!(reason_phrase(status), phrase);
            assert!(
                phrase.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{status} {phrase:?}"
            );
        }
        assert_eq!(reason_phrase(499), "Request Failure");
        assert_eq!(reason_phrase(599), "Server Failure");
        assert_eq!(reason_phrase(699), "Global Failure");
    }
}
