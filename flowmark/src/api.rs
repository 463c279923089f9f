//! The local API for the reverse proxy: a Unix stream socket carrying one
//! JSON object per line, answered by one JSON object per line.
//!
//! ```text
//! {"op":"start","src":"2001:db8::1","sport":443,"dst":"2001:db8::2","dport":50000,
//!  "headers":{"SciTag":"206"},"query":"a=b","application":"nginx"}
//! {"op":"end","src":"2001:db8::1","sport":443,"dst":"2001:db8::2","dport":50000,
//!  "sent":3145728,"received":412}
//! {"op":"status"}
//! ```
//!
//! `start` takes the SciTag as `scitag` (a value), `experiment`+`activity`,
//! or raw `headers` and `query`, from which [`crate::scitag::extract`]
//! applies the precedence rules, so the proxy config carries no logic. A
//! request without a SciTag is answered `{"ok":true,"marked":false}`.

use std::{path::Path, time::Duration};

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{
    io::AsyncWriteExt,
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::{
    bad,
    daemon::{Request, check_tag, report_tag_error},
    firefly::Usage,
    flow::FlowId,
    lines::{Line, LineReader},
    registry::Registry,
    scitag::{Extracted, SciTag, extract},
};

pub const MAX_LINE: usize = 16 * 1024;
/// A client that sends nothing for this long is dropped: well past the Lua
/// side's 30 s keepalive, so nginx closes an idle pooled connection before
/// we do and never sends on one we closed.
pub const IDLE: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiRequest {
    op: String,
    #[serde(default)]
    proto: Option<String>,
    src: Option<Value>,
    sport: Option<Value>,
    dst: Option<Value>,
    dport: Option<Value>,
    scitag: Option<Value>,
    experiment: Option<u32>,
    activity: Option<u32>,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    query: Option<String>,
    application: Option<String>,
    /// `end` only: bytes of the request as the proxy counted them.
    sent: Option<Value>,
    received: Option<Value>,
}

/// Binds the socket, then gives it `mode` and, if named, `group` (the
/// proxy's workers, e.g. www-data, need write permission to connect).
pub fn bind_with(path: &Path, mode: u32, group: Option<&str>) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let l = bind(path)?;
    if let Some(g) = group {
        let name = std::ffi::CString::new(g).context("group name")?;
        // SAFETY: a valid NUL-terminated name; the result is read at once.
        let gr = unsafe { libc::getgrnam(name.as_ptr()) };
        anyhow::ensure!(!gr.is_null(), "no such group {g:?}");
        let gid = unsafe { (*gr).gr_gid };
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chgrp {g} {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    Ok(l)
}

pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        // A socket left by a previous run; refuse to remove anything else.
        use std::os::unix::fs::FileTypeExt;
        let m = std::fs::metadata(path)?;
        anyhow::ensure!(
            m.file_type().is_socket(),
            "{} exists and is not a socket",
            path.display()
        );
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

pub async fn serve(listener: UnixListener, registry: Registry, tx: mpsc::Sender<Request>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, registry.clone(), tx.clone()));
            }
            Err(e) => {
                tracing::warn!("api accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, registry: Registry, tx: mpsc::Sender<Request>) {
    let (rd, mut wr) = stream.into_split();
    let mut reader = LineReader::new(rd, MAX_LINE);
    loop {
        let line = match tokio::time::timeout(IDLE, reader.next_line()).await {
            Ok(Ok(Some(l))) => l,
            _ => return,
        };
        let reply = match line {
            Line::Text(t) if t.trim().is_empty() => continue,
            Line::Text(t) => handle(&t, &registry, &tx).await,
            Line::NotUtf8(b) => {
                bad::report(
                    "api_not_utf8",
                    "API request is not UTF-8",
                    &String::from_utf8_lossy(&b),
                );
                json!({"ok": false, "error": "request is not UTF-8"})
            }
            Line::TooLong(head) => {
                bad::report(
                    "api_line_too_long",
                    "API request too long",
                    &String::from_utf8_lossy(&head),
                );
                json!({"ok": false, "error": "request too long"})
            }
        };
        let mut out = reply.to_string();
        out.push('\n');
        if wr.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn text(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// One request line to one reply.
pub async fn handle(line: &str, registry: &Registry, tx: &mpsc::Sender<Request>) -> Value {
    let req: ApiRequest = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            bad::report(
                "api_bad_json",
                &format!("API request is not a valid request: {e}"),
                line,
            );
            return json!({"ok": false, "error": format!("bad request: {e}")});
        }
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let request = match req.op.as_str() {
        "status" => Request::Status { reply: reply_tx },
        "start" | "end" => {
            let flow = match FlowId::parse(
                req.proto.as_deref().unwrap_or("tcp"),
                &text(&req.src).unwrap_or_default(),
                &text(&req.sport).unwrap_or_default(),
                &text(&req.dst).unwrap_or_default(),
                &text(&req.dport).unwrap_or_default(),
            ) {
                Ok(f) => f,
                Err(e) => {
                    bad::report(e.api_kind(), "API request with a bad 5-tuple", line);
                    return json!({"ok": false, "error": format!("bad 5-tuple: {}", e.kind())});
                }
            };
            if req.op == "end" {
                let count = |v: &Option<Value>| text(v).and_then(|t| t.parse::<u64>().ok());
                let (sent, received) = (count(&req.sent), count(&req.received));
                let usage =
                    (sent.is_some() || received.is_some()).then_some(Usage { sent, received });
                Request::End {
                    flow,
                    hint: None,
                    usage,
                    reply: Some(reply_tx),
                }
            } else {
                let tag = match request_tag(&req, registry, line) {
                    Ok(Some(t)) => t,
                    Ok(None) => return json!({"ok": true, "marked": false, "reason": "no SciTag"}),
                    Err(reason) => return json!({"ok": true, "marked": false, "reason": reason}),
                };
                Request::Start {
                    flow,
                    tag,
                    application: req.application.clone(),
                    mark: true,
                    reply: Some(reply_tx),
                }
            }
        }
        other => {
            bad::report("api_bad_op", "API request with an unknown op", line);
            return json!({"ok": false, "error": format!("unknown op {other:?}")});
        }
    };
    if tx.send(request).await.is_err() {
        return json!({"ok": false, "error": "daemon is stopping"});
    }
    reply_rx
        .await
        .unwrap_or_else(|_| json!({"ok": false, "error": "daemon is stopping"}))
}

/// The tag of a start request. Invalid tags leave the request unmarked
/// (`Err(reason)`), never failed: a transfer must not break on a bad header.
fn request_tag(
    req: &ApiRequest,
    registry: &Registry,
    line: &str,
) -> Result<Option<SciTag>, String> {
    let tag = if let Some(v) = text(&req.scitag) {
        SciTag::parse(&v).map_err(|e| {
            report_tag_error(&e, line);
            e.to_string()
        })?
    } else if let (Some(e), Some(a)) = (req.experiment, req.activity) {
        SciTag::new(e, a).map_err(|e| {
            report_tag_error(&e, line);
            e.to_string()
        })?
    } else {
        let headers = req
            .headers
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)));
        match extract(headers, req.query.as_deref()) {
            Extracted::Absent => return Ok(None),
            Extracted::Tag(t, _) => t,
            Extracted::Invalid(e, _) => {
                report_tag_error(&e, line);
                return Err(e.to_string());
            }
        }
    };
    check_tag(tag.experiment as u32, tag.activity as u32, registry, line)
        .map(Some)
        .ok_or_else(|| format!("experiment {} is not in the registry", tag.experiment))
}
