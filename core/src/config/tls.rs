//! `tls:` — the certificate Vigil shows its TLS peers, the CAs it trusts to
//! vouch for theirs, and whether it insists on checking them (RFC 3261 §26.2.1,
//! RFC 5630). Used by `tls:` listeners and by trunks reached over TLS.
//!
//! Only the paths are checked here: parsing touches no file, because a reload
//! parses too and must not fail half-way on a file an operator is replacing.
//! The files are read when the rustls configs are built
//! (the transport layer's `tls` module), and `vigil check` builds them to find a missing
//! file, a key that does not match its certificate or an expired certificate.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `tls:` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TlsFile {
    /// The PEM certificate chain Vigil presents, its own certificate first.
    pub certificate: PathBuf,
    /// The PEM private key of `certificate` (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// A PEM bundle of the CAs trusted to vouch for peers; absent: the host's
    /// trust store (what its `ca-certificates` package keeps up to date).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Mutual TLS: a client that presents no certificate signed by a trusted
    /// CA is refused (Microsoft Teams Direct Routing expects this).
    #[serde(default)]
    pub require_client_certificate: bool,
    /// Whether a server's certificate must be valid for the host Vigil
    /// connects to; a trunk's `tls_verify` overrides it.
    #[serde(default = "yes")]
    pub verify_server: bool,
}

fn yes() -> bool {
    true
}

/// `tls:` as Vigil uses it. The paths are not known to exist: see the
/// module's doc for when they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// `None`: the host's trust store.
    pub ca: Option<PathBuf>,
    pub require_client_certificate: bool,
    /// The default for trunks without their own `tls_verify`.
    pub verify_server: bool,
}

impl TlsFile {
    /// The section as Vigil uses it, and every problem with it as
    /// `(key under tls., message)`.
    pub fn check(&self) -> (TlsConfig, Vec<(String, String)>) {
        let mut problems = Vec::new();
        for (key, path) in [("certificate", &self.certificate), ("key", &self.key)] {
            if let Some(message) = path_problem(path) {
                problems.push((key.to_string(), message));
            }
        }
        if let Some(message) = self.ca.as_deref().and_then(path_problem) {
            problems.push((
                "ca".to_string(),
                format!("{message} (leave it out for the host's trust store)"),
            ));
        }
        (self.validated(), problems)
    }

    fn validated(&self) -> TlsConfig {
        TlsConfig {
            certificate: self.certificate.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            require_client_certificate: self.require_client_certificate,
            verify_server: self.verify_server,
        }
    }
}

/// What is wrong with a path as written, before anyone opens it.
fn path_problem(path: &Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        Some("must not be empty".to_string())
    } else if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
        // `Path` forgets a trailing slash (`/etc/ssl/` has the file name
        // `ssl`), but whoever wrote one meant a directory.
        Some(format!("{} names no file", path.display()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(certificate: &str, key: &str, ca: Option<&str>) -> TlsFile {
        TlsFile {
            certificate: certificate.into(),
            key: key.into(),
            ca: ca.map(PathBuf::from),
            require_client_certificate: false,
            verify_server: true,
        }
    }

    #[test]
    fn paths_are_checked_without_being_opened() {
        let (config, problems) =
            file("/nonexistent/cert.pem", "/nonexistent/key.pem", None).check();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.certificate, Path::new("/nonexistent/cert.pem"));
        assert!(config.verify_server);
        let (_, problems) = file("", "/etc/vigil/", Some("..")).check();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["certificate", "key", "ca"]);
        assert!(problems[2].1.contains("trust store"), "{problems:?}");
    }
}
