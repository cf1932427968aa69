//! Sessions: the client's certificates and trust (a PKI directory inside
//! the connector's state dir), and one session at a time whose event loop
//! this module drives itself, so connection failures surface as states
//! (the library's own `wait_for_connection` waits forever on, e.g., a
//! certificate mismatch).
//!
//! Each connection is a fresh session (the library's own reconnects are
//! off): the caller reconnects with its backoff and recreates the
//! subscription, whatever happened to the old session on the server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use opcua_client::transport::TcpConnector;
use opcua_client::{Client, ClientBuilder, IdentityToken, Password, Session, SessionEventLoop};
use opcua_crypto::{CertificateStore, KeySize as _, PrivateKey, SecurityPolicy, X509Data, X509};
use opcua_types::{
    ApplicationDescription, ApplicationType, EndpointDescription, LocalizedText, StatusCode,
    UserTokenPolicy,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::Config;

/// The session keep-alive (a read of the server state) runs this often;
/// two failed in a row end the session.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Failed keep-alives that end the session (a server that stopped
/// answering without closing the connection).
const MAX_FAILED_KEEP_ALIVES: u64 = 2;
/// Validity of a generated client certificate.
const GENERATED_CERT_DAYS: u32 = 3650;

/// Everything needed to open sessions, prepared once per run.
pub struct Setup {
    client: Client,
    endpoint: EndpointDescription,
    identity: IdentityToken,
}

/// The state of one session's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting (secure channel, session creation, activation).
    Connecting,
    /// The session is active.
    Up,
    /// The connection failed or was lost: why. Final for this session.
    Down(String),
}

/// One session and the task driving its event loop.
pub struct Link {
    /// The session (requests go through it).
    pub session: Arc<Session>,
    state: watch::Receiver<LinkState>,
    task: JoinHandle<()>,
}

impl Link {
    /// Waits until the session is active.
    ///
    /// # Errors
    /// Why it failed to connect.
    pub async fn up(&mut self) -> Result<(), String> {
        let state = self
            .state
            .wait_for(|s| *s != LinkState::Connecting)
            .await
            .map(|s| s.clone())
            .unwrap_or_else(|_| LinkState::Down("the session's event loop ended".into()));
        match state {
            LinkState::Up => Ok(()),
            LinkState::Down(reason) => Err(reason),
            LinkState::Connecting => Err("still connecting".into()),
        }
    }

    /// Resolves when the connection is lost: why.
    pub async fn down(&mut self) -> String {
        match self
            .state
            .wait_for(|s| matches!(s, LinkState::Down(_)))
            .await
        {
            Ok(state) => match &*state {
                LinkState::Down(reason) => reason.clone(),
                _ => "connection lost".into(),
            },
            Err(_) => "the session's event loop ended".into(),
        }
    }

    /// Closes the session politely (bounded by `timeout`), then stops its
    /// event loop.
    pub async fn close(self, timeout: Duration) {
        if matches!(*self.state.borrow(), LinkState::Up) {
            let _ = tokio::time::timeout(timeout, self.session.disconnect()).await;
        }
        self.task.abort();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to check for the status codes a failed connection usually ends
/// with (`""` for the others).
fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BadCertificateHostNameInvalid => {
            " (the URL's host is not a name in the server certificate: use a host name the certificate lists)"
        }
        StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed => {
            " (the server's certificate is not the one in server_certificate_file)"
        }
        StatusCode::BadCertificateUriInvalid => {
            " (the server's application URI does not match its certificate)"
        }
        StatusCode::BadCertificateTimeInvalid => " (a certificate has expired or is not yet valid)",
        StatusCode::BadIdentityTokenRejected
        | StatusCode::BadUserAccessDenied
        | StatusCode::BadIdentityTokenInvalid => " (check username and password_file)",
        StatusCode::BadTcpEndpointUrlInvalid => {
            " (the server offers no endpoint with this URL path, security_policy and security_mode)"
        }
        StatusCode::BadCommunicationError
        | StatusCode::BadConnectionClosed
        | StatusCode::BadNotConnected => " (is the server running and reachable?)",
        _ => "",
    }
}

/// A status code with what to check.
fn describe(status: StatusCode) -> String {
    format!("{status}{}", hint(status))
}

