//! The sidecar's HTTP/1.1 listener (loopback only): COPY requests that
//! nginx proxies, and the checksum endpoint its Lua asks
//! (`GET /.storage-front/checksum/<path>` -> 8 hex digits, computed and
//! stored once if the file has none).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full, channel::Channel};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::checksum::{ChecksumError, Checksums, Origin};
use crate::metrics as m;
use crate::tpc::{self, Context, Refusal};

/// The checksum endpoint's prefix (never proxied by nginx: only COPY is).
pub const CHECKSUM_PREFIX: &str = "/.storage-front/checksum";
/// Request head limit (all headers together).
const MAX_HEAD_BYTES: usize = 64 << 10;
/// A connection that sends no complete request head for this long is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Marker chunks queued towards a slow client.
const MARKER_QUEUE: usize = 4;

type Body = Either<Full<Bytes>, Channel<Bytes, Infallible>>;

pub struct Server {
    pub ctx: Arc<Context>,
    pub checksums: Checksums,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

impl Server {
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let server = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .max_buf_size(MAX_HEAD_BYTES)
                    .header_read_timeout(HEADER_TIMEOUT)
                    .timer(hyper_util::rt::TokioTimer::new());
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("connection: {e}");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if req.method() == Method::from_bytes(b"COPY").expect("COPY is a token") {
            return self.copy(&path, req).await;
        }
        if req.method() == Method::GET
            && let Some(file) = path.strip_prefix(CHECKSUM_PREFIX)
        {
            return self.checksum(file).await;
        }
        text(StatusCode::METHOD_NOT_ALLOWED, "only COPY is served here\n")
    }

    async fn copy(&self, path: &str, req: Request<Incoming>) -> Response<Body> {
        match tpc::prepare(&self.ctx, path, req.headers()).await {
            Err(Refusal(status, reason)) => {
                tracing::info!(path, %status, "COPY refused: {reason}");
                metrics::counter!(m::REFUSED, "status" => status.as_u16().to_string()).increment(1);
                text(status, format!("{reason}\n"))
            }
            Ok(copy) => {
                let (tx, body) = Channel::new(MARKER_QUEUE);
                tokio::spawn(tpc::run(self.ctx.clone(), copy, tx));
                let mut r = Response::new(Either::Right(body));
                *r.status_mut() = StatusCode::ACCEPTED;
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain"),
                );
                r
            }
        }
    }

    async fn checksum(&self, path: &str) -> Response<Body> {
        let file = match crate::paths::confine(&self.ctx.config.root, path) {
            Ok(f) => f,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        let (status, result) = match self.checksums.get(&file).await {
            Ok((v, origin)) => {
                if origin == Origin::Computed {
                    metrics::counter!(m::CHECKSUM_COMPUTATIONS).increment(1);
                }
                let origin = match origin {
                    Origin::Stored => "stored",
                    Origin::Computed => "computed",
                };
                metrics::counter!(m::CHECKSUMS, "origin" => origin, "result" => "ok").increment(1);
                return text(StatusCode::OK, v);
            }
            Err(ChecksumError::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
            Err(ChecksumError::NotAFile) => (StatusCode::CONFLICT, "not_a_file"),
            Err(ChecksumError::Changed) => (StatusCode::CONFLICT, "changed"),
            Err(ChecksumError::Io(e)) => {
                tracing::warn!(path, "checksum: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "io")
            }
        };
        metrics::counter!(m::CHECKSUMS, "origin" => "none", "result" => result).increment(1);
        text(status, format!("{result}\n"))
    }
}
