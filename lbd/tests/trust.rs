//! The trust boundaries of a running cluster (docs/threat-model.md), with
//! real `lbd` processes in network namespaces: 2 nodes with a liveness
//! secret, and the client namespace as the internet.
//!
//! Attacks tried, each while asserting that the cluster's tables do not
//! move and the nodes keep polling each other:
//! - 2,000 idle connections and a 100 MB body to a node's liveness port
//!   from a non-member address; 200 connections to its BGP port;
//! - a second `lbd run` on a running node;
//! - a SIGHUP that edits a serving VIP's check (must not withdraw it);
//! - with node 2 stopped, a fake answering for node 2's address with a
//!   replayed genuine report and with a report signed with the wrong
//!   secret (node 2 must stay down, node 1's table must stay its own);
//! - SIGHUPs while lbd starts;
//! - a new secret on one node only (SIGHUP re-reads it): the other refuses
//!   its reports until it reloads too;
//! - a reload that removes a VIP and a member: their metric series go.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const LIVENESS_PORT: u16 = 9180;
const SECRET: &str = "6c62642d74727573742d746573742d736563726574";

fn build() -> Lab {
    let mut c = Lab::new("trust", 2, false);
    let secret = c.dir.join("liveness.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for i in 0..2 {
        let cfg = c.node_config(i as u16 + 1, &[1, 2]).replacen(
            "fall = 3\n",
            &format!("fall = 3\nsecret_file = \"{}\"\n", secret.display()),
            1,
        );
        c.write_config(i, &cfg);
    }
    for i in 0..2 {
        c.start_lbd(i);
    }
    c
}

/// Both nodes see each other up and both are first hops of the IPv4 VIP.
fn converged(c: &Lab) -> bool {
    (0..2).all(|i| {
        let s = c.status(i);
        s["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["up"] == true && m["state"] == "active"))
            && share_nodes(&s, 0) == ["1", "2"]
    })
}

/// `f` holds at every sample for `d`.
fn holds(what: &str, d: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert!(f(), "{what} stopped holding");
        thread::sleep(Duration::from_millis(50));
    }
}

fn liveness_count(c: &Lab, i: usize, what: &str) -> u64 {
    c.status(i)["liveness"][what].as_u64().unwrap_or(0)
}

/// One poll as a member would send it, from node `from`'s namespace:
/// (body, tag).
fn genuine_answer(c: &Lab, from: usize, to: u16) -> (Vec<u8>, String) {
    let target = SocketAddr::new(c.member_addr(to), LIVENESS_PORT);
    let raw = c.nodes[from]
        .ns
        .run(move || {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /v1/state?nonce=00112233445566778899aabbccddeeff HTTP/1.0\r\n\r\n")?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)?;
            Ok(out)
        })
        .expect("genuine poll");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let tag = head
        .lines()
        .find_map(|l| l.strip_prefix("x-lbd-mac: "))
        .unwrap_or_else(|| panic!("no tag in {head}"))
        .to_string();
    (body.as_bytes().to_vec(), tag)
}

/// A fake liveness endpoint on node `i`'s member address answering every
/// request with `body` and `tag` (None: a fresh report tagged with a wrong
/// secret for the request's nonce).
fn fake_member(
    c: &Lab,
    i: usize,
    answer: Option<(Vec<u8>, String)>,
) -> (Arc<AtomicBool>, thread::JoinHandle<anyhow::Result<u64>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let addr = SocketAddr::new(c.member_addr(c.nodes[i].id), LIVENESS_PORT);
    let id = c.nodes[i].id;
    let t = c.nodes[i].ns.spawn(move || {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let wrong = lbd::liveness::Keys::new(&[b"the-wrong-secret-0123456789".as_slice()]).expect("keys");
        let mut answered = 0;
        while !s.load(Ordering::Relaxed) {
            let Ok((mut conn, _)) = l.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut head = [0u8; 2048];
            let n = conn.read(&mut head).unwrap_or(0);
            let head = String::from_utf8_lossy(&head[..n]).into_owned();
            let nonce: String = head
                .split_once("nonce=")
                .map(|(_, r)| r.chars().take_while(|c| c.is_ascii_hexdigit()).collect())
                .unwrap_or_default();
            let (body, tag) = answer.clone().unwrap_or_else(|| {
                let body = format!(
                    r#"{{"node_id":{id},"state":"active","generation":"0123456789abcdef","vips":{{"{VIP}":true,"{VIP6}":true}}}}"#
                )
                .into_bytes();
                let tag = wrong.sign(&nonce, &body);
                (body, tag)
            });
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-lbd-mac: {tag}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            let _ = conn.write_all(&out);
            answered += 1;
        }
        Ok(answered)
    });
    (stop, t)
}

