//! The TLS configs built from files a test CA issues on the spot (rcgen,
//! into a temporary directory: no private key is checked in), and real
//! handshakes between them over loopback with tokio-rustls.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// A CA and the files it issued, written out as an operator would have them.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Vigil test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(params, ca_key);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).expect("write CA");
        let pki = Pki { dir, ca };
        pki.issue("server", &["localhost", "127.0.0.1"], Some(&issuer), None);
        pki.issue("client", &["client.test"], Some(&issuer), None);
        pki.issue("rogue", &["client.test"], None, None);
        pki.issue("expired", &["localhost"], Some(&issuer), Some((2001, 2002)));
        pki.issue("future", &["localhost"], Some(&issuer), Some((2999, 3000)));
        pki
    }

    /// `NAME.pem` and `NAME.key`: a certificate for `names`, signed by
    /// `issuer` (else by itself), valid now unless `validity` gives other
    /// years (from 1 January to 1 January).
    fn issue(
        &self,
        name: &str,
        names: &[&str],
        issuer: Option<&Issuer<'_, KeyPair>>,
        validity: Option<(i32, i32)>,
    ) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if let Some((not_before, not_after)) = validity {
            params.not_before = date_time_ymd(not_before, 1, 1);
            params.not_after = date_time_ymd(not_after, 1, 1);
        }
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer),
            None => params.self_signed(&key),
        }
        .expect("certificate");
        std::fs::write(self.cert(name), cert.pem()).expect("write certificate");
        std::fs::write(self.key(name), key.serialize_pem()).expect("write key");
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    /// `tls:` with `name`'s certificate and key, trusting the test CA.
    fn tls(&self, name: &str) -> TlsConfig {
        TlsConfig {
            certificate: self.cert(name),
            key: self.key(name),
            ca: Some(self.ca.clone()),
            require_client_certificate: false,
            verify_server: true,
        }
    }

    fn mutual(&self, name: &str) -> TlsConfig {
        TlsConfig {
            require_client_certificate: true,
            ..self.tls(name)
        }
    }
}

#[test]
fn both_configs_build_from_a_chain_a_key_and_a_ca() {
    let pki = Pki::new();
    server_config(&pki.tls("server")).expect("server config");
    server_config(&pki.mutual("server")).expect("server config with mutual TLS");
    client_config(&pki.tls("client"), true).expect("verifying client config");
    client_config(&pki.tls("client"), false).expect("trusting client config");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let pki = Pki::new();
    let tls = TlsConfig {
        key: pki.key("client"),
        ..pki.tls("server")
    };
    let e = server_config(&tls).expect_err("mismatched key");
    assert!(matches!(e, TlsSetupError::KeyMismatch { .. }), "{e:?}");
    assert_eq!(e.file_kind(), Some(TlsFileKind::Key));
    let message = e.to_string();
    assert!(
        message.contains("client.key") && message.contains("server.pem"),
        "names both files: {message}"
    );
    let e = client_config(&tls, true).expect_err("the client side checks it too");
    assert!(matches!(e, TlsSetupError::KeyMismatch { .. }), "{e:?}");
}

#[test]
fn missing_and_wrong_files_are_named() {
    let pki = Pki::new();
    let missing = TlsConfig {
        certificate: pki.dir.path().join("nope.pem"),
        ..pki.tls("server")
    };
    let e = server_config(&missing).expect_err("missing certificate");
    assert_eq!(e.file_kind(), Some(TlsFileKind::Certificate));
    assert!(e.to_string().contains("nope.pem: cannot read"), "{e}");

    let key_is_a_cert = TlsConfig {
        key: pki.cert("server"),
        ..pki.tls("server")
    };
    let e = server_config(&key_is_a_cert).expect_err("no key in it");
    assert!(matches!(e, TlsSetupError::NoKey { .. }), "{e:?}");
    assert!(e.to_string().contains("holds no private key"), "{e}");

    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let bad_ca = TlsConfig {
        ca: Some(garbage),
        ..pki.mutual("server")
    };
    let e = server_config(&bad_ca).expect_err("nothing to trust");
    assert_eq!(e.file_kind(), Some(TlsFileKind::Ca));
    assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    // Without client certificates the CA is not needed by the server…
    server_config(&TlsConfig {
        require_client_certificate: false,
        ..bad_ca.clone()
    })
    .expect("no CA needed");
    // …but a verifying client needs it.
    let e = client_config(&bad_ca, true).expect_err("nothing to trust");
    assert_eq!(e.file_kind(), Some(TlsFileKind::Ca));
}

