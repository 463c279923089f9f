//! The operator socket: one JSON request line in, one JSON response line
//! out. The socket is created mode 0600 (root only), its directory 0755.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Drain,
    Undrain,
    Table { vip: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(message: impl Into<String>, data: Option<serde_json::Value>) -> Self {
        Self {
            ok: true,
            message: message.into(),
            data,
        }
    }
    pub fn err(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            data: None,
        }
    }
}

pub type Inbox = mpsc::Sender<(Request, oneshot::Sender<Response>)>;

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

/// A request is a short line: never buffer more than this of one.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// Clients served at once; more wait in the kernel's backlog.
pub const MAX_CLIENTS: usize = 16;
/// From accept to the answer written: a client that stalls (reading or
/// writing) loses its connection, whatever it does.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// One request line as a client sent it (anything at all).
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str::<Request>(line.trim()).map_err(|e| {
        format!(
            "bad request: {}",
            crate::liveness::printable(&e.to_string())
        )
    })
}

/// Accepts operator connections and hands each request to the daemon.
pub async fn serve(listener: UnixListener, inbox: Inbox) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(REQUEST_DEADLINE, answer(stream, inbox)).await;
        });
    }
}

async fn answer(stream: UnixStream, inbox: Inbox) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = tokio::io::AsyncReadExt::take(BufReader::new(r), MAX_REQUEST_BYTES);
    let resp = match tokio::time::timeout(READ_DEADLINE, r.read_line(&mut line)).await {
        Ok(Ok(_)) => match parse_request(&line) {
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if inbox.send((req, tx)).await.is_err() {
                    Response::err("daemon is stopping")
                } else {
                    rx.await
                        .unwrap_or_else(|_| Response::err("daemon is stopping"))
                }
            }
            Err(e) => Response::err(e),
        },
        Ok(Err(e)) => Response::err(format!("bad request: {e}")),
        Err(_) => Response::err("no request line within 5s"),
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    let _ = w.write_all(&out).await;
}

/// The client side, for the CLI.
pub async fn call(path: &Path, req: &Request) -> Result<Response> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to {} (is lbd running? are you root?)",
            path.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut resp = String::new();
    let mut r = BufReader::new(r);
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut resp))
        .await
        .context("no answer from lbd within 10s")??;
    if resp.is_empty() {
        bail!("lbd closed the connection without an answer");
    }
    serde_json::from_str(resp.trim()).context("reading lbd's answer")
}
