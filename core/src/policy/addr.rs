//! A socket address as the text a policy view carries (`ip:port`,
//! `[v6]:port`), written on the stack: the views hold `&str`, and the
//! keep-alive tick builds one for every contact it serves, so building a view
//! must not allocate.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

/// A socket address as `ip:port`, written on the stack so that building a view
/// allocates nothing. 80 bytes hold the longest form,
/// `[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535` (64).
pub struct AddrText {
    buf: [u8; 80],
    len: usize,
}

impl AddrText {
    pub fn new(addr: SocketAddr) -> AddrText {
        let mut text = AddrText {
            buf: [0; 80],
            len: 0,
        };
        // Cannot fail: the buffer holds the longest address (see above).
        let _ = write!(text, "{addr}");
        text
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this is UTF-8.
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl fmt::Debug for AddrText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use super::*;

    #[test]
    fn addresses_are_written_without_allocating() {
        let v4 = SocketAddr::from((Ipv4Addr::new(203, 0, 113, 9), 5061));
        assert_eq!(AddrText::new(v4).as_str(), "203.0.113.9:5061");
        let longest = SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            ),
            65535,
            0,
            u32::MAX,
        ));
        assert_eq!(AddrText::new(longest).as_str(), longest.to_string());
    }
}
