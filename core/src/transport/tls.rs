//! The rustls configurations for SIP over TLS (RFC 3261 §26.2.1, RFC 5630
//! §3.1.3: a SIP entity authenticates a server by the host name it connected
//! to), built from the validated `tls:` section. This module owns reading the
//! certificate, key and CA files and turning them into a
//! [`rustls::ServerConfig`] for `tls:` listeners and a
//! [`rustls::ClientConfig`] for connections to trunks; it opens no socket.
//!
//! Config parsing never reads these files (a reload parses too); they are read
//! here, each time a config is built, so a certificate replaced on disk is
//! picked up by the next reload, and a bad one makes that build fail with a
//! [`TlsSetupError`] naming the file. [`check_files`] is `vigil check`'s
//! version of the same reading, which also warns about certificates outside
//! their validity period.
//!
//! The crypto is rustls' `ring` provider, passed explicitly to every builder
//! so nothing depends on a process-wide default being installed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, DigitallySignedStruct, InconsistentKeys, RootCertStore, ServerConfig,
    SignatureScheme,
};
use x509_cert::der::Decode;

use crate::config::TlsConfig;

/// Which file of `tls:` a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFileKind {
    Certificate,
    Key,
    Ca,
}

impl TlsFileKind {
    /// The config key that names the file, for `file:line: key:` problems.
    pub fn config_key(self) -> &'static str {
        match self {
            TlsFileKind::Certificate => "tls.certificate",
            TlsFileKind::Key => "tls.key",
            TlsFileKind::Ca => "tls.ca",
        }
    }
}

/// Why the TLS configs could not be built. Each names the file and what is
/// wrong with it; [`TlsSetupError::file_kind`] says which key named it.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        kind: TlsFileKind,
        file: PathBuf,
        source: io::Error,
    },
    #[error("{}: not a readable PEM file: {source}", file.display())]
    Pem {
        kind: TlsFileKind,
        file: PathBuf,
        source: pem::Error,
    },
    #[error("{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)", file.display())]
    NoCertificate { kind: TlsFileKind, file: PathBuf },
    #[error("{}: certificate {index} cannot be used: {reason}", file.display())]
    BadCertificate {
        kind: TlsFileKind,
        file: PathBuf,
        /// 1-based, in the file's order.
        index: usize,
        reason: String,
    },
    #[error(
        "{}: holds no private key (PEM: PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")",
        file.display()
    )]
    NoKey { file: PathBuf },
    #[error("{}: the private key cannot be used: {source}", file.display())]
    BadKey {
        file: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: the private key does not match the certificate in {}", key.display(), certificate.display())]
    KeyMismatch { key: PathBuf, certificate: PathBuf },
    #[error(
        "the host's trust store holds no usable CA certificate{errors}; name a CA bundle in `tls.ca`"
    )]
    NoSystemRoots {
        /// What went wrong reading it, as `: …`, or empty.
        errors: String,
    },
    #[error("cannot verify peers against the trusted CAs: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("rustls refused the configuration: {0}")]
    Rustls(#[source] rustls::Error),
}

impl TlsSetupError {
    /// Which `tls:` key names the file at fault (`None`: none in particular).
    pub fn file_kind(&self) -> Option<TlsFileKind> {
        match self {
            TlsSetupError::Read { kind, .. }
            | TlsSetupError::Pem { kind, .. }
            | TlsSetupError::NoCertificate { kind, .. }
            | TlsSetupError::BadCertificate { kind, .. } => Some(*kind),
            TlsSetupError::NoKey { .. }
            | TlsSetupError::BadKey { .. }
            | TlsSetupError::KeyMismatch { .. } => Some(TlsFileKind::Key),
            TlsSetupError::NoSystemRoots { .. } | TlsSetupError::Verifier(_) => {
                Some(TlsFileKind::Ca)
            }
            TlsSetupError::Rustls(_) => None,
        }
    }
}

/// The server side, for `tls:` listeners: presents `tls.certificate`, and
/// with `require_client_certificate` refuses a client without a certificate
/// issued by a CA in `tls.ca` (else the host's trust store).
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = provider();
    let identity = identity(tls, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?;
    let builder = if tls.require_client_certificate {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(tls)?, provider).build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Ok(Arc::new(builder.with_cert_resolver(Arc::new(
        SingleCertAndKey::from(identity),
    ))))
}

