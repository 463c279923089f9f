//! The operator socket: one JSON request line in, one JSON response line
//! out. The socket is created mode 0600 (root only), its directory 0755.
//! The CLI and the daemon are one binary: the protocol is versioned with
//! it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::listeners::ListenerQueue;
use crate::status::Status;
use crate::table_view::TableView;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Drain,
    Undrain,
    Table {
        vip: String,
    },
    /// New connections to the selected TCP VIP ports go to their fallback
    /// (`lbd listener quiesce`); the answer is their listeners' queues.
    Quiesce(ListenerSelection),
    /// Undo a quiesce (`lbd listener resume`).
    Resume(ListenerSelection),
    /// The selected VIP ports' listeners and queues.
    Listeners(ListenerSelection),
}

/// Which TCP VIP ports a listener command applies to: those of `vip` (an
/// address), on `port`; unset means all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSelection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// The daemon's answer: `{"kind": "...", "data": ...}`. The data of
/// `status` and `table` is what `lbd status --json` and `lbd table --json`
/// print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "lowercase")]
pub enum Response {
    Status(Box<Status>),
    Table(TableView),
    /// Listener queues (`quiesce`, `resume`, `listeners`).
    Listeners(Vec<ListenerQueue>),
    /// What a command did (`drain`, `undrain`).
    Message(String),
    /// Why a request was refused.
    Error(String),
}

impl Response {
    pub fn is_ok(&self) -> bool {
        !matches!(self, Response::Error(_))
    }

    /// The variant's name on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Table(_) => "table",
            Response::Listeners(_) => "listeners",
            Response::Message(_) => "message",
            Response::Error(_) => "error",
        }
    }

    /// The text of a message or an error.
    pub fn text(&self) -> Option<&str> {
        match self {
            Response::Message(m) | Response::Error(m) => Some(m),
            _ => None,
        }
    }
}

/// A request line that is not a request.
#[derive(Debug, thiserror::Error)]
#[error("bad request: {0}")]
pub struct BadRequest(String);

/// Why the socket could not be set up or a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to {} (is lbd running? are you root?): {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding the request: {0}")]
    Request(#[source] serde_json::Error),
    #[error("talking to lbd: {0}")]
    Talk(#[source] std::io::Error),
    #[error("no answer from lbd within {0:?}")]
    Timeout(Duration),
    #[error("lbd closed the connection without an answer")]
    Closed,
    #[error("reading lbd's answer: {0}")]
    Answer(#[source] serde_json::Error),
}

pub type Inbox = mpsc::Sender<(Request, oneshot::Sender<Response>)>;

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ControlError::Io { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing stale", path)(e)),
    }
    let l = UnixListener::bind(path).map_err(io("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod 0600", path))?;
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
pub fn parse_request(line: &str) -> Result<Request, BadRequest> {
    serde_json::from_str::<Request>(line.trim())
        .map_err(|e| BadRequest(crate::liveness::printable(&e.to_string())))
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
                let stopping = || Response::Error("daemon is stopping".into());
                if inbox.send((req, tx)).await.is_err() {
                    stopping()
                } else {
                    rx.await.unwrap_or_else(|_| stopping())
                }
            }
            Err(e) => Response::Error(e.to_string()),
        },
        Ok(Err(e)) => Response::Error(format!("bad request: {e}")),
        Err(_) => Response::Error(format!("no request line within {READ_DEADLINE:?}")),
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    let _ = w.write_all(&out).await;
}

/// How long the CLI waits for the daemon's answer.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// The client side, for the CLI.
pub async fn call(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(ControlError::Request)?;
    line.push(b'\n');
    w.write_all(&line).await.map_err(ControlError::Talk)?;
    let mut resp = String::new();
    let mut r = BufReader::new(r);
    tokio::time::timeout(ANSWER_DEADLINE, r.read_line(&mut resp))
        .await
        .map_err(|_| ControlError::Timeout(ANSWER_DEADLINE))?
        .map_err(ControlError::Talk)?;
    if resp.is_empty() {
        return Err(ControlError::Closed);
    }
    serde_json::from_str(resp.trim()).map_err(ControlError::Answer)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Instant;

    use super::*;
    use crate::tables::VipTable;

    /// Every answer the daemon sends reads back as the same value, and the
    /// data of `status` and `table` is the view `--json` prints.
    #[test]
    fn every_response_round_trips_through_its_json() {
        let status = crate::status::example();
        let table = TableView::of(
            IpAddr::from([198, 51, 100, 10]),
            &VipTable::default(),
            Instant::now(),
        );
        for r in [
            Response::Status(Box::new(status.clone())),
            Response::Table(table.clone()),
            Response::Listeners(vec![ListenerQueue {
                vip: IpAddr::from([198, 51, 100, 10]),
                port: 80,
                quiesced: true,
                listeners: 2,
                accept_queue: 3,
                handshakes: 1,
            }]),
            Response::Message("draining".into()),
            Response::Error("198.51.100.99 is not a configured VIP".into()),
        ] {
            let line = serde_json::to_string(&r).expect("json");
            let back: Response = serde_json::from_str(&line).expect(&line);
            assert_eq!(back, r, "{line}");
            let v: serde_json::Value = serde_json::from_str(&line).expect("json");
            assert_eq!(v["kind"], r.kind(), "{line}");
        }
        let v = serde_json::to_value(Response::Status(Box::new(status.clone()))).expect("json");
        assert_eq!(v["data"], serde_json::to_value(&status).expect("json"));
        // States go by their names, as operators and scripts search them.
        assert_eq!(v["data"]["node"]["state"], "active");
        assert_eq!(v["data"]["bgp"][0]["state"], "Active");
        assert_eq!(v["data"]["members"][0]["state"], "active");
        assert_eq!(v["data"]["vips"][0]["protocols"][0], "tcp");
        let v = serde_json::to_value(Response::Table(table.clone())).expect("json");
        assert_eq!(v["data"], serde_json::to_value(&table).expect("json"));
    }

    #[test]
    fn request_lines_parse_or_say_why() {
        assert_eq!(
            parse_request(r#"{"cmd":"table","vip":"198.51.100.10"}"#).expect("table"),
            Request::Table {
                vip: "198.51.100.10".into()
            }
        );
        assert_eq!(
            parse_request(r#"{"cmd":"quiesce","port":443}"#).expect("quiesce"),
            Request::Quiesce(ListenerSelection {
                vip: None,
                port: Some(443)
            })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"resume"}"#).expect("resume"),
            Request::Resume(ListenerSelection::default())
        );
        let e = parse_request(r#"{"cmd":"quiesce","port":70000}"#).expect_err("refused");
        assert!(e.to_string().contains("70000"), "{e}");
        // A JSON-escaped ESC reaches the error text: it is printed escaped.
        let e = parse_request(r#"{"cmd":"\u001b[2J"}"#).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("bad request: unknown variant `\\u{1b}[2J`"),
            "{e}"
        );
    }
}
