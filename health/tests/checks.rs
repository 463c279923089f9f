//! Checks against real servers on the loopback: a small HTTP server whose
//! answer the test changes, a server that accepts and never answers, real
//! nginx over HTTPS with a self-signed certificate, TCP and exec probes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use health::{Check, CheckSpec, CheckStatus, Probe};

/// An HTTP/1.0 server on 127.0.0.1 answering every request with the
/// current (status, body); `None` = accept and never answer.
struct Server {
    addr: SocketAddr,
    reply: Arc<Mutex<Option<(u16, String)>>>,
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let reply = Arc::new(Mutex::new(Some((200u16, "ok".to_string()))));
        let r = reply.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf);
                    let current = r.lock().map(|g| g.clone()).unwrap_or(None);
                    match current {
                        Some((status, body)) => {
                            let _ = write!(
                                s,
                                "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        // Hold the connection open without a word.
                        None => std::thread::sleep(Duration::from_secs(30)),
                    }
                });
            }
        });
        Server { addr, reply }
    }

    fn set(&self, reply: Option<(u16, &str)>) {
        *self.reply.lock().expect("lock") = reply.map(|(s, b)| (s, b.to_string()));
    }
}

fn spec(probe: Probe, interval_ms: u64, timeout_ms: u64, rise: u32, fall: u32) -> CheckSpec {
    CheckSpec {
        name: "test".into(),
        probe,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise,
        fall,
    }
}

fn http(url: String, body: Option<&str>) -> Probe {
    Probe::Http {
        url,
        expect_status: 200,
        body_contains: body.map(String::from),
        verify_tls: true,
    }
}

/// Waits until the check's status satisfies `f`; returns it and the time.
async fn wait_for(
    check: &Check,
    deadline: Duration,
    f: impl Fn(&CheckStatus) -> bool,
) -> (CheckStatus, Duration) {
    let start = Instant::now();
    let mut rx = check.subscribe();
    loop {
        let s = rx.borrow_and_update().clone();
        if f(&s) {
            return (s, start.elapsed());
        }
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            panic!("condition not met within {deadline:?}; last status {s:?}");
        }
    }
}

#[tokio::test]
async fn http_check_rises_falls_and_matches_body() {
    let srv = Server::start();
    let url = format!("http://{}/health", srv.addr);
    let check = Check::spawn(spec(http(url.clone(), Some("ok")), 100, 80, 2, 3));
    assert!(!check.status().up, "a check starts down");
    let (s, _) = wait_for(&check, Duration::from_secs(5), |s| s.up).await;
    assert!(s.probes >= 2, "rise 2 needs two probes: {s:?}");
    assert_eq!(s.last_result, "ok");
    assert!(s.last_latency_ms.is_some());

    srv.set(Some((503, "busy")));
    let (s, _) = wait_for(&check, Duration::from_secs(5), |s| !s.up).await;
    assert_eq!(s.last_result, "status 503, expected 200");

    srv.set(Some((200, "maintenance")));
    let (s, _) = wait_for(&check, Duration::from_secs(5), |s| {
        s.last_result.contains("body")
    })
    .await;
    assert_eq!(s.last_result, "body does not contain \"ok\"");
    assert!(!s.up);

    srv.set(Some((200, "all ok")));
    wait_for(&check, Duration::from_secs(5), |s| s.up).await;
}

#[tokio::test]
async fn a_hanging_server_is_a_failed_check_within_fall_times_interval() {
    let srv = Server::start();
    let check = Check::spawn(spec(
        http(format!("http://{}/", srv.addr), None),
        200,
        150,
        1,
        2,
    ));
    wait_for(&check, Duration::from_secs(5), |s| s.up).await;
    srv.set(None);
    let (s, took) = wait_for(&check, Duration::from_secs(5), |s| !s.up).await;
    assert_eq!(s.last_result, "timeout after 150ms");
    // fall (2) x interval (200 ms) plus the timeout, with slack for a busy machine.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[tokio::test]
async fn tcp_check_follows_the_listener() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let check = Check::spawn(spec(Probe::Tcp { addr }, 50, 50, 1, 1));
    wait_for(&check, Duration::from_secs(5), |s| s.up).await;
    drop(l);
    let (s, _) = wait_for(&check, Duration::from_secs(5), |s| !s.up).await;
    assert!(
        s.last_result.starts_with("connect: Connection refused"),
        "{s:?}"
    );
}

