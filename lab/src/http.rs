//! The lab's backend and client: a tiny HTTP/1.0 server bound to the VIPs
//! in each node's namespace, and client helpers run in the client namespace.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{CLIENT4, CLIENT6, HTTP_PORT, Lab, Netns, VIP4, VIP6};

/// Answers on VIP:80 (IPv4 and IPv6) in a node's namespace:
/// `GET /whoami` -> the node name; `GET /stream?ms=N` -> one line with the
/// node name every 100 ms for N ms then `done`; `PUT /upload` -> reads the
/// body and answers `node received BYTES`.
pub(super) struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl Server {
    pub(super) fn start(ns: &Netns, name: String) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for addr in [
            SocketAddr::new(IpAddr::V4(VIP4), HTTP_PORT),
            SocketAddr::new(IpAddr::V6(VIP6), HTTP_PORT),
        ] {
            let listener = ns.run(|| {
                let l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })?;
            let stop = stop.clone();
            let name = name.clone();
            threads.push(std::thread::spawn(move || {
                accept_loop(listener, &name, &stop)
            }));
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, name: &str, stop: &AtomicBool) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let name = name.to_string();
                std::thread::spawn(move || {
                    let _ = serve(s, &name);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn serve(s: TcpStream, name: &str) -> Result<()> {
    s.set_nonblocking(false)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut request = String::new();
    r.read_line(&mut request)?;
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut w = s;
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    if let Some(ms) = path.strip_prefix("/stream?ms=") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        w.write_all(b"HTTP/1.0 200 OK\r\n\r\n")?;
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            w.write_all(format!("{name}\n").as_bytes())?;
            std::thread::sleep(Duration::from_millis(100));
        }
        w.write_all(b"done\n")?;
    } else if path == "/upload" {
        let mut left = content_length;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        while left > 0 {
            let n = r.read(&mut buf[..left.min(64 * 1024)])?;
            if n == 0 {
                break;
            }
            got += n;
            left -= n;
        }
        w.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{name} received {got}\n").as_bytes())?;
    } else {
        w.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{name}\n").as_bytes())?;
    }
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}

// ---------- the client side ----------

/// A connection from the client namespace to a VIP (created on a thread
/// inside the client namespace; usable from any thread afterwards).
pub fn connect(
    lab: &Lab,
    vip: IpAddr,
    local_port: Option<u16>,
    timeout: Duration,
) -> Result<TcpStream> {
    lab.client.run(|| {
        let domain = if vip.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        if let Some(p) = local_port {
            sock.set_reuse_address(true)?;
            let local = if vip.is_ipv4() {
                IpAddr::V4(CLIENT4)
            } else {
                IpAddr::V6(CLIENT6)
            };
            sock.bind(&SocketAddr::new(local, p).into())?;
        }
        sock.connect_timeout(&SocketAddr::new(vip, HTTP_PORT).into(), timeout)?;
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(s)
    })
}

/// Sends a GET; returns a reader positioned at the start of the body.
pub fn get(mut s: TcpStream, path: &str) -> Result<BufReader<TcpStream>> {
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut r = BufReader::new(s);
    skip_headers(&mut r)?;
    Ok(r)
}

fn skip_headers(r: &mut BufReader<TcpStream>) -> Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed before the body");
        }
        if line == "\r\n" {
            return Ok(());
        }
    }
}

/// The next body line, without its newline; None at end of stream.
pub fn next_line(r: &mut BufReader<TcpStream>) -> Result<Option<String>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end().to_string()))
}

/// Uploads `bytes` bytes; returns the server's answer line.
pub fn upload(mut s: TcpStream, bytes: usize) -> Result<String> {
    s.write_all(format!("PUT /upload HTTP/1.0\r\nContent-Length: {bytes}\r\n\r\n").as_bytes())?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut r = BufReader::new(s);
    skip_headers(&mut r)?;
    Ok(next_line(&mut r)?.unwrap_or_default())
}
