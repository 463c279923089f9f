//! The liveness protocol attacked over real sockets on the loopback
//! (127.0.0.1 is the polled member, 127.0.0.2 the poller, 127.0.0.4 another
//! member, 127.0.0.3 a stranger):
//! - a report signed with the wrong secret, a genuine answer replayed, a
//!   genuine answer altered, an unsigned one and a 100 MB one never make
//!   the member up; a correctly signed one does (the harness can pass);
//! - the endpoint closes strangers at accept, caps connections per source,
//!   cuts idle and trickling clients at one deadline, never reads a body,
//!   and keeps answering the real poller through 2,000 idle connections
//!   and a 100 MB body.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lbd::config::{Liveness, Member};
use lbd::liveness::{self, Keys, MAC_HEADER, Members, NodeState, Report};
use support::raise_nofile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

const POLLED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const POLLER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const OTHER_MEMBER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const SECRET: &[u8] = b"cluster-secret-0123456789abcdef";
const WRONG: &[u8] = b"not-the-cluster-secret-987654321";

fn member(id: u16, a: Ipv4Addr) -> Member {
    Member {
        id,
        address: IpAddr::V4(a),
        weight: 1,
    }
}

fn all() -> Vec<Member> {
    vec![
        member(1, POLLER),
        member(2, POLLED),
        member(3, OTHER_MEMBER),
    ]
}

fn cfg(port: u16) -> Liveness {
    Liveness {
        port,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(400),
        rise: 1,
        fall: 3,
        secret_file: None,
    }
}

fn keys(secret: &[u8]) -> watch::Receiver<Option<Arc<Keys>>> {
    watch::channel(Keys::new(&[secret]).map(Arc::new)).1
}

fn report() -> Report {
    Report {
        node_id: 2,
        state: NodeState::Active,
        generation: "0123456789abcdef".into(),
        vips: BTreeMap::from([("198.51.100.10".to_string(), true)]),
    }
}

fn endpoint(members: Members, deadline: Duration) -> liveness::Endpoint {
    liveness::Endpoint {
        report: watch::channel(report()).1,
        members,
        keys: keys(SECRET),
        deadline,
        counters: Default::default(),
    }
}

/// The poller (node 1) with the cluster secret, polling node 2.
fn start_poller(port: u16) -> (Members, tokio::task::JoinHandle<()>) {
    let members = liveness::members(&all(), 1, &cfg(port));
    let task = tokio::spawn(liveness::poll(
        members.clone(),
        liveness::Poller {
            cfg: cfg(port),
            generation: watch::channel("0123456789abcdef".to_string()).1,
            local_address: Some(IpAddr::V4(POLLER)),
            keys: keys(SECRET),
        },
    ));
    (members, task)
}

fn up(m: &Members) -> bool {
    liveness::lock(m).get(&2).is_some_and(|s| s.up)
}

fn polls(m: &Members) -> u64 {
    liveness::lock(m).get(&2).map_or(0, |s| s.polls)
}

fn last_error(m: &Members) -> String {
    liveness::lock(m)
        .get(&2)
        .and_then(|s| s.last_error.clone())
        .unwrap_or_default()
}

async fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `f` holds at every sample for `d` (10 ms apart).
async fn holds(what: &str, d: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert!(f(), "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    s.connect(to).await
}

/// What the fake member answers.
#[derive(Clone)]
enum Fake {
    /// A fresh report tagged with the wrong secret.
    Forged,
    /// A genuine answer (body, tag) captured earlier.
    Replay(Vec<u8>, String),
    /// A genuine answer with its body changed.
    Tampered(Vec<u8>, String),
    /// No tag at all.
    Unsigned,
    /// 100 MB of body.
    Huge,
    /// Correctly signed for this nonce: must be accepted.
    Genuine,
}

/// A hand-written member endpoint that answers every poll as `mode` says.
async fn fake_member(listener: TcpListener, mode: watch::Receiver<Fake>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let mode = mode.borrow().clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let nonce: String = head
                .split_once("nonce=")
                .map(|(_, r)| r.chars().take_while(|c| c.is_ascii_hexdigit()).collect())
                .unwrap_or_default();
            let body = serde_json::to_vec(&report()).expect("json");
            let sign = |k: &[u8], b: &[u8]| Keys::new(&[k]).expect("keys").sign(&nonce, b);
            let (body, tag) = match mode {
                Fake::Forged => (body.clone(), Some(sign(WRONG, &body))),
                Fake::Replay(b, t) => (b, Some(t)),
                Fake::Tampered(b, t) => (
                    String::from_utf8_lossy(&b)
                        .replace("active", "draining")
                        .into_bytes(),
                    Some(t),
                ),
                Fake::Unsigned => (body, None),
                Fake::Genuine => (body.clone(), Some(sign(SECRET, &body))),
                Fake::Huge => {
                    let head =
                        "HTTP/1.1 200 OK\r\ncontent-length: 104857600\r\nconnection: close\r\n\r\n";
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 1 << 20];
                    for _ in 0..100 {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            };
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            if let Some(t) = tag {
                out += &format!("{MAC_HEADER}: {t}\r\n");
            }
            out += "\r\n";
            let mut out = out.into_bytes();
            out.extend_from_slice(&body);
            let _ = s.write_all(&out).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_tampered_unsigned_and_huge_reports_never_count() {
    let listener = TcpListener::bind((POLLED, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let addr = SocketAddr::new(IpAddr::V4(POLLED), port);
    let ep = endpoint(
        liveness::members(&all(), 2, &cfg(port)),
        Duration::from_secs(1),
    );
    let genuine = tokio::spawn(liveness::serve(listener, ep));
    let (members, poller) = start_poller(port);
    wait("member 2 up", Duration::from_secs(5), || up(&members)).await;

    // Capture a genuine answer, as anyone on the path could.
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(POLLER))
        .build()
        .expect("client");
    let nonce = "00112233445566778899aabbccddeeff";
    let resp = client
        .get(format!("http://{addr}/v1/state?nonce={nonce}"))
        .send()
        .await
        .expect("genuine poll");
    let tag = resp.headers()[MAC_HEADER]
        .to_str()
        .expect("tag")
        .to_string();
    let body = resp.bytes().await.expect("body").to_vec();
    assert!(Keys::new(&[SECRET]).expect("k").verify(nonce, &body, &tag));
    let no_nonce = client
        .get(format!("http://{addr}/v1/state"))
        .send()
        .await
        .expect("poll");
    assert_eq!(
        no_nonce.status().as_u16(),
        400,
        "a poll without nonce is refused"
    );

    // The member goes away; a fake answers for its address.
    genuine.abort();
    wait("member 2 down", Duration::from_secs(5), || !up(&members)).await;
    let fake_listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (mode, mode_rx) = watch::channel(Fake::Forged);
    let fake = tokio::spawn(fake_member(fake_listener, mode_rx));
    for (m, want) in [
        (Fake::Forged, "tag does not match"),
        (
            Fake::Replay(body.clone(), tag.clone()),
            "tag does not match",
        ),
        (
            Fake::Tampered(body.clone(), tag.clone()),
            "tag does not match",
        ),
        (Fake::Unsigned, "no tag"),
        (Fake::Huge, "larger than 65536 bytes"),
    ] {
        mode.send_replace(m);
        let before = polls(&members);
        wait(want, Duration::from_secs(5), || {
            polls(&members) > before + 1 && last_error(&members).contains(want)
        })
        .await;
        holds("member 2 stays down", Duration::from_millis(500), || {
            !up(&members)
        })
        .await;
    }
    // The same harness with the right secret is believed.
    mode.send_replace(Fake::Genuine);
    wait(
        "a correctly signed report counts",
        Duration::from_secs(5),
        || up(&members),
    )
    .await;
    fake.abort();
    poller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_refuses_strangers_bounds_connections_and_never_reads_a_body() {
    raise_nofile();
    let listener = TcpListener::bind((POLLED, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let addr = SocketAddr::new(IpAddr::V4(POLLED), port);
    let deadline = Duration::from_secs(1);
    let ep = endpoint(liveness::members(&all(), 2, &cfg(port)), deadline);
    let counters = ep.counters.clone();
    let server = tokio::spawn(liveness::serve(listener, ep));
    let (members, poller) = start_poller(port);
    wait("member 2 up", Duration::from_secs(5), || up(&members)).await;
    let count = |f: fn(&liveness::Counters) -> &std::sync::atomic::AtomicU64| {
        f(&counters).load(Ordering::Relaxed)
    };

    // A stranger gets no byte back, whatever it sends.
    let mut s = connect_from(STRANGER, addr).await.expect("connect");
    let _ = s
        .write_all(b"GET /v1/state?nonce=00112233445566778899aabbccddeeff HTTP/1.1\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await;
    assert!(got.is_empty(), "a stranger was answered: {got:?}");
    assert!(count(|c| &c.refused_not_member) >= 1);

    // 2,000 idle connections from a stranger and 2,000 from another member.
    let polls_before = polls(&members);
    let mut idle = Vec::new();
    for from in [STRANGER, OTHER_MEMBER] {
        for _ in 0..2000 {
            idle.push(connect_from(from, addr).await.expect("connect"));
        }
    }
    holds(
        "member 2 stays up under 4,000 idle connections",
        Duration::from_secs(2),
        || up(&members),
    )
    .await;
    assert!(
        polls(&members) >= polls_before + 10,
        "polls kept being answered ({} -> {})",
        polls_before,
        polls(&members)
    );
    // Every one of them is closed by now: at accept (stranger, over the
    // per-source cap) or at the deadline.
    let start = Instant::now();
    for mut s in idle {
        let mut b = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection is still open after {:?}",
            start.elapsed()
        );
    }
    assert!(count(|c| &c.refused_not_member) >= 2001);
    assert!(
        count(|c| &c.refused_too_many) >= 2000 - liveness::MAX_PER_SOURCE as u64,
        "{}",
        count(|c| &c.refused_too_many)
    );
    assert!(count(|c| &c.deadline_exceeded) >= 1);

    // A client trickling its headers cannot extend the deadline.
    let mut s = connect_from(OTHER_MEMBER, addr).await.expect("connect");
    let start = Instant::now();
    let trickle = async {
        let _ = s.write_all(b"GET /v1/state HTTP/1.1\r\n").await;
        for i in 0..200 {
            if s.write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    trickle.await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    // Trickling all 200 lines would take 10 s; the deadline is 1 s.
    let held = start.elapsed();
    eprintln!("trickling client cut after {held:?}");
    assert!(
        held < Duration::from_secs(4),
        "the trickling client held on for {held:?}"
    );

    // A 100 MB body from a member: never read, the connection is closed.
    let mut s = connect_from(OTHER_MEMBER, addr).await.expect("connect");
    let start = Instant::now();
    let head = "POST /v1/state HTTP/1.1\r\nhost: x\r\ncontent-length: 104857600\r\n\r\n";
    s.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_secs(3), s.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    eprintln!(
        "100 MB body: {} MB written before the endpoint's close stopped it, in {:?}",
        sent >> 20,
        start.elapsed()
    );
    assert!(
        sent < 50 << 20,
        "the endpoint took {} MB of body in {:?}",
        sent >> 20,
        start.elapsed()
    );
    assert!(up(&members), "the real poller still gets answers");
    let before = polls(&members);
    wait("more polls answered", Duration::from_secs(5), || {
        polls(&members) >= before + 5 && up(&members)
    })
    .await;
    server.abort();
    poller.abort();
}

#[test]
fn the_secret_file_must_be_private_long_enough_and_rotates_by_lines() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(lab::unique("lbdt-secret-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("liveness.secret");
    let write = |text: &str, mode: u32| {
        std::fs::write(&file, text).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let old = "old-secret-0123456789abcdef";
    let new = "new-secret-0123456789abcdef";
    write(&format!("{old}\n"), 0o644);
    let e = Keys::load(&file).expect_err("world-readable").to_string();
    assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    assert!(!e.contains(old), "the secret is never in a message: {e}");
    write("short\n", 0o600);
    let e = Keys::load(&file).expect_err("short").to_string();
    assert!(e.contains("line 1 is 5 bytes"), "{e}");
    write("\n\n", 0o600);
    assert!(Keys::load(&file).is_err(), "empty");
    let e = Keys::load(&dir.join("missing"))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("No such file"), "{e}");

    // Rotation: line 1 signs, every line verifies.
    write(&format!("{new}\n{old}\n"), 0o600);
    let both = Keys::load(&file).expect("two secrets");
    let only_old = Keys::new(&[old.as_bytes()]).expect("old");
    let only_new = Keys::new(&[new.as_bytes()]).expect("new");
    let nonce = "00112233445566778899aabbccddeeff";
    let tag = both.sign(nonce, b"{}");
    assert!(only_new.verify(nonce, b"{}", &tag), "line 1 signs");
    assert!(!only_old.verify(nonce, b"{}", &tag));
    assert!(
        both.verify(nonce, b"{}", &only_old.sign(nonce, b"{}")),
        "line 2 verifies"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