#[tokio::test]
async fn exec_check_exit_status_stderr_and_timeout_kill() {
    let ok = Check::spawn(spec(
        Probe::Exec {
            argv: vec!["/bin/true".into()],
        },
        100,
        100,
        1,
        1,
    ));
    wait_for(&ok, Duration::from_secs(5), |s| s.up).await;

    let argv = ["/bin/sh", "-c", "echo backend not ready >&2; exit 3"];
    let bad = Check::spawn(spec(
        Probe::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        },
        100,
        100,
        1,
        1,
    ));
    let (s, _) = wait_for(&bad, Duration::from_secs(5), |s| s.probes >= 1).await;
    assert_eq!(s.last_result, "exit status 3: backend not ready");
    assert!(!s.up);

    let missing = Check::spawn(spec(
        Probe::Exec {
            argv: vec!["/nonexistent/check".into()],
        },
        100,
        100,
        1,
        1,
    ));
    let (s, _) = wait_for(&missing, Duration::from_secs(5), |s| s.probes >= 1).await;
    assert!(
        s.last_result
            .starts_with("exec /nonexistent/check: No such file"),
        "{s:?}"
    );

    // A marker argument makes the sleeping process findable in /proc.
    let marker = format!("7{}", std::process::id());
    let hang = Check::spawn(spec(
        Probe::Exec {
            argv: vec!["/bin/sleep".into(), marker.clone()],
        },
        300,
        100,
        1,
        1,
    ));
    let (s, _) = wait_for(&hang, Duration::from_secs(5), |s| s.probes >= 2).await;
    assert_eq!(s.last_result, "timeout after 100ms");
    drop(hang);
    // Timed-out probes were killed: no `sleep <marker>` is left over.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sleepers(&marker) > 0 {
        assert!(
            Instant::now() < deadline,
            "timed-out exec probes still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sleepers(marker: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c.split(|&b| b == 0).any(|a| a == marker.as_bytes()))
        .count()
}

/// Real nginx with a self-signed certificate, in a process group of its
/// own. On drop the master gets SIGQUIT and is waited for (it exits after
/// its workers); if it hangs, the whole group gets SIGKILL, so no worker is
/// ever orphaned on the host.
struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: plain kill(2) on the pid and process group we started.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; the group id is the master's pid.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn start_nginx(port: u16) -> Nginx {
    let dir = std::env::temp_dir().join(format!("lbdt-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).expect("dir");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=storage.example",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let conf = format!(
        "daemon off; pid {d}/nginx.pid; error_log {d}/logs/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
         location = /health {{ return 200 \"storage ok\\n\"; }} location / {{ return 404; }} }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("conf");
    let child = Command::new("nginx")
        .process_group(0)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx");
    Nginx { child, dir }
}

#[tokio::test]
async fn https_check_against_real_nginx() {
    let port = free_port();
    let _nginx = start_nginx(port);
    let probe = |path: &str, verify: bool| Probe::Http {
        url: format!("https://127.0.0.1:{port}{path}"),
        expect_status: 200,
        body_contains: Some("storage ok".into()),
        verify_tls: verify,
    };
    let ok = Check::spawn(spec(probe("/health", false), 100, 1000, 1, 1));
    let (s, _) = wait_for(&ok, Duration::from_secs(10), |s| s.up).await;
    assert_eq!(s.last_result, "ok");

    let missing = Check::spawn(spec(probe("/nope", false), 100, 1000, 1, 1));
    let (s, _) = wait_for(&missing, Duration::from_secs(10), |s| {
        s.last_result.starts_with("status")
    })
    .await;
    assert_eq!(s.last_result, "status 404, expected 200");

    // Verification on: a self-signed certificate is refused.
    let strict = Check::spawn(spec(probe("/health", true), 100, 1000, 1, 1));
    let (s, _) = wait_for(&strict, Duration::from_secs(10), |s| {
        s.probes >= 1 && s.last_result != "not probed yet"
    })
    .await;
    assert!(!s.up);
    assert!(
        s.last_result.to_lowercase().contains("certificate"),
        "{s:?}"
    );
}
