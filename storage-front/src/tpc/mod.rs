//! HTTP third-party copy (WLCG HTTP-TPC): a COPY with `Source` (pull) or
//! `Destination` (push) naming a remote URL. The request is checked before
//! anything moves (400/404/412/503 with a reason); then 202 and a chunked
//! performance-marker stream, one block per marker interval, ending with
//! `success: Created` or `failure: <reason>`. A client that goes away
//! aborts the copy (a pull's partial file is removed).

pub mod markers;
pub mod pull;
pub mod push;
pub mod remote;
pub mod request;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};

use crate::config::Config;
use crate::marking::{Flow, Marking};
use crate::metrics as m;
use request::{CopyRequest, Direction, SciTag};

/// What every copy shares.
pub struct Context {
    pub config: Config,
    pub marking: Marking,
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// A refusal before the copy starts: status and reason.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

/// Why a started copy failed (the text after `failure: `).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransferError(pub String);

impl TransferError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        TransferError(e.to_string())
    }
}

/// What the marker stream reports while a copy runs.
#[derive(Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub remote: OnceLock<SocketAddr>,
}

/// A copy that passed the checks, ready to run.
pub struct Copy {
    pub req: CopyRequest,
    pub local: PathBuf,
    /// Shown in logs: the request path.
    pub path: String,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// Checks a COPY request. `path` is the request URI's path.
pub async fn prepare(ctx: &Context, path: &str, headers: &HeaderMap) -> Result<Copy, Refusal> {
    let bad = |s: StatusCode, e: &dyn std::fmt::Display| Refusal(s, e.to_string());
    let req = CopyRequest::parse(headers).map_err(|e| bad(StatusCode::BAD_REQUEST, &e))?;
    if req.scitag == SciTag::Invalid {
        metrics::counter!(m::SCITAG_INVALID).increment(1);
    }
    let local = crate::paths::confine(&ctx.config.root, path)
        .map_err(|e| bad(StatusCode::BAD_REQUEST, &format!("{path}: {e}")))?;
    match req.direction {
        Direction::Pull => match std::fs::symlink_metadata(&local) {
            Ok(meta) if meta.is_dir() => {
                return Err(bad(StatusCode::CONFLICT, &format!("{path} is a directory")));
            }
            Ok(_) if !req.overwrite => {
                return Err(bad(
                    StatusCode::PRECONDITION_FAILED,
                    &format!("{path} exists and Overwrite is F"),
                ));
            }
            _ => {}
        },
        Direction::Push => match std::fs::metadata(&local) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(bad(StatusCode::CONFLICT, &format!("{path} is not a file"))),
            Err(_) => return Err(bad(StatusCode::NOT_FOUND, &format!("{path}: no such file"))),
        },
    }
    let slot = ctx.slots.clone().try_acquire_owned().map_err(|_| {
        bad(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{} copies already running", ctx.config.max_transfers),
        )
    })?;
    Ok(Copy {
        req,
        local,
        path: path.to_string(),
        _slot: slot,
    })
}

