//! The data connection to the remote party: a TCP socket we open ourselves
//! (so we know its exact 5-tuple for SciTag marking), TLS for https/davs
//! verified against the grid CA directory, and an HTTP/1.1 client on it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::{Scheme, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connecting to {0}: timed out after {1:?}")]
    ConnectTimeout(String, Duration),
    #[error("CA directory {0}: {1}")]
    CaDir(String, String),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP with {0}: {1}")]
    Http(String, hyper::Error),
}

/// An open HTTP/1.1 connection to the remote.
pub struct Connection<B> {
    pub sender: SendRequest<B>,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// Default ports by scheme.
const HTTP_PORT: u16 = 80;
const HTTPS_PORT: u16 = 443;

/// Opens a connection to `uri`'s host (http or https only: request.rs maps
/// dav/davs) within `timeout`, TLS included.
pub async fn connect<B>(
    uri: &Uri,
    ca_dir: &Path,
    timeout: Duration,
) -> Result<Connection<B>, RemoteError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let host = uri.host().unwrap_or_default();
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if tls { HTTPS_PORT } else { HTTP_PORT });
    let setup = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare_host.as_str(), port))
            .await
            .map_err(|e| RemoteError::Resolve(authority.to_string(), e))?
            .collect();
        let mut last = std::io::Error::other("no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(RemoteError::Connect(authority.to_string(), last))
    };
    let tcp = tokio::time::timeout(timeout, setup)
        .await
        .map_err(|_| RemoteError::ConnectTimeout(authority.to_string(), timeout))??;
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .map_err(|e| RemoteError::Connect(authority.to_string(), e))?;
    let peer = tcp
        .peer_addr()
        .map_err(|e| RemoteError::Connect(authority.to_string(), e))?;
    let http = |e| RemoteError::Http(authority.to_string(), e);
    let sender = if tls {
        let config = client_config(ca_dir)?;
        let name = ServerName::try_from(bare_host.clone())
            .map_err(|e| RemoteError::Tls(authority.to_string(), std::io::Error::other(e)))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| RemoteError::ConnectTimeout(authority.to_string(), timeout))?
            .map_err(|e| RemoteError::Tls(authority.to_string(), e))?;
        let (sender, conn) = client_builder()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        sender
    } else {
        let (sender, conn) = client_builder()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        sender
    };
    Ok(Connection {
        sender,
        local,
        peer,
    })
}

/// HTTP/1.1 with header names in title case (`Content-Length`, `Host`,
/// `Want-Digest`): xrootd's XrdHttp up to 5.5 matches the headers it acts
/// on case-sensitively, so hyper's lowercase `content-length` made it take
/// a push's PUT as empty (200 at once, a 0-byte file, the body read as
/// further requests).
fn client_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.title_case_headers(true);
    builder
}

/// A CA file in the /etc/grid-security/certificates layout: the subject
/// hash, a dot and a number (`1a2b3c4d.0`); other files there (`.signing_policy`,
/// `.namespaces`, `.crl_url`, `.info`) are not certificates.
fn is_hashed_name(name: &str) -> bool {
    let Some((hash, n)) = name.split_once('.') else {
        return false;
    };
    hash.len() == 8
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// Trusts exactly the CAs in `dir` (read at every https connection, so a
/// CA update by fetch-crl or the distribution's package is picked up).
pub fn client_config(dir: &Path) -> Result<rustls::ClientConfig, RemoteError> {
    let err = |m: String| RemoteError::CaDir(dir.display().to_string(), m);
    let mut roots = rustls::RootCertStore::empty();
    let entries = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_hashed_name(&name.to_string_lossy()) {
            continue;
        }
        let certs = CertificateDer::pem_file_iter(entry.path())
            .map_err(|e| err(format!("{}: {e}", name.to_string_lossy())))?;
        for cert in certs.flatten() {
            // A CA the library cannot use is skipped, as OpenSSL would.
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err(err("no CA certificate (hashed-name PEM files)".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The empty body of GET and HEAD requests.
pub type NoBody = http_body_util::Empty<Bytes>;

#[cfg(test)]
mod tests {
    #[test]
    fn hashed_names() {
        assert!(super::is_hashed_name("1a2b3c4d.0"));
        assert!(super::is_hashed_name("ABCDEF01.12"));
        for n in [
            "1a2b3c4d.signing_policy",
            "1a2b3c4d",
            "x.0",
            "1a2b3c4d.",
            "ca.pem",
        ] {
            assert!(!super::is_hashed_name(n), "{n}");
        }
    }
}
