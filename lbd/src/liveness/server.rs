//! The liveness endpoint (`GET /v1/state` on the member address), bounded
//! against whoever can reach it:
//! - only configured members' addresses are served; any other source is
//!   closed at accept, before a byte is read;
//! - at most `MAX_CONNECTIONS` connections at once and `MAX_PER_SOURCE`
//!   per source address; past that a connection is closed at accept;
//! - one request per connection, and the whole connection (headers,
//!   answer) has one deadline from accept that a slow client cannot extend;
//! - a request body is never read (only GET, and the request line and
//!   headers fit in hyper's smallest buffer).
//!
//! Everything dropped is counted by reason ([`Counters`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::auth::{self, MAC_HEADER, NONCE_PARAM, SharedKeys};
use super::{Members, Report};

/// Connections served at once (members poll once per interval each).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections at once from one address.
pub const MAX_PER_SOURCE: usize = 8;
/// hyper's smallest read buffer: request line and headers must fit.
const MAX_HEADER_BYTES: usize = 8192;

/// What the endpoint did, by outcome (for status and metrics).
#[derive(Debug, Default)]
pub struct Counters {
    pub served: AtomicU64,
    pub refused_not_member: AtomicU64,
    pub refused_too_many: AtomicU64,
    pub deadline_exceeded: AtomicU64,
    pub bad_request: AtomicU64,
}

impl Counters {
    /// (reason, count) pairs, stable names for status and metrics.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("served", g(&self.served)),
            ("refused_not_member", g(&self.refused_not_member)),
            ("refused_too_many", g(&self.refused_too_many)),
            ("deadline_exceeded", g(&self.deadline_exceeded)),
            ("bad_request", g(&self.bad_request)),
        ]
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What the endpoint serves and whom to.
#[derive(Clone)]
pub struct Endpoint {
    pub report: watch::Receiver<Report>,
    /// The other members: only their addresses are served.
    pub members: Members,
    pub keys: SharedKeys,
    /// From accept to the end of the answer.
    pub deadline: Duration,
    pub counters: Arc<Counters>,
}

/// Open connections per source; a slot is given back on drop.
#[derive(Clone, Default)]
struct Slots(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot(Slots, IpAddr);

impl Slots {
    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = m.values().sum();
        let n = m.entry(ip).or_default();
        if total >= MAX_CONNECTIONS || *n >= MAX_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves the latest report until the task is dropped.
pub async fn serve(listener: TcpListener, ep: Endpoint) {
    let slots = Slots::default();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = peer.ip().to_canonical();
        let member = super::lock(&ep.members).values().any(|m| m.address == ip);
        if !member {
            bump(&ep.counters.refused_not_member);
            continue;
        }
        let Some(slot) = slots.take(ip) else {
            bump(&ep.counters.refused_too_many);
            continue;
        };
        let ep = ep.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let counters = ep.counters.clone();
            let deadline = ep.deadline;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = answer(&ep, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            // No timer, so no header timeout of hyper's own: the one
            // deadline below covers headers, answer and a stalled reader.
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), svc);
            if tokio::time::timeout(deadline, conn).await.is_err() {
                bump(&counters.deadline_exceeded);
            }
        });
    }
}

fn answer(ep: &Endpoint, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let fail = |status: StatusCode, text: &'static str| {
        bump(&ep.counters.bad_request);
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/v1/state" {
        return fail(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET {
        return fail(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let nonce = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(NONCE_PARAM)?.strip_prefix('='))
    });
    let keys = ep.keys.borrow().clone();
    let body = serde_json::to_vec(&*ep.report.borrow()).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body.clone())));
    if let Some(keys) = keys {
        let Some(nonce) = nonce.filter(|n| auth::is_nonce(n)) else {
            return fail(StatusCode::BAD_REQUEST, "a nonce is required\n");
        };
        if let Ok(v) = keys.sign(nonce, &body).parse() {
            resp.headers_mut().insert(MAC_HEADER, v);
        }
    }
    bump(&ep.counters.served);
    resp
}