#[test]
fn check_files_reports_every_problem_and_warns_about_dates() {
    let pki = Pki::new();
    let now = SystemTime::now();
    let report = check_files(&pki.mutual("server"), now);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let report = check_files(&pki.tls("expired"), now);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert_eq!(report.warnings[0].kind, TlsFileKind::Certificate);
    let message = report.warnings[0].to_string();
    assert!(
        message.contains("expired.pem: certificate 1 (CN=expired) expired on 2002-01-01"),
        "{message}"
    );

    let report = check_files(&pki.tls("future"), now);
    assert!(
        report.warnings[0].message.contains("not valid before 2999"),
        "{:?}",
        report.warnings
    );

    let broken = TlsConfig {
        key: pki.key("client"),
        ca: Some(pki.dir.path().join("no-ca.pem")),
        ..pki.tls("server")
    };
    let report = check_files(&broken, now);
    let kinds: Vec<_> = report.errors.iter().map(TlsSetupError::file_kind).collect();
    assert_eq!(
        kinds,
        [Some(TlsFileKind::Key), Some(TlsFileKind::Ca)],
        "{:?}",
        report.errors
    );
}

#[test]
fn server_names_are_dns_names_or_addresses() {
    assert!(matches!(
        server_name("sip.example.com"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(matches!(
        server_name("[2001:db8::1]"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(server_name("not a host").is_err());
}

/// One TLS connection from a client config to a server config over
/// loopback: `Ok` when both ends finished the handshake and the client read
/// what the server wrote on it, else what each end said.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(server);
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"SIP/2.0 200 OK\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });
    let name = server_name(name).map_err(|e| e.to_string())?;
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("client: {e}"))?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply)
            .await
            .map_err(|e| format!("client: {e}"))?;
        Ok::<_, String>(reply)
    };
    let within = Duration::from_secs(10);
    let client = tokio::time::timeout(within, client)
        .await
        .map_err(|_| "client: timed out".to_string())?;
    let server = tokio::time::timeout(within, served)
        .await
        .map_err(|_| "server: timed out".to_string())?
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("server: {e}"));
    match (client, server) {
        (Ok(reply), Ok(())) if reply == b"SIP/2.0 200 OK\r\n\r\n" => Ok(()),
        (Ok(reply), Ok(())) => Err(format!("client read {reply:?}")),
        (Err(c), Err(s)) => Err(format!("{c}; {s}")),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
    }
}

/// A phone with no certificate of its own that trusts the test CA.
fn anonymous_client(ca: &Path) -> Arc<ClientConfig> {
    let provider = provider();
    let certs = load_chain(TlsFileKind::Ca, ca).expect("CA");
    let roots = root_store(ca, certs).expect("roots");
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let server = server_config(&pki.mutual("server")).expect("server config");

    let anonymous = handshake(server.clone(), anonymous_client(&pki.ca), "localhost").await;
    let refusal = anonymous.expect_err("a client without a certificate is refused");
    assert!(refusal.contains("server:"), "the server refused: {refusal}");

    let rogue = client_config(&pki.tls("rogue"), true).expect("rogue client config");
    let refusal = handshake(server.clone(), rogue, "localhost")
        .await
        .expect_err("a self-signed client certificate is refused");
    assert!(refusal.contains("server:"), "the server refused: {refusal}");

    let client = client_config(&pki.tls("client"), true).expect("client config");
    handshake(server.clone(), client.clone(), "localhost")
        .await
        .expect("a client with a certificate from the CA is admitted");
    handshake(server, client, "127.0.0.1")
        .await
        .expect("an IP address in the certificate is a name too");
}

#[tokio::test]
async fn a_verifying_client_refuses_the_wrong_name_and_an_unverifying_one_connects() {
    let pki = Pki::new();
    let server = server_config(&pki.tls("server")).expect("server config");

    let verifying = client_config(&pki.tls("client"), true).expect("client config");
    let refusal = handshake(server.clone(), verifying, "sip.example.com")
        .await
        .expect_err("the certificate is for localhost");
    assert!(
        refusal.contains("client:") && refusal.contains("not valid for name"),
        "the client refused: {refusal}"
    );

    let trusting = client_config(&pki.tls("client"), false).expect("client config");
    handshake(server, trusting.clone(), "sip.example.com")
        .await
        .expect("verification off: any name will do");

    // Off means off for the chain too: a self-signed server is accepted.
    let rogue = server_config(&pki.tls("rogue")).expect("rogue server config");
    handshake(rogue, trusting, "localhost")
        .await
        .expect("a self-signed server is accepted without verification");
}