fn metrics(c: &Lab, i: usize) -> String {
    c.nodes[i]
        .ns
        .exec("curl", &["-s", "http://127.0.0.1:9181/metrics"])
        .unwrap_or_default()
}

/// SigCgt of `pid` has SIGHUP: lbd's handler is installed.
fn catches_hup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|m| m & (1 << (libc::SIGHUP - 1)) != 0)
}

#[test]
fn liveness_and_daemon_hold_against_strangers_forgeries_and_operator_mistakes() {
    raise_nofile();
    let mut c = build();
    wait_for("both nodes converged", Duration::from_secs(30), || {
        converged(&c)
    });
    c.assert_running();

    // 1. The internet: 2,000 idle connections and a 100 MB body to node 1's
    //    liveness port, 200 connections to its BGP port.
    let target = SocketAddr::new(c.member_addr(1), LIVENESS_PORT);
    let idle = c
        .client
        .run(move || {
            let mut v = Vec::new();
            for _ in 0..2000 {
                v.push(TcpStream::connect_timeout(&target, Duration::from_secs(3))?);
            }
            Ok(v)
        })
        .expect("2,000 connections");
    holds(
        "tables and members unchanged under 2,000 idle connections",
        Duration::from_secs(2),
        || converged(&c),
    );
    let still_open = idle
        .into_iter()
        .filter(|s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut b = [0u8; 16];
            matches!((&*s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        })
        .count();
    assert_eq!(still_open, 0, "connections from a non-member stay open");
    assert!(liveness_count(&c, 0, "refused_not_member") >= 2000);
    assert!(liveness_count(&c, 0, "served") > 0);
    let sent = c
        .client
        .run(move || {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
            s.set_write_timeout(Some(Duration::from_secs(3)))?;
            let _ = s.write_all(b"POST /v1/state HTTP/1.1\r\ncontent-length: 104857600\r\n\r\n");
            let chunk = vec![b'a'; 1 << 20];
            let mut sent = 0usize;
            for _ in 0..100 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            Ok(sent)
        })
        .expect("100 MB body");
    assert!(sent < 50 << 20, "node 1 took {} MB of body", sent >> 20);
    let bgp = SocketAddr::new(c.member_addr(1), 179);
    let connected = c
        .client
        .run(move || {
            let mut n = 0;
            for _ in 0..200 {
                n += u64::from(TcpStream::connect_timeout(&bgp, Duration::from_secs(1)).is_ok());
            }
            Ok(n)
        })
        .expect("BGP connections");
    wait_for(
        &format!("{connected} refused BGP connections counted"),
        Duration::from_secs(5),
        || c.status(0)["bgp_refused_unknown"].as_u64().unwrap_or(0) >= connected,
    );
    assert!(
        connected >= 150,
        "only {connected} of 200 connections to port 179"
    );
    let lines = c
        .log(0)
        .matches("connections from unconfigured addresses refused")
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines for {connected} refused connections"
    );
    assert!(converged(&c));

    // 2. A second daemon on node 1 exits 1 naming the running one and
    //    changes nothing.
    let pid = c.lbd_pid(0);
    let uptime = c.status(0)["node"]["uptime_s"].as_u64().unwrap_or(0);
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", c.nodes[0].ns.name))
        .args([LBD, "run", "-c"])
        .arg(&c.nodes[0].config)
        .output()
        .expect("second lbd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("another lbd (pid {pid}) is running")),
        "{err}"
    );
    let s = c.status(0);
    assert!(s["node"]["uptime_s"].as_u64().unwrap_or(0) >= uptime, "{s}");
    assert_eq!(s["vips"][0]["announced"], true, "{s}");
    c.assert_running();

    // 3. A SIGHUP editing a serving VIP's check keeps it announced.
    let log_before = c.log(0).len();
    let cfg = c.config(0);
    let edited = cfg.replacen(
        "body_contains = \"ok\"\ninterval = \"200ms\"\ntimeout = \"150ms\"",
        "body_contains = \"ok\"\ninterval = \"200ms\"\ntimeout = \"140ms\"",
        1,
    );
    assert_ne!(cfg, edited);
    c.write_config(0, &edited);
    let outcome = c.reload(0);
    assert!(outcome.contains(&format!("checks of {VIP}")), "{outcome}");
    holds(
        "the VIP stays healthy and announced",
        Duration::from_secs(2),
        || {
            let s = c.status(0);
            s["vips"][0]["healthy"] == true && s["vips"][0]["announced"] == true
        },
    );
    let after = c.log(0)[log_before..].to_string();
    assert!(!after.contains("withdrawn"), "{after}");

    // 4. Node 2 goes; a fake answers for its address with a replayed
    //    genuine report, then with one signed with the wrong secret.
    let captured = genuine_answer(&c, 0, 2);
    c.stop_lbd(1);
    wait_for("node 1 alone in its table", Duration::from_secs(10), || {
        let s = c.status(0);
        s["members"][1]["up"] == false && share_nodes(&s, 0) == ["1"]
    });
    for answer in [Some(captured), None] {
        let replay = answer.is_some();
        let (stop, fake) = fake_member(&c, 1, answer);
        holds(
            "member 2 stays down and node 1's table stays its own",
            Duration::from_secs(2),
            || {
                let s = c.status(0);
                s["members"][1]["up"] == false && share_nodes(&s, 0) == ["1"]
            },
        );
        let s = c.status(0);
        let e = s["members"][1]["last_error"].as_str().unwrap_or("");
        assert!(e.contains("tag does not match"), "replay {replay}: {s}");
        stop.store(true, Ordering::Relaxed);
        let answered = fake.join().expect("fake").expect("fake ran");
        assert!(answered >= 5, "the fake answered {answered} polls");
    }

    // 5. SIGHUPs while node 2 starts, from the moment its handler exists.
    c.start_lbd(1);
    let pid2 = c.lbd_pid(1);
    wait_for("lbd's SIGHUP handler", Duration::from_secs(5), || {
        catches_hup(pid2)
    });
    let started_before = c.status(1).is_null();
    for _ in 0..20 {
        signal(pid2, libc::SIGHUP);
        thread::sleep(Duration::from_millis(25));
    }
    c.assert_running();
    assert!(started_before, "the SIGHUPs came after the start");
    wait_for(
        "both nodes converged again",
        Duration::from_secs(30),
        || converged(&c),
    );

    // 6. The secret is re-read on SIGHUP: node 1 alone gets a new one
    //    (the old one as line 2): node 2 cannot verify node 1 any more;
    //    node 2 reloads too and both agree again (a rotation's first step).
    let secret = c.dir.join("liveness.secret");
    std::fs::write(
        &secret,
        format!("6e65772d7365637265742d666f722d726f746174696f6e\n{SECRET}\n"),
    )
    .expect("new secret");
    c.reload(0);
    wait_for(
        "node 2 refuses node 1's new tags",
        Duration::from_secs(10),
        || {
            let s = c.status(1);
            s["members"][0]["up"] == false
                && s["members"][0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("tag does not match"))
        },
    );
    assert_eq!(
        c.status(0)["members"][1]["up"],
        true,
        "node 1 verifies node 2's old tags"
    );
    // Node 2's last reload (step 5) may be of this second, and the reload
    // outcome `c.reload` waits for is stamped to the second: wait for the
    // clock to leave that second.
    let last = c.status(1)["node"]["last_reload"].clone();
    if let Some(stamp) = last.as_str().and_then(reload_stamp) {
        wait_for(
            "a second after node 2's last reload",
            Duration::from_secs(3),
            || health::unix_now() > stamp,
        );
    }
    c.reload(1);
    wait_for(
        "both nodes converged with the new secret",
        Duration::from_secs(30),
        || converged(&c),
    );
    assert!(!c.log(0).contains("6e65772d"), "the secret is never logged");

    // 7. A reload that removes the IPv6 VIP and member 2: their series go.
    wait_for(
        "series of the VIP and member",
        Duration::from_secs(5),
        || {
            let m = metrics(&c, 0);
            m.contains(&format!("vip=\"{VIP6}\"")) && m.contains("member=\"2\"")
        },
    );
    let cfg = c.node_config(1, &[1]);
    let cfg = cfg
        .replacen(
            "fall = 3\n",
            &format!("fall = 3\nsecret_file = \"{}\"\n", secret.display()),
            1,
        )
        .replace(
            &vip_config(IpAddr::V6(VIP6), &format!("http://[{VIP6}]/health")),
            "",
        );
    c.write_config(0, &cfg);
    let outcome = c.reload(0);
    assert!(outcome.contains("members"), "{outcome}");
    wait_for("removed series gone", Duration::from_secs(15), || {
        let m = metrics(&c, 0);
        !m.contains(&format!("vip=\"{VIP6}\""))
            && !m.contains("member=\"2\"")
            && m.contains(&format!("lbd_vip_announced{{vip=\"{VIP}\"}} 1"))
    });
    c.assert_running();
}

/// The Unix second a reload outcome is stamped with ("at 1765150000: applied
/// ...", "no change at ...", "refused at ...: ...").
fn reload_stamp(outcome: &str) -> Option<u64> {
    let (_, rest) = outcome.split_once("at ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
