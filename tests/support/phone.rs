//! A phone for the registrar's tests: a UDP socket on a test's address that
//! registers with digest (MD5) and then counts what Vigil sends it (NAT
//! keep-alives).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use vigil::sip::digest_response;
use vigil::sip::{DigestAlgorithm, DigestCredentials, HeaderName, Message, decode};

/// A phone: a UDP socket that registers with digest and then listens.
pub struct Phone {
    pub socket: UdpSocket,
    pub user: &'static str,
    pub password: &'static str,
    pub cseq: u32,
}

impl Phone {
    pub fn new(ip: IpAddr, user: &'static str, password: &'static str) -> Phone {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        Phone {
            socket,
            user,
            password,
            cseq: 0,
        }
    }

    pub fn request(&mut self, expires: u32, authorization: Option<String>) -> Vec<u8> {
        self.cseq += 1;
        let me = self.socket.local_addr().expect("addr");
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        format!(
            "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{}-{};rport\r\n\
From: <sip:{u}@vigil.local>;tag=p{}\r\nTo: <sip:{u}@vigil.local>\r\nCall-ID: reg-{u}-{}\r\nCSeq: {} REGISTER\r\n\
Contact: <sip:{u}@{me}>\r\nExpires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n",
            self.user, self.cseq, me.port(), me.port(), self.cseq, u = self.user
        )
        .into_bytes()
    }

    /// The next SIP response (keep-alives in between are skipped).
    pub fn response(&self) -> vigil::sip::Response {
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = self.socket.recv_from(&mut buf).expect("an answer");
            if let Ok(Message::Response(r)) = decode(&buf[..n]) {
                return r;
            }
        }
    }

    /// REGISTER, 401, REGISTER with credentials: the final status.
    pub fn register(&mut self, vigil: SocketAddr, expires: u32) -> u16 {
        let first = self.request(expires, None);
        self.socket.send_to(&first, vigil).expect("send");
        let challenge = self.response();
        assert_eq!(challenge.status, 401);
        let md5 = challenge
            .headers
            .get_all(&HeaderName::WwwAuthenticate)
            .find(|c| c.contains("MD5"))
            .expect("an MD5 challenge")
            .to_string();
        let nonce = md5
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("nonce");
        let mut creds = DigestCredentials {
            username: self.user.into(),
            realm: "vigil.local".into(),
            nonce: nonce.into(),
            uri: "sip:vigil.local".into(),
            response: String::new(),
            algorithm: Some("MD5".into()),
            cnonce: Some("cn".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            opaque: None,
        };
        creds.response = digest_response(DigestAlgorithm::Md5, &creds, self.password, "REGISTER");
        let header = format!(
            "Digest username=\"{}\", realm=\"vigil.local\", nonce=\"{nonce}\", uri=\"sip:vigil.local\", response=\"{}\", algorithm=MD5, cnonce=\"cn\", qop=auth, nc=00000001",
            self.user, creds.response
        );
        let second = self.request(expires, Some(header));
        self.socket.send_to(&second, vigil).expect("send");
        self.response().status
    }

    /// Keep-alives received within `window`, with their arrival times.
    pub fn keepalives(&self, window: Duration) -> Vec<(Duration, Vec<u8>)> {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < window {
            self.socket
                .set_read_timeout(Some(
                    window
                        .saturating_sub(start.elapsed())
                        .max(Duration::from_millis(1)),
                ))
                .expect("timeout");
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => got.push((start.elapsed(), buf[..n].to_vec())),
                Err(_) => break,
            }
        }
        got
    }
}
