//! The transfer workload: parallel clients doing WebDAV PUTs and GETs of
//! files through the VIPs, each checked with adler32 as storage systems
//! do. Every transfer runs on its own connection and first asks `/whoami`
//! on it, so a transfer is attributed to the node that served it (a
//! scenario that crashes a node may only lose that node's transfers).
//!
//! HTTP is hyper's one-connection client (`client::conn::http1`): the
//! workload needs exactly one TCP connection per transfer, no pooling, and
//! paced bodies in both directions.
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::{RngCore, SeedableRng, rngs::SmallRng};

const MB: u64 = 1 << 20;
const CHUNK: usize = 64 * 1024;
/// A transfer that moves no byte for this long has failed.
const STALL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put,
    Get,
}

/// One finished (or failed) transfer.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub job: usize,
    pub kind: Kind,
    pub vip: IpAddr,
    pub bytes: u64,
    /// The node that served the connection (from `/whoami`), if known.
    pub node: Option<u16>,
    pub started: Instant,
    pub elapsed: Duration,
    pub error: Option<String>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Prefix of the file names (one directory per workload).
    pub tag: String,
    /// File sizes in MB, cycled over the jobs.
    pub sizes_mb: Vec<u64>,
    /// Number of jobs: each PUTs a file, GETs it back on a new connection
    /// and compares checksums, then DELETEs it.
    pub jobs: usize,
    pub parallel: usize,
    /// Per-transfer pace in MB/s (long transfers that stay in flight
    /// while a scenario acts), or as fast as possible.
    pub rate_mb_s: Option<u64>,
}

/// Live figures of a running workload.
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    pub in_flight: AtomicU64,
}

pub struct Running {
    threads: Vec<JoinHandle<Result<()>>>,
    /// Jobs handed to a worker (each records a PUT, and a GET after a good PUT).
    started: Arc<AtomicU64>,
    pub progress: Arc<Progress>,
    results: Arc<Mutex<Vec<Transfer>>>,
    stop: Arc<AtomicBool>,
}

impl Running {
    /// Stops handing out new jobs (running ones finish).
    pub fn stop_new(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for every worker; a worker that failed or panicked is an
    /// error (its jobs were lost, not counted), never a quiet shortfall.
    pub fn wait(self) -> Result<Finished> {
        let mut errors = Vec::new();
        for (w, t) in self.threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("worker {w}: {e:#}")),
                Err(_) => errors.push(format!("worker {w} panicked")),
            }
        }
        if !errors.is_empty() {
            bail!("the workload lost jobs: {}", errors.join("; "));
        }
        let mut transfers = std::mem::take(&mut *self.results.lock().expect("results"));
        transfers.sort_by_key(|t| t.started);
        Ok(Finished {
            transfers,
            jobs: self.started.load(Ordering::Relaxed) as usize,
        })
    }
}

/// A finished workload: every transfer it recorded and how many jobs ran.
#[derive(Debug, Clone)]
pub struct Finished {
    pub transfers: Vec<Transfer>,
    pub jobs: usize,
}

