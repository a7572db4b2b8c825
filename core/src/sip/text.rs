//! Lexical building blocks of RFC 3261 §25.1: character classes, quoted strings,
//! comma-separated lists and `;name=value` parameter lists.
//!
//! Everything here works on header values that `decode` has already unfolded
//! (a folded line `CRLF 1*WSP` became a single space), so LWS is just `SP / HTAB`.

/// `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")`
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// True if `s` is a non-empty `token`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// `WSP = SP / HTAB`
pub fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Trims linear white space (after unfolding: SP and HTAB) from both ends.
pub fn trim_lws(s: &str) -> &str {
    s.trim_matches(is_wsp)
}

/// Parses a `quoted-string` at the start of `s`.
///
/// `quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE`,
/// `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`.
///
/// Returns the byte length of the quoted string including both quotes, or `None` if
/// `s` does not start with a complete one.
pub fn quoted_string_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                if next == b'\r' || next == b'\n' || next > 0x7f {
                    return None;
                }
                i += 2;
            }
            b'"' => return Some(i + 1),
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

/// Splits a header value on the commas that separate list elements
/// (RFC 3261 §7.3.1), ignoring commas inside quoted strings and `<...>`.
///
/// Empty elements (from `a,,b` or a trailing comma) are returned as empty strings so
/// callers can reject them where the grammar requires `1#element`.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut angle_depth = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => match quoted_string_len(&value[i..]) {
                Some(len) => {
                    i += len;
                    continue;
                }
                // An unterminated quote swallows the rest; the element parser rejects it.
                None => break,
            },
            b'<' => angle_depth += 1,
            b'>' => angle_depth = angle_depth.saturating_sub(1),
            b',' if angle_depth == 0 => {
                parts.push(trim_lws(&value[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(trim_lws(&value[start..]));
    parts
}

/// One `;name[=value]` parameter as written on the wire (value unquoted only if it
/// was a token; a quoted value keeps its quotes so it prints back unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<String>) -> Self {
        Param {
            name: name.into(),
            value,
        }
    }
}

/// Errors of the lexical layer; callers wrap them with the header they came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("invalid parameter name {0:?}")]
    BadParamName(String),
    #[error("invalid parameter value {0:?}")]
    BadParamValue(String),
    #[error("unexpected text {0:?}")]
    Trailing(String),
}

/// Parses `*( SEMI generic-param )` where the input starts at the first `;` (or is
/// empty). `generic-param = token [ EQUAL gen-value ]`,
/// `gen-value = token / host / quoted-string`. SWS is allowed around `;` and `=`.
pub fn parse_params(mut s: &str) -> Result<Vec<Param>, LexError> {
    let mut params = Vec::new();
    loop {
        s = trim_lws(s);
        if s.is_empty() {
            return Ok(params);
        }
        let Some(rest) = s.strip_prefix(';') else {
            return Err(LexError::Trailing(s.to_string()));
        };
        let rest = trim_lws(rest);
        let name_len = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() {
            return Err(LexError::BadParamName(rest.to_string()));
        }
        let after_name = trim_lws(&rest[name_len..]);
        if let Some(value_part) = after_name.strip_prefix('=') {
            let value_part = trim_lws(value_part);
            let value_len = if value_part.starts_with('"') {
                quoted_string_len(value_part).ok_or(LexError::UnterminatedQuote)?
            } else {
                value_part
                    .find(|c: char| !is_gen_value_char(c))
                    .unwrap_or(value_part.len())
            };
            if value_len == 0 {
                return Err(LexError::BadParamValue(value_part.to_string()));
            }
            params.push(Param::new(name, Some(value_part[..value_len].to_string())));
            s = &value_part[value_len..];
        } else {
            params.push(Param::new(name, None));
            s = after_name;
        }
    }
}

/// Characters of an unquoted `gen-value`: a token, or a host (which adds `:` and the
/// brackets of an IPv6 reference).
fn is_gen_value_char(c: char) -> bool {
    is_token_char(c) || matches!(c, ':' | '[' | ']')
}

/// Finds a parameter by case-insensitive name (parameter names are case-insensitive,
/// RFC 3261 §7.3.1).
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Writes params as `;name=value` in their original order.
pub fn write_params(out: &mut String, params: &[Param]) {
    for p in params {
        out.push(';');
        out.push_str(&p.name);
        if let Some(v) = &p.value {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Percent-decodes `%HH` escapes (RFC 3261 §19.1.2 `escaped`); an invalid escape is
/// kept literally, which is what comparison needs (it never matches a valid one).
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v = r#""Bell, A" <sip:a@x;p=1,2>, <sip:b@y> ,sip:c@z"#;
        assert_eq!(
            split_list(v),
            vec![r#""Bell, A" <sip:a@x;p=1,2>"#, "<sip:b@y>", "sip:c@z"]
        );
        assert_eq!(split_list("a,,b"), vec!["a", "", "b"]);
    }

    #[test]
    fn params_allow_whitespace_and_quotes() {
        let p = parse_params(" ;   tag    = 1918181833n ; lr;x=\"a;b\"").expect("valid");
        assert_eq!(p[0], Param::new("tag", Some("1918181833n".into())));
        assert_eq!(p[1], Param::new("lr", None));
        assert_eq!(p[2], Param::new("x", Some("\"a;b\"".into())));
        assert!(parse_params(";x=\"open").is_err());
        assert!(parse_params(";=v").is_err());
        assert!(parse_params("junk").is_err());
    }

    #[test]
    fn quoted_strings_with_escapes() {
        assert_eq!(quoted_string_len(r#""J Rosenberg \\\"" <x>"#), Some(18));
        assert_eq!(quoted_string_len("\"open"), None);
        assert_eq!(quoted_string_len("\"a\\\u{7}b\""), Some(6));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%75se%72"), "user");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
