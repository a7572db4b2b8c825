//! SIP over TLS end to end (issue 19). Debian's sipp has no TLS, so the
//! caller here is a small client on rustls (tokio-rustls): certificates
//! come from a CA the test makes on the spot (rcgen, in a temporary
//! directory: no private key is checked in). With mutual TLS required, a
//! client without a certificate is refused; one with the CA's certificate
//! gets OPTIONS answered and places a call through Vigil to a sipp callee
//! over UDP, then hangs up.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use support::{Net, Vigil, callee, caller};

/// A CA, a server certificate for `server_ip` and a client certificate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, server_ip: IpAddr) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
        let issuer = Issuer::new(params, ca_key);
        for (name, san) in [
            ("server", server_ip.to_string()),
            ("client", "client.test".into()),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec![san]).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &issuer).expect("certificate");
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A client trusting the CA, presenting the client certificate if `with_cert`.
    fn client(&self, with_cert: bool) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.file("ca.pem")).expect("ca") {
            roots.add(cert.expect("cert")).expect("add");
        }
        let provider = vigil::transport::tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = if with_cert {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(self.file("client.pem"))
                    .expect("chain")
                    .map(|c| c.expect("cert"))
                    .collect();
            let key = PrivateKeyDer::from_pem_file(self.file("client.key")).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

async fn connect(
    connector: &TlsConnector,
    from: IpAddr,
    to: SocketAddr,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(to).await?;
    let name = ServerName::IpAddress(to.ip().into());
    connector.connect(name, tcp).await
}

/// Reads from `tls` until a response whose first line starts with `status`
/// (and carries `cseq`) arrives; returns it.
async fn response(
    tls: &mut TlsStream<tokio::net::TcpStream>,
    seen: &mut String,
    status: &str,
    cseq: &str,
) -> String {
    let mut buf = [0u8; 8192];
    loop {
        // Each response's head: from its status line to the blank line (a
        // body before it is another message's).
        let found = seen.match_indices(status).find_map(|(at, _)| {
            let head = seen[at..].split("\r\n\r\n").next()?;
            head.contains(&format!("CSeq: {cseq}"))
                .then(|| head.to_string())
        });
        if let Some(found) = found {
            return found;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {status} to {cseq} within 10 s; got so far:\n{seen}"))
            .expect("read");
        assert!(n > 0, "Vigil closed the connection; got so far:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_default()
}

/// The standard config with a `tls:` listener on port 5061 requiring client
/// certificates from the test CA, plus `extra`.
fn mutual_tls_config(net: Net, dir: &Path, pki: &Pki, extra: &str) -> String {
    net.config(
        &dir.join("cdr.jsonl"),
        &format!(
            "tls: {{ certificate: \"{}\", key: \"{}\", ca: \"{}\", require_client_certificate: true }}\n{extra}",
            pki.file("server.pem").display(),
            pki.file("server.key").display(),
            pki.file("ca.pem").display()
        ),
    )
    .replacen(
        &format!("listen: [\"udp:{}:5060\"]", net.vigil),
        &format!("listen: [\"udp:{v}:5060\", \"tls:{v}:5061\"]", v = net.vigil),
        1,
    )
}

#[test]
fn a_tls_caller_with_a_certificate_calls_a_udp_callee_and_one_without_is_refused() {
    let net = Net::new(187);
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path(), net.vigil);
    let tls_at = SocketAddr::new(net.vigil, 5061);
    let config = mutual_tls_config(net, dir.path(), &pki, "");
    let vigil = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &config);
    let uas = callee(net, None, &[]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // Mutual TLS: no certificate, no connection.
        let refused = async {
            let mut tls = connect(&pki.client(false), net.caller, tls_at).await?;
            tls.write_all(b"\r\n\r\n").await?;
            let mut buf = [0u8; 16];
            match tls.read(&mut buf).await? {
                0 => Err(std::io::Error::other("closed")),
                _ => Ok(()),
            }
        };
        assert!(refused.await.is_err(), "a client without a certificate is refused");

        let mut tls = connect(&pki.client(true), net.caller, tls_at)
            .await
            .expect("a client with the CA's certificate connects");
        let (v, c) = (net.vigil, net.caller);
        let mut seen = String::new();
        let options = format!(
            "OPTIONS sip:{v}:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {c}:5999;branch=z9hG4bK-tls-o\r\n\
             From: <sip:a@{c}>;tag=1\r\nTo: <sip:{v}>\r\nCall-ID: tls-options\r\nCSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        tls.write_all(options.as_bytes()).await.expect("write");
        let ok = response(&mut tls, &mut seen, "SIP/2.0 200", "1 OPTIONS").await;
        assert!(header(&ok, "Via:").starts_with("SIP/2.0/TLS"), "{ok}");

        let sdp = format!("v=0\r\no=- 1 1 IN IP4 {c}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n");
        let invite = format!(
            "INVITE sip:0049301234@{v}:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {c}:5999;branch=z9hG4bK-tls-i\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{c}>;tag=caller\r\nTo: <sip:0049301234@{v}>\r\n\
             Call-ID: tls-call\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@{c}:5999;transport=tls>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        tls.write_all(invite.as_bytes()).await.expect("write");
        let answered = response(&mut tls, &mut seen, "SIP/2.0 200", "1 INVITE").await;
        let to = header(&answered, "To:").to_string();
        let contact = header(&answered, "Contact:").to_string();
        assert!(contact.contains("transport=tls"), "Vigil's Contact asks for TLS: {contact}");
        let ack = format!(
            "ACK sip:{v}:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {c}:5999;branch=z9hG4bK-tls-a\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{c}>;tag=caller\r\nTo: {to}\r\nCall-ID: tls-call\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(ack.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bye = format!(
            "BYE sip:{v}:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {c}:5999;branch=z9hG4bK-tls-b\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{c}>;tag=caller\r\nTo: {to}\r\nCall-ID: tls-call\r\n\
             CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(bye.as_bytes()).await.expect("write");
        if tokio::time::timeout(
            Duration::from_secs(10),
            response(&mut tls, &mut seen, "SIP/2.0 200", "2 BYE"),
        )
        .await
        .is_err()
        {
            panic!("no 200 to the BYE:\n{seen}\n--- vigil ---\n{}", vigil.log());
        }
    });
    uas.stop();
    let (ok, status, err) = vigil.ctl(&["status"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let tls = &status["connections"][1];
    assert_eq!(tls["transport"], "tls", "{status}");
    assert!(tls["accepted"].as_u64() >= Some(2), "{status}");
    assert!(tls["tls_failures"].as_u64() >= Some(1), "{status}");
    let stopped = vigil.stop();
    let cdrs = support::read_cdrs(&dir.path().join("cdr.jsonl"));
    assert_eq!(cdrs.len(), 1, "{}", stopped.log);
    assert_eq!(cdrs[0]["end_reason"], "caller-bye", "{}", cdrs[0]);
    assert!(
        stopped.log.contains("TLS handshake failed"),
        "{}",
        stopped.log
    );
}

/// A carrier reached over TLS: Vigil opens the connection, checks the
/// carrier's certificate against its own CA and address, and the call goes
/// through. The carrier here is a second Vigil with a `tls:` listener (in
/// front of a sipp callee over UDP); the caller is sipp over UDP. The trunk
/// names the carrier with a `sips:` URI and no port: TLS on 5061.
#[test]
fn a_trunk_over_tls_is_reached_on_a_verified_connection() {
    let edge = Net::new(189);
    let carrier = Net::new(190);
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path(), carrier.vigil);
    let tls_section = format!(
        "tls: {{ certificate: \"{}\", key: \"{}\", ca: \"{}\" }}\n",
        pki.file("server.pem").display(),
        pki.file("server.key").display(),
        pki.file("ca.pem").display()
    );
    // The carrier: takes calls from the edge over TLS and from its own
    // caller address (the readiness check), sends them to its callee.
    let carrier_config = format!(
        r#"listen: ["udp:{v}:5060", "tls:{v}:5061"]
trunks:
  - name: edge
    inbound: {{ from: ["{edge}/32", "{caller}/32"] }}
    route_to: callee
  - name: callee
    outbound: {{ to: "{callee}:5080" }}
cdr: {{ path: "{cdr}" }}
log: {{ level: "info", format: json }}
{tls_section}"#,
        v = carrier.vigil,
        edge = edge.vigil,
        caller = carrier.caller,
        callee = carrier.callee,
        cdr = dir.path().join("carrier-cdr.jsonl").display(),
    );
    let carrier_vigil =
        Vigil::start_with(carrier, tempfile::tempdir().expect("dir"), &carrier_config);
    let edge_config = edge
        .config(&dir.path().join("edge-cdr.jsonl"), &tls_section)
        .replacen(
            &format!("outbound: {{ to: \"{}:5080\" }}", edge.callee),
            // `sips:` alone chooses TLS, and port 5061 by default.
            &format!("outbound: {{ to: \"sips:{}\" }}", carrier.vigil),
            1,
        );
    let edge_vigil = Vigil::start_with(edge, tempfile::tempdir().expect("dir"), &edge_config);
    let uas = callee(carrier, None, &[]);
    caller(
        edge,
        edge.caller,
        None,
        "0049301234",
        &["-m", "2", "-r", "5"],
    )
    .expect_success(Duration::from_secs(30));
    uas.stop();
    let edge_stopped = edge_vigil.stop();
    let carrier_stopped = carrier_vigil.stop();
    let edge_cdrs = support::read_cdrs(&dir.path().join("edge-cdr.jsonl"));
    let carrier_cdrs = support::read_cdrs(&dir.path().join("carrier-cdr.jsonl"));
    assert_eq!(edge_cdrs.len(), 2, "{}", edge_stopped.log);
    assert_eq!(carrier_cdrs.len(), 2, "{}", carrier_stopped.log);
    for cdr in edge_cdrs.iter().chain(&carrier_cdrs) {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    }
    assert_eq!(carrier_cdrs[0]["trunk_in"], "edge");
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One phone on its own mutual-TLS connection: registers as `user`
/// (REGISTER, 401, REGISTER with digest credentials, 200), then answers
/// every CRLF keep-alive ping with a pong (RFC 5626 §4.4.1) and counts them
/// in `pings` until the connection is dropped.
async fn registered_tls_phone(
    connector: TlsConnector,
    from: IpAddr,
    to: SocketAddr,
    user: String,
    pings: Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let mut tls = connect(&connector, from, to).await.expect("connect");
    let local = tls.get_ref().0.local_addr().expect("local");
    let register = format!(
        "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-{user}-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@vigil.local>;tag=t{user}\r\nTo: <sip:{user}@vigil.local>\r\n\
         Call-ID: tls-{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{local};transport=tls>\r\n\
         Expires: 3600\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(register.as_bytes()).await.expect("register");
    let mut seen = String::new();
    let challenge = response(&mut tls, &mut seen, "SIP/2.0 401", "1 REGISTER").await;
    let Ok(vigil::sip::Message::Response(challenge)) =
        vigil::sip::decode(format!("{challenge}\r\n\r\n").as_bytes())
    else {
        panic!("the 401 decodes: {challenge}");
    };
    let Ok(vigil::sip::Message::Request(sent)) = vigil::sip::decode(register.as_bytes()) else {
        panic!("our REGISTER decodes");
    };
    let auth = vigil::config::TrunkAuth {
        password: format!("pw-{user}"),
        user: user.clone(),
    };
    let again =
        vigil::uplink::auth::authorize(&sent, &challenge, &auth, format!("z9hG4bK-{user}-2"), "c")
            .expect("credentials");
    tls.write_all(&again.encode())
        .await
        .expect("register again");
    response(&mut tls, &mut seen, "SIP/2.0 200", "2 REGISTER").await;
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let mut pending = Vec::new();
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                return;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..at + 4);
                pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if tls.write_all(b"\r\n").await.is_err() {
                    return;
                }
            }
        }
    })
}

/// A benchmark, not a check (`cargo test --release --test sip_over_tls --
/// --ignored --nocapture`): Vigil's memory per registered TLS phone held
/// with keep-alives. `VIGIL_TLS_CONNECTIONS` phones (default 15,000: the
/// machine's open-files limit is 20,000 per process, for this client as for
/// Vigil, and cannot be raised here) each open a mutual-TLS connection and
/// register on it as a user of their own with digest credentials; Vigil
/// then pings each binding on its connection every 10 s (the shortest
/// `nat_keepalive.period` without the lab switch) and each phone answers.
/// Reads Vigil's RSS before and while holding them, and its CPU over one
/// keep-alive period.
#[test]
#[ignore = "a benchmark: run it on purpose"]
fn registered_tls_connections_memory() {
    let count: usize = std::env::var("VIGIL_TLS_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000);
    let net = Net::new(193);
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path(), net.vigil);
    let tls_at = SocketAddr::new(net.vigil, 5061);
    let users: String = (0..count)
        .map(|i| format!("  - {{ user: \"u{i}\", password: \"pw-u{i}\" }}\n"))
        .collect();
    let config = mutual_tls_config(
        net,
        dir.path(),
        &pki,
        &format!(
            "limits: {{ max_connections_per_source: 100000, max_connections: 100000, per_source_rps: 1000000 }}\n\
             registrar: {{ domain: vigil.local, db: \"{}\" }}\n\
             nat_keepalive: {{ period: 10 }}\n\
             users:\n{users}",
            dir.path().join("registrar.db").display()
        ),
    );
    let vigil = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &config);
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(vigil.pid());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let connector = pki.client(true);
    let pings = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = std::time::Instant::now();
    let held = runtime.block_on(async {
        let mut held = Vec::with_capacity(count);
        for chunk in (0..count).collect::<Vec<_>>().chunks(250) {
            let mut tasks = tokio::task::JoinSet::new();
            for i in chunk {
                tasks.spawn(registered_tls_phone(
                    connector.clone(),
                    net.caller,
                    tls_at,
                    format!("u{i}"),
                    pings.clone(),
                ));
            }
            while let Some(phone) = tasks.join_next().await {
                held.push(phone.expect("phone"));
            }
        }
        held
    });
    let setup = started.elapsed();
    // One keep-alive period (and a little) with every phone registered.
    let cpu_before = cpu_ticks(vigil.pid());
    let pinged_before = pings.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(11));
    let cpu = cpu_ticks(vigil.pid()) - cpu_before;
    let pinged = pings.load(std::sync::atomic::Ordering::Relaxed) - pinged_before;
    let after = rss_kib(vigil.pid());
    let (_, status, _) = vigil.ctl(&["status"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let open = status["connections"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["transport"] == "tls"))
        .and_then(|tls| tls["open"].as_u64())
        .unwrap_or(0);
    println!(
        "registered TLS phones: {open} connections open (of {count}), registered in {:.1} s; \
         {pinged} keep-alive pings answered in 11 s; Vigil RSS {before} KiB before, {after} KiB \
         holding: {:.2} KiB per registered connection; Vigil CPU over those 11 s: {:.1} % of a core",
        setup.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / count as f64,
        cpu as f64 / USER_HZ as f64 / 11.0 * 100.0,
    );
    assert_eq!(open as usize, count, "every connection held");
    assert!(
        pinged as usize >= count,
        "every binding pinged within a period: {pinged} of {count}"
    );
    for phone in held {
        phone.abort();
    }
    drop(runtime);
    vigil.stop();
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(") ")?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The unit of /proc's CPU times (USER_HZ): 100 per second on every Linux
/// architecture, whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;