/// Starts the workload from the client namespaces (round robin), jobs
/// alternating between the IPv4 and the IPv6 VIP.
pub fn start(clients: &[String], vips: [IpAddr; 2], plan: Plan) -> Running {
    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let results = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let plan = Arc::new(plan);
    let threads = (0..plan.parallel.max(1))
        .map(|w| {
            let ns = clients[w % clients.len()].clone();
            let (next, started, progress, results, stop, plan) = (
                next.clone(),
                started.clone(),
                progress.clone(),
                results.clone(),
                stop.clone(),
                plan.clone(),
            );
            std::thread::spawn(move || -> Result<()> {
                let go = || -> Result<()> {
                    lab::enter_named(&ns)?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    loop {
                        let job = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if job >= plan.jobs || stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        started.fetch_add(1, Ordering::Relaxed);
                        let vip = vips[job % 2];
                        let size = plan.sizes_mb[job % plan.sizes_mb.len()] * MB;
                        for t in rt.block_on(run_job(&plan, job, vip, size, &progress)) {
                            let counter = if t.error.is_none() {
                                &progress.ok
                            } else {
                                &progress.failed
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            results.lock().expect("results").push(t);
                        }
                    }
                };
                go().map_err(|e| {
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    e.context(format!("in {ns}"))
                })
            })
        })
        .collect();
    Running {
        threads,
        started,
        progress,
        results,
        stop,
    }
}

/// PUT, GET back and compare, DELETE. The GET only runs after a good PUT.
async fn run_job(plan: &Plan, job: usize, vip: IpAddr, size: u64, p: &Progress) -> Vec<Transfer> {
    let path = format!("/data/{}/job{job}-{}mb.bin", plan.tag, size / MB);
    let seed = job as u64 ^ 0x5eed_1bd0;
    let rate = plan.rate_mb_s.map(|r| r * MB);
    let mut out = Vec::new();
    let mut t = Transfer {
        job,
        kind: Kind::Put,
        vip,
        bytes: size,
        node: None,
        started: Instant::now(),
        elapsed: Duration::ZERO,
        error: None,
    };
    p.in_flight.fetch_add(1, Ordering::Relaxed);
    let put = put(vip, &path, size, seed, rate, &mut t.node, p).await;
    t.elapsed = t.started.elapsed();
    p.in_flight.fetch_sub(1, Ordering::Relaxed);
    let sent = match put {
        Ok(sum) => Some(sum),
        Err(e) => {
            t.error = Some(format!("{e:#}"));
            None
        }
    };
    out.push(t.clone());
    let Some(sent) = sent else { return out };
    let mut g = Transfer {
        kind: Kind::Get,
        node: None,
        started: Instant::now(),
        error: None,
        ..t
    };
    p.in_flight.fetch_add(1, Ordering::Relaxed);
    let got = get(vip, &path, size, rate, &mut g.node, p).await;
    g.elapsed = g.started.elapsed();
    p.in_flight.fetch_sub(1, Ordering::Relaxed);
    match got {
        Ok(sum) if sum == sent => {}
        Ok(sum) => g.error = Some(format!("adler32 {sum:08x} read back, {sent:08x} written")),
        Err(e) => g.error = Some(format!("{e:#}")),
    }
    out.push(g);
    // Leave no 200 MB files behind; a failed DELETE is not a transfer.
    let _ = request_empty(vip, "DELETE", &path).await;
    out
}

type Body = BoxBody<Bytes, std::io::Error>;
type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// A fresh connection to the VIP and the node that serves it.
async fn connect(vip: IpAddr) -> Result<(Sender, Option<u16>)> {
    let addr = SocketAddr::new(vip, 80);
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = stalled(sender.send_request(request("GET", "/whoami", vip, empty())?)).await??;
    let node = node_header(&resp);
    resp.into_body().collect().await?;
    Ok((sender, node))
}

fn node_header<B>(resp: &hyper::Response<B>) -> Option<u16> {
    resp.headers()
        .get("x-node")?
        .to_str()
        .ok()?
        .strip_prefix("node")?
        .parse()
        .ok()
}

fn request(method: &str, path: &str, vip: IpAddr, body: Body) -> Result<Request<Body>> {
    let host = match vip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(body)?)
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

async fn stalled<F: std::future::Future>(f: F) -> Result<F::Output> {
    tokio::time::timeout(STALL, f)
        .await
        .map_err(|_| anyhow!("no progress for {STALL:?}"))
}

/// Sleeps so that `done` bytes take at least `done / rate` since `start`.
async fn pace(start: Instant, done: u64, rate: Option<u64>) {
    if let Some(r) = rate {
        let due = start + Duration::from_secs_f64(done as f64 / r as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

async fn put(
    vip: IpAddr,
    path: &str,
    size: u64,
    seed: u64,
    rate: Option<u64>,
    node: &mut Option<u16>,
    p: &Progress,
) -> Result<u32> {
    let (mut sender, n) = connect(vip).await?;
    *node = n;
    // The body generator computes the checksum of what it sends.
    let sum = Arc::new(Mutex::new(adler2::Adler32::new()));
    let (s2, start) = (sum.clone(), Instant::now());
    let chunks = futures_util::stream::unfold(
        (SmallRng::seed_from_u64(seed), 0u64),
        move |(mut rng, sent)| {
            let sum = s2.clone();
            async move {
                if sent >= size {
                    return None;
                }
                pace(start, sent, rate).await;
                let mut buf = vec![0u8; CHUNK.min((size - sent) as usize)];
                rng.fill_bytes(&mut buf);
                sum.lock().expect("sum").write_slice(&buf);
                let n = buf.len() as u64;
                Some((
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from(buf))),
                    (rng, sent + n),
                ))
            }
        },
    );
    let body = BoxBody::new(StreamBody::new(chunks));
    let mut req = request("PUT", path, vip, body)?;
    req.headers_mut().insert("content-length", size.into());
    // The whole upload is one future: time it out by size and pace.
    let limit = STALL
        + rate.map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(size as f64 / r as f64)
        });
    let resp = tokio::time::timeout(limit, sender.send_request(req))
        .await
        .map_err(|_| anyhow!("PUT {path}: not done within {limit:?}"))?
        .with_context(|| format!("PUT {path}"))?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if status != StatusCode::CREATED && status != StatusCode::NO_CONTENT {
        bail!("PUT {path}: HTTP {status}");
    }
    p.bytes.fetch_add(size, Ordering::Relaxed);
    let s = sum.lock().expect("sum").checksum();
    Ok(s)
}