/// Runs a prepared copy, writing markers into `out` until it ends or the
/// client goes away (then the copy is dropped: its guards clean up).
pub async fn run(ctx: Arc<Context>, copy: Copy, mut out: http_body_util::channel::Sender<Bytes>) {
    let direction = match copy.req.direction {
        Direction::Pull => "pull",
        Direction::Push => "push",
    };
    let progress = Arc::new(Progress::default());
    metrics::gauge!(m::TRANSFERS_ACTIVE).increment(1.0);
    let transfer = {
        let (ctx, progress) = (ctx.clone(), progress.clone());
        async move {
            match copy.req.direction {
                Direction::Pull => pull::pull(&ctx, &copy, &progress).await,
                Direction::Push => push::push(&ctx, &copy, &progress).await,
            }
        }
    };
    tokio::pin!(transfer);
    let mut tick = tokio::time::interval(ctx.config.marker_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let marker = |p: &Progress| {
        markers::perf_marker(
            unix_now(),
            p.bytes.load(Ordering::Relaxed),
            p.remote.get().copied(),
        )
    };
    let result = loop {
        tokio::select! {
            r = &mut transfer => break Some(r),
            _ = tick.tick() => {
                if out.send_data(Bytes::from(marker(&progress))).await.is_err() {
                    break None;
                }
            }
        }
    };
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let outcome = match result {
        None => {
            tracing::warn!(direction, bytes, "client went away: copy aborted");
            "aborted"
        }
        Some(Ok(())) => {
            tracing::info!(direction, bytes, "copy done");
            let end = format!("{}{}", marker(&progress), markers::success());
            let _ = out.send_data(Bytes::from(end)).await;
            "success"
        }
        Some(Err(e)) => {
            tracing::warn!(direction, bytes, "copy failed: {e}");
            let _ = out.send_data(Bytes::from(markers::failure(&e.0))).await;
            "failure"
        }
    };
    metrics::gauge!(m::TRANSFERS_ACTIVE).decrement(1.0);
    metrics::counter!(m::TRANSFERS, "direction" => direction, "result" => outcome).increment(1);
    metrics::counter!(m::TRANSFER_BYTES, "direction" => direction).increment(bytes);
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A request to the remote: origin-form target, `Host`, the client's
/// transfer headers (tokens, SciTag) and ours.
pub fn remote_request<B>(
    method: hyper::Method,
    req: &CopyRequest,
    extra: &[(&'static str, HeaderValue)],
    body: B,
) -> Result<Request<B>, TransferError> {
    let uri = &req.remote;
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header(
            hyper::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(""),
        )
        .header(hyper::header::USER_AGENT, APPLICATION);
    for (name, value) in &req.remote_headers {
        builder = builder.header(name, value);
    }
    for (name, value) in extra {
        builder = builder.header(*name, value);
    }
    builder.body(body).map_err(TransferError::new)
}

const APPLICATION: &str = concat!("storage-front/", env!("CARGO_PKG_VERSION"));

/// Registers the data connection with flowmark if the COPY had a valid
/// SciTag; returns the flow to end.
pub async fn mark(
    ctx: &Context,
    req: &CopyRequest,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<Flow> {
    let SciTag::Valid(tag) = req.scitag else {
        return None;
    };
    let flow = Flow {
        local,
        remote: peer,
    };
    if ctx.marking.start(flow, tag).await {
        metrics::counter!(m::SCITAG_MARKED).increment(1);
    }
    Some(flow)
}

/// Opens the data connection, registers it with flowmark (tagged copies),
/// runs `transfer` on it and ends the flow with the bytes moved: sent by us
/// in a push, received in a pull.
pub async fn over_data_connection<B, F, Fut>(
    ctx: &Context,
    copy: &Copy,
    progress: &Progress,
    transfer: F,
) -> Result<(), TransferError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnOnce(hyper::client::conn::http1::SendRequest<B>) -> Fut,
    Fut: std::future::Future<Output = Result<(), TransferError>>,
{
    let cfg = &ctx.config;
    let conn = remote::connect::<B>(&copy.req.remote, &cfg.ca_dir, cfg.connect_timeout)
        .await
        .map_err(TransferError::new)?;
    let _ = progress.remote.set(conn.peer);
    let flow = mark(ctx, &copy.req, conn.local, conn.peer).await;
    let result = transfer(conn.sender).await;
    if let Some(flow) = flow {
        let bytes = progress.bytes.load(Ordering::Relaxed);
        let (sent, received) = match copy.req.direction {
            Direction::Push => (bytes, 0),
            Direction::Pull => (0, bytes),
        };
        ctx.marking.end(flow, sent, received).await;
    }
    result
}

/// Waits for `fut` at most `idle`; the error names what was awaited.
pub async fn within<T>(
    idle: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, TransferError> {
    tokio::time::timeout(idle, fut)
        .await
        .map_err(|_| TransferError(format!("{what}: nothing for {idle:?}")))
}

/// A remote status line for a failure message.
pub fn status_text(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

/// The directory a new file goes to.
pub fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("/"))
}