/// The client side, for connections to trunks: presents `tls.certificate`
/// when the server asks (mutual TLS), and with `verify_server` checks the
/// server's chain against `tls.ca` (else the host's trust store) and its name
/// against the [`ServerName`] given to each connection, the trunk's host.
///
/// Without `verify_server` any certificate is accepted: see
/// [`UnverifiedServer`] for what that gives away. Pass the trunk's
/// `tls_verify`.
pub fn client_config(
    tls: &TlsConfig,
    verify_server: bool,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = provider();
    let identity = identity(tls, &provider)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?;
    let builder = if verify_server {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots(tls)?, provider).build()?;
        builder.with_webpki_verifier(verifier)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(UnverifiedServer {
                algorithms: provider.signature_verification_algorithms,
            }))
    };
    Ok(Arc::new(builder.with_client_cert_resolver(Arc::new(
        SingleCertAndKey::from(identity),
    ))))
}

/// The name a connection to `host` (a trunk's host, as configured) verifies
/// the server's certificate against: a DNS name or an IP address literal.
pub fn server_name(
    host: &str,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_string())
}

/// Something `vigil check` warns about but that does not stop Vigil: a
/// certificate outside its validity period (peers will refuse it, but the
/// operator may be mid-renewal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsWarning {
    pub kind: TlsFileKind,
    pub message: String,
}

impl fmt::Display for TlsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What `vigil check` finds in the `tls:` files.
#[derive(Debug, Default)]
pub struct TlsFileReport {
    /// Each would make building the configs fail (a reload be refused).
    pub errors: Vec<TlsSetupError>,
    pub warnings: Vec<TlsWarning>,
}

/// Reads every `tls:` file as the config builders would, collecting every
/// problem rather than the first, and warns about certificates (in
/// `certificate` and `ca`) that are expired or not yet valid at `now`.
///
/// The host's trust store is only looked at when something would use it
/// (no `ca`, and client certificates are required or servers verified).
pub fn check_files(tls: &TlsConfig, now: SystemTime) -> TlsFileReport {
    let mut report = TlsFileReport::default();
    let provider = provider();
    let chain = load_chain(TlsFileKind::Certificate, &tls.certificate);
    let key = load_key(&tls.key);
    match (chain, key) {
        (Ok(chain), Ok(key)) => {
            report.warnings.extend(validity_warnings(
                TlsFileKind::Certificate,
                &tls.certificate,
                &chain,
                now,
            ));
            if let Err(e) = certified_key(tls, chain, key, &provider) {
                report.errors.push(e);
            }
        }
        (chain, key) => {
            if let Ok(chain) = &chain {
                report.warnings.extend(validity_warnings(
                    TlsFileKind::Certificate,
                    &tls.certificate,
                    chain,
                    now,
                ));
            }
            report.errors.extend(chain.err());
            report.errors.extend(key.err());
        }
    }
    match &tls.ca {
        Some(ca) => match load_chain(TlsFileKind::Ca, ca) {
            Ok(certs) => {
                report
                    .warnings
                    .extend(validity_warnings(TlsFileKind::Ca, ca, &certs, now));
                report.errors.extend(root_store(ca, certs).err());
            }
            Err(e) => report.errors.push(e),
        },
        None if tls.require_client_certificate || tls.verify_server => {
            report.errors.extend(system_roots().err());
        }
        None => {}
    }
    report
}

/// Accepts any server certificate, for trunks with `tls_verify: false`.
///
/// **Danger**: this gives up TLS's authentication of the server. Anyone on the
/// path can present a certificate of their own and read and change the
/// signalling (and the SDP's SRTP keys with it). What remains is what
/// encryption alone gives against a passive listener. It exists for carriers
/// and labs whose certificates are self-signed or do not name the host Vigil
/// connects to; prefer adding their CA to `tls.ca`.
///
/// The handshake's signature is still checked against the certificate the
/// server sent, so the server must hold that certificate's private key: a
/// broken or truncated handshake fails as it would with verification.
#[derive(Debug)]
pub struct UnverifiedServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for UnverifiedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// rustls' `ring` provider: Rust and assembly built by `cc`, with no cmake
/// or nasm to install (which `aws-lc-rs`'s C build may want).
///
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange
/// (X25519MLKEM768). SIP peers (carriers' SBCs, Kamailio, phones) negotiate
/// X25519 or P-256 today, which `ring` has; switching to `aws-lc-rs` is this
/// one function and a Cargo feature when they move.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and its key, checked to belong together.
fn identity(
    tls: &TlsConfig,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let chain = load_chain(TlsFileKind::Certificate, &tls.certificate)?;
    let key = load_key(&tls.key)?;
    certified_key(tls, chain, key, provider).map(Arc::new)
}