async fn get(
    vip: IpAddr,
    path: &str,
    size: u64,
    rate: Option<u64>,
    node: &mut Option<u16>,
    p: &Progress,
) -> Result<u32> {
    let (mut sender, n) = connect(vip).await?;
    *node = n;
    let resp = stalled(sender.send_request(request("GET", path, vip, empty())?))
        .await?
        .with_context(|| format!("GET {path}"))?;
    if resp.status() != StatusCode::OK {
        bail!("GET {path}: HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut sum = adler2::Adler32::new();
    let (mut got, start) = (0u64, Instant::now());
    while let Some(frame) = stalled(body.frame()).await? {
        if let Ok(data) = frame?.into_data() {
            sum.write_slice(&data);
            got += data.len() as u64;
            p.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            pace(start, got, rate).await;
        }
    }
    if got != size {
        bail!("GET {path}: {got} bytes, expected {size}");
    }
    Ok(sum.checksum())
}

/// A request without a body on a fresh connection; its status and node.
pub async fn request_empty(
    vip: IpAddr,
    method: &str,
    path: &str,
) -> Result<(StatusCode, Option<u16>, Bytes)> {
    let (mut sender, _) = connect(vip).await?;
    let resp = stalled(sender.send_request(request(method, path, vip, empty())?)).await??;
    let (status, node) = (resp.status(), node_header(&resp));
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, node, body))
}

/// `count` short connections (GET /whoami) from client namespace `ns`,
/// `parallel` at a time; the node of each (None for a failed one).
pub fn probe(ns: &str, vip: IpAddr, count: usize, parallel: usize) -> Result<Vec<Option<u16>>> {
    in_client(ns, move || {
        Box::pin(async move {
            let mut out = Vec::with_capacity(count);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..count {
                if set.len() >= parallel.max(1) {
                    out.push(set.join_next().await.and_then(|r| r.ok()).flatten());
                }
                set.spawn(async move { connect(vip).await.ok().and_then(|(_, n)| n) });
            }
            while let Some(r) = set.join_next().await {
                out.push(r.ok().flatten());
            }
            Ok(out)
        })
    })
}

/// A PROPFIND (Depth: 1) of a collection from client namespace `ns`:
/// the HTTP status and how many `<D:response>` entries it listed.
pub fn propfind(ns: &str, vip: IpAddr, path: &str) -> Result<(u16, usize)> {
    let path = path.to_string();
    in_client(ns, move || {
        Box::pin(async move {
            let (mut sender, _) = connect(vip).await?;
            let mut req = request("PROPFIND", &path, vip, empty())?;
            req.headers_mut().insert("depth", "1".parse()?);
            let resp = stalled(sender.send_request(req)).await??;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&body);
            Ok((status, text.matches("<D:response>").count()))
        })
    })
}

type ClientTask<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>>>>;

/// Runs the future `f` makes on a fresh thread in client namespace `ns`
/// (its sockets belong to that namespace) with its own runtime.
pub fn in_client<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> ClientTask<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> Result<T> {
        lab::enter_named(&ns)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })
    .join()
    .map_err(|_| anyhow!("client thread panicked"))?
}
