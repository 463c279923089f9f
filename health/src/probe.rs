//! One probe of the local service: HTTP(S) GET, TCP connect or a command.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How a check probes the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET `url` (http:// or https://); passes on `expect_status` and, if
    /// set, when the first 64 KiB of the body contain `body_contains`.
    /// Redirects are not followed and proxies from the environment are not
    /// used: the check is about this node's service.
    Http {
        url: String,
        expect_status: u16,
        body_contains: Option<String>,
        /// Verify the server certificate (off for self-signed local certs).
        verify_tls: bool,
    },
    /// Passes when a TCP connection to `addr` is accepted.
    Tcp { addr: SocketAddr },
    /// Runs `argv` (no shell); passes on exit status 0. The process is
    /// killed when the timeout ends the probe.
    Exec { argv: Vec<String> },
}

/// Why a probe failed; the text is what `lbd status` shows as last result.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    #[error("status {got}, expected {expected}")]
    Status { got: u16, expected: u16 },
    #[error("body does not contain {0:?}")]
    Body(String),
    #[error("{0}")]
    Http(String),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("exec {cmd}: {err}")]
    Spawn { cmd: String, err: std::io::Error },
    #[error("exit status {code}{stderr}")]
    Exit { code: String, stderr: String },
}

const BODY_LIMIT: usize = 64 * 1024;

fn build(verify: bool) -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .danger_accept_invalid_certs(!verify)
        .pool_max_idle_per_host(0)
        .build()
        .ok()
}

/// HTTP clients with and without certificate verification (built once per
/// check, reused by its probes).
pub struct ClientPair {
    verifying: Option<reqwest::Client>,
    lenient: Option<reqwest::Client>,
}

impl Default for ClientPair {
    fn default() -> Self {
        Self {
            verifying: build(true),
            lenient: build(false),
        }
    }
}

/// Runs one probe (without a timeout: the caller applies it).
pub async fn run_probe(clients: &ClientPair, probe: &Probe) -> Result<(), ProbeError> {
    match probe {
        Probe::Http {
            url,
            expect_status,
            body_contains,
            verify_tls,
        } => {
            let client = if *verify_tls {
                &clients.verifying
            } else {
                &clients.lenient
            };
            let client = client
                .as_ref()
                .ok_or_else(|| ProbeError::Http("HTTP client could not be built".into()))?;
            let mut resp = client
                .get(url)
                .send()
                .await
                .map_err(|e| ProbeError::Http(error_chain(&e)))?;
            let got = resp.status().as_u16();
            if got != *expect_status {
                return Err(ProbeError::Status {
                    got,
                    expected: *expect_status,
                });
            }
            if let Some(needle) = body_contains {
                let mut body = Vec::new();
                while body.len() < BODY_LIMIT {
                    match resp.chunk().await {
                        Ok(Some(c)) => body.extend_from_slice(&c),
                        Ok(None) => break,
                        Err(e) => return Err(ProbeError::Http(error_chain(&e))),
                    }
                }
                body.truncate(BODY_LIMIT);
                let hay = String::from_utf8_lossy(&body);
                if !hay.contains(needle.as_str()) {
                    return Err(ProbeError::Body(needle.clone()));
                }
            }
            Ok(())
        }
        Probe::Tcp { addr } => tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(ProbeError::Connect),
        Probe::Exec { argv } => exec(argv).await,
    }
}

async fn exec(argv: &[String]) -> Result<(), ProbeError> {
    let Some((cmd, args)) = argv.split_first() else {
        return Err(ProbeError::Spawn {
            cmd: String::new(),
            err: std::io::Error::other("empty command"),
        });
    };
    let mut child = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| ProbeError::Spawn {
            cmd: cmd.clone(),
            err,
        })?;
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        // Bounded: a chatty command cannot make us buffer without limit.
        let _ = (&mut e).take(4096).read_to_end(&mut stderr).await;
    }
    let status = child.wait().await.map_err(|err| ProbeError::Spawn {
        cmd: cmd.clone(),
        err,
    })?;
    if status.success() {
        return Ok(());
    }
    let code = match status.code() {
        Some(c) => c.to_string(),
        None => "killed by a signal".into(),
    };
    let first = String::from_utf8_lossy(&stderr)
        .lines()
        .next()
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    Err(ProbeError::Exit {
        code,
        stderr: first,
    })
}

/// An error with its causes (reqwest's say "error sending request"; the
/// cause is in the chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