impl Setup {
    /// Prepares the client: the PKI directory `state_dir/pki` (trusting
    /// exactly `server_certificate_file`, or any server with
    /// `trust_any_server`), the client's certificate (configured, or
    /// generated once into the PKI directory when security needs one), and
    /// the identity.
    ///
    /// # Errors
    /// A configured file is unreadable or invalid, or the PKI directory
    /// cannot be written.
    pub fn prepare(name: &str, state_dir: &Path, config: &Config) -> anyhow::Result<Self> {
        let pki = state_dir.join("pki");
        // Trust is exactly what the policy says, every start: certificates
        // trusted or rejected by earlier runs are forgotten.
        for dir in ["trusted", "rejected"] {
            let path = pki.join(dir);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("clear {}", path.display()))?;
            }
            std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        }
        let application_uri = config
            .application_uri
            .clone()
            .unwrap_or_else(|| format!("urn:edgeward:connector:{name}"));
        let application_name = format!("edgeward connector {name}");
        let secure = !matches!(config.policy, SecurityPolicy::None);

        let mut builder = ClientBuilder::new()
            .application_name(&application_name)
            .application_uri(&application_uri)
            .product_uri("urn:edgeward")
            .pki_dir(&pki)
            .create_sample_keypair(false)
            .trust_server_certs(config.trust_any_server)
            .verify_server_certs(true)
            // Each connection is a new session, reconnects are ours.
            .session_retry_limit(0)
            .recreate_subscriptions(false)
            .session_name(format!("edgeward {name}"))
            .request_timeout(config.timeout)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .max_failed_keep_alive_count(MAX_FAILED_KEEP_ALIVES);

        let own = match &config.client_cert {
            Some((cert, key)) => Some(load_own_pair(&pki, cert, key)?),
            None if secure => Some(generated_pair(&pki, &application_uri, &application_name)?),
            None => None,
        };
        if let Some((cert, key)) = own {
            builder = builder.certificate_path(cert).private_key_path(key);
        }

        if let Some(path) = &config.server_certificate {
            let cert = read_cert(path)
                .with_context(|| format!("connector.server_certificate_file {}", path.display()))?;
            let trusted = pki
                .join("trusted")
                .join(CertificateStore::cert_file_name(&cert));
            let der = cert
                .to_der()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("re-encode {}", path.display()))?;
            std::fs::write(&trusted, der)
                .with_context(|| format!("write {}", trusted.display()))?;
        } else if config.trust_any_server && secure {
            crate::log!(
                "warn",
                "opcua: trust_any_server = true: any server certificate is accepted, a machine in the middle would be too; set server_certificate_file to pin the server"
            );
        }

        let client = builder
            .client()
            .map_err(|errors| anyhow::anyhow!("OPC UA client setup: {}", errors.join("; ")))?;

        let identity = match &config.user {
            None => IdentityToken::Anonymous,
            Some((user, file)) => {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("connector.password_file {}: cannot read it", file.display())
                })?;
                let password = text.strip_suffix('\n').unwrap_or(&text);
                let password = password.strip_suffix('\r').unwrap_or(password);
                IdentityToken::UserName(user.clone(), Password::new(password))
            }
        };
        // Only the URL, policy and mode matter here: the server's matching
        // endpoint (with its own token policies) replaces this description.
        let endpoint = EndpointDescription::from((
            config.url.as_str(),
            config.policy.to_uri(),
            config.mode,
            UserTokenPolicy::anonymous(),
        ));
        Ok(Self {
            client,
            endpoint,
            identity,
        })
    }

    /// Opens a session: asks the server for its endpoints, picks the one
    /// matching the policy, and starts driving the session's event loop
    /// (the connection is made there: [`Link::up`] tells how it went).
    ///
    /// # Errors
    /// The server could not be asked (not reachable, ...) or offers no
    /// matching endpoint.
    pub async fn open(&mut self) -> Result<Link, String> {
        let (session, event_loop) = self
            .client
            .connect_to_matching_endpoint(self.endpoint.clone(), self.identity.clone())
            .await
            .map_err(|e| format!("{e}{}", hint(e.status())))?;
        // One connection per session: a loss ends the event loop, and the
        // caller reconnects with a new session (and a new subscription).
        session.disable_reconnects();
        let (tx, rx) = watch::channel(LinkState::Connecting);
        let task = tokio::spawn(drive(Arc::clone(&session), event_loop, tx));
        Ok(Link {
            session,
            state: rx,
            task,
        })
    }
}

/// Runs the session's event loop, reporting [`LinkState`]s. With
/// reconnects disabled the loop ends at the first failure or loss: the
/// session is not reused.
async fn drive(
    session: Arc<Session>,
    event_loop: SessionEventLoop<TcpConnector>,
    tx: watch::Sender<LinkState>,
) {
    let run = event_loop.run();
    let mut run = std::pin::pin!(run);
    let reason = tokio::select! {
        status = &mut run => describe(status),
        _ = session.wait_for_connection() => {
            let _ = tx.send(LinkState::Up);
            let status = run.await;
            if status.is_good() {
                "connection lost (closed by the server, or it stopped answering)".to_string()
            } else {
                format!("connection lost: {}", describe(status))
            }
        }
    };
    let _ = tx.send(LinkState::Down(reason));
}

/// Reads a certificate, PEM or DER.
fn read_cert(path: &Path) -> anyhow::Result<X509> {
    let bytes = std::fs::read(path).context("cannot read it")?;
    let cert = if is_pem(&bytes) {
        X509::from_pem(&bytes)
    } else {
        X509::from_der(&bytes)
    };
    cert.map_err(|_| anyhow::anyhow!("not an X.509 certificate (PEM or DER expected)"))
}