fn certified_key(
    tls: &TlsConfig,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsSetupError> {
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsSetupError::KeyMismatch {
                key: tls.key.clone(),
                certificate: tls.certificate.clone(),
            }
        }
        rustls::Error::InvalidCertificate(reason) => TlsSetupError::BadCertificate {
            kind: TlsFileKind::Certificate,
            file: tls.certificate.clone(),
            index: 1,
            reason: format!("{reason:?}"),
        },
        other => TlsSetupError::BadKey {
            file: tls.key.clone(),
            source: other,
        },
    })
}

/// A client config for Vigil's own outside parties (the CDR database with
/// `sslmode=require`): no certificate of its own, the server checked against
/// the host's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` too) and its name.
pub fn system_client_config() -> Result<ClientConfig, TlsSetupError> {
    let provider = provider();
    let roots = Arc::new(system_roots()?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?
        .with_webpki_verifier(verifier)
        .with_no_client_auth())
}

/// The CAs peers' certificates are checked against.
fn roots(tls: &TlsConfig) -> Result<Arc<RootCertStore>, TlsSetupError> {
    match &tls.ca {
        Some(ca) => root_store(ca, load_chain(TlsFileKind::Ca, ca)?).map(Arc::new),
        None => system_roots().map(Arc::new),
    }
}

/// A `tls.ca` bundle; every certificate in it must be usable as a trust
/// anchor (a bundle that silently lost a CA would refuse peers later).
fn root_store(
    file: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        store.add(cert).map_err(|e| TlsSetupError::BadCertificate {
            kind: TlsFileKind::Ca,
            file: file.to_path_buf(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// The host's trust store (`rustls-native-certs`: on Linux the distribution's
/// bundle, or `SSL_CERT_FILE`/`SSL_CERT_DIR`). A store with a few unreadable
/// entries is used for what it has; only an empty one is an error.
fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let errors = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsSetupError::NoSystemRoots {
            errors: if errors.is_empty() {
                String::new()
            } else {
                format!(": {errors}")
            },
        });
    }
    Ok(store)
}

fn read(kind: TlsFileKind, file: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(file).map_err(|source| TlsSetupError::Read {
        kind,
        file: file.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in order; at least one.
fn load_chain(
    kind: TlsFileKind,
    file: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = read(kind, file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::Pem {
            kind,
            file: file.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            kind,
            file: file.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file, whichever of the three encodings.
fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let bytes = read(TlsFileKind::Key, file)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsSetupError::NoKey {
            file: file.to_path_buf(),
        },
        source => TlsSetupError::Pem {
            kind: TlsFileKind::Key,
            file: file.to_path_buf(),
            source,
        },
    })
}

/// A warning for each certificate of `certs` not valid at `now`. One that
/// does not parse is left to rustls to refuse when it is used.
fn validity_warnings(
    kind: TlsFileKind,
    file: &Path,
    certs: &[CertificateDer<'_>],
    now: SystemTime,
) -> Vec<TlsWarning> {
    let mut warnings = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let Ok(cert) = x509_cert::Certificate::from_der(der) else {
            continue;
        };
        let tbs = cert.tbs_certificate();
        let validity = tbs.validity();
        let when = if now > validity.not_after.to_system_time() {
            format!("expired on {}", validity.not_after)
        } else if now < validity.not_before.to_system_time() {
            format!("is not valid before {}", validity.not_before)
        } else {
            continue;
        };
        warnings.push(TlsWarning {
            kind,
            message: format!(
                "{}: certificate {} ({}) {when}; peers will refuse it",
                file.display(),
                i + 1,
                tbs.subject()
            ),
        });
    }
    warnings
}

#[cfg(test)]
mod tests;
