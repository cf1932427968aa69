//! TLS to the broker: rustls with the *ring* provider, passed explicitly
//! (the crate is built without a process-wide default provider), trusting
//! only the CA in `ca_file` and verifying the broker's certificate against
//! the host name in `broker`. Optionally a client certificate.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;

/// Why the TLS configuration could not be built; [`TlsError::key`] names
/// the policy key to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}: fix the path or the file's permissions", path.display())]
    Read {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No usable PEM certificate in the file.
    #[error("no PEM certificate in {} ({why}): give {what} in PEM (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the file should hold.
        what: &'static str,
        /// Details.
        why: String,
    },
    /// No usable private key in `key_file`.
    #[error("no PEM private key in {} ({why}): give the client certificate's key (PKCS#8, PKCS#1 or SEC1 PEM)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// Details.
        why: String,
    },
    /// rustls refused the combination (e.g. the key does not match the
    /// certificate).
    #[error("TLS setup failed: {0}: check that key_file is the key of cert_file")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// The policy key this error is about.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Self::Read { key, .. } | Self::NoCertificate { key, .. } => key,
            Self::NoKey { .. } | Self::Rustls(_) => "key_file",
        }
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
    what: &'static str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let no_cert = |why: String| TlsError::NoCertificate {
        key,
        path: path.to_path_buf(),
        what,
        why,
    };
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_cert(e.to_string()))?;
    if certs.is_empty() {
        return Err(no_cert("none found".into()));
    }
    Ok(certs)
}

/// The client configuration: trust `ca` only; present `client` (the
/// certificate and key files) if given.
///
/// # Errors
/// A file is unreadable or holds no usable certificate or key.
pub(crate) fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = certificates("ca_file", ca, "the CA certificate that signed the broker's")?;
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCertificate {
            key: "ca_file",
            path: ca.to_path_buf(),
            what: "the CA certificate that signed the broker's",
            why: format!("{ignored} certificate(s) could not be parsed"),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates("cert_file", cert, "the client certificate")?;
            let pem = read("key_file", key)?;
            let private = rustls_pemfile::private_key(&mut BufReader::new(pem.as_slice()))
                .map_err(|e| TlsError::NoKey {
                    path: key.to_path_buf(),
                    why: e.to_string(),
                })?
                .ok_or_else(|| TlsError::NoKey {
                    path: key.to_path_buf(),
                    why: "none found".into(),
                })?;
            builder.with_client_auth_cert(chain, private)?
        }
    };
    Ok(config)
}