/// Whether a key or certificate file is PEM (text with a BEGIN line,
/// possibly after comments) rather than DER.
fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(10).any(|w| w == b"-----BEGIN")
}

/// Reads an RSA private key, PEM (PKCS#8 or PKCS#1) or DER; returns it
/// with, for DER, the PEM text made from it (the library reads PEM only).
fn read_key(path: &Path) -> anyhow::Result<(PrivateKey, Option<String>)> {
    let bytes = std::fs::read(path).context("cannot read it")?;
    if is_pem(&bytes) {
        let key = PrivateKey::from_pem(&bytes).map_err(|_| {
            anyhow::anyhow!("not an RSA private key (PKCS#8 or PKCS#1 PEM expected)")
        })?;
        return Ok((key, None));
    }
    for label in ["PRIVATE KEY", "RSA PRIVATE KEY"] {
        let pem = to_pem(label, &bytes);
        if let Ok(key) = PrivateKey::from_pem(pem.as_bytes()) {
            return Ok((key, Some(pem)));
        }
    }
    bail!("not an RSA private key (PKCS#8 or PKCS#1, PEM or DER expected)")
}

/// Whether `key` is the private key of `cert` (sign with one, verify with
/// the other).
fn key_matches(cert: &X509, key: &PrivateKey) -> bool {
    let Ok(public) = cert.public_key() else {
        return false;
    };
    let data = b"edgeward key check";
    let mut signature = vec![0u8; key.size()];
    match key.sign_sha256(data, &mut signature) {
        Ok(_) => public.verify_sha256(data, &signature).unwrap_or(false),
        Err(_) => false,
    }
}

/// The configured client certificate and key, checked, as paths the
/// library can read (the certificate re-encoded as DER into the PKI
/// directory, the key as is when PEM, converted to PEM there when DER).
fn load_own_pair(
    pki: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = read_cert(cert_path)
        .with_context(|| format!("connector.certificate_file {}", cert_path.display()))?;
    let (key, pem) = read_key(key_path)
        .with_context(|| format!("connector.private_key_file {}", key_path.display()))?;
    if !key_matches(&cert, &key) {
        bail!(
            "connector.private_key_file {} is not the key of connector.certificate_file {}: configure the matching pair",
            key_path.display(),
            cert_path.display()
        );
    }
    let dir = pki.join("configured");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let der_path = dir.join("cert.der");
    let der = cert
        .to_der()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("re-encode {}", cert_path.display()))?;
    std::fs::write(&der_path, der).with_context(|| format!("write {}", der_path.display()))?;
    let key_out = match pem {
        None => key_path.to_path_buf(),
        Some(pem) => {
            let path = dir.join("key.pem");
            write_private(&path, pem.as_bytes())?;
            path
        }
    };
    Ok((der_path, key_out))
}

/// The generated client pair in the PKI directory, made on first use (or
/// when it expired).
fn generated_pair(
    pki: &Path,
    application_uri: &str,
    application_name: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = pki.join("own").join("cert.der");
    let key_path = pki.join("private").join("private.pem");
    if cert_path.exists() && key_path.exists() {
        let cert = read_cert(&cert_path).with_context(|| format!("{}", cert_path.display()))?;
        let now = opcua_types::DateTime::now().as_chrono();
        let expired = cert.not_after().map(|t| t < now).unwrap_or(true);
        if !expired {
            crate::log!(
                "info",
                "opcua: client certificate {} (generated, application URI {application_uri})",
                cert_path.display()
            );
            return Ok((cert_path, key_path));
        }
        crate::log!(
            "warn",
            "opcua: the generated client certificate {} expired: making a new one (the server must trust it again)",
            cert_path.display()
        );
    }
    let description = ApplicationDescription {
        application_uri: application_uri.into(),
        product_uri: "urn:edgeward".into(),
        application_name: LocalizedText::new("", application_name),
        application_type: ApplicationType::Client,
        ..Default::default()
    };
    let mut data = X509Data::from(description);
    data.certificate_duration_days = GENERATED_CERT_DAYS;
    CertificateStore::create_certificate_and_key(&data, true, &cert_path, &key_path).map_err(
        |e| anyhow::anyhow!("generate a client certificate into {}: {e}", pki.display()),
    )?;
    restrict(&key_path)?;
    crate::log!(
        "info",
        "opcua: generated a client certificate {} (key {}, application URI {application_uri}, valid {GENERATED_CERT_DAYS} days): make the server trust it",
        cert_path.display(),
        key_path.display()
    );
    Ok((cert_path, key_path))
}

/// Writes a private file (owner read/write only).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))?;
    restrict(path)
}

fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
}

/// PEM text of DER `bytes` under `label`.
fn to_pem(label: &str, bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}
