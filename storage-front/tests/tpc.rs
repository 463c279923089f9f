//! Third-party copy between two real sites (nginx + the shipped Lua glue +
//! the storage-front sidecar) on loopback: pull and push byte-exact with the
//! checksum xattr, the marker stream parsed strictly, every refusal with its
//! reason, TransferHeader forwarding, checksum verification (and its
//! mismatch), a client that disconnects, https against a CA directory.
mod common;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use common::*;

const LEN: usize = (3 << 20) + 12345;

#[test]
fn pull_and_push_between_two_sites() {
    let a = Site::start("a", SiteOptions::default());
    let b = Site::start("b", SiteOptions::default());
    let data = content(LEN, 1);
    a.put("/dir/f", &data);
    let sum = adler32(&data);

    // Pull: B fetches A's file; the token travels as Authorization.
    let (status, body) = b.copy(
        "/pulled",
        &[
            &format!("Source: {}", a.url("/dir/f")),
            "TransferHeaderAuthorization: Bearer x",
            "Credential: none",
            "RequireChecksumVerification: true",
        ],
    );
    assert_eq!(status, 202, "{body}");
    let (markers, result) = parse_markers(&body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
    assert_eq!(result, Ok("Created".into()), "{body}");
    let last = markers.last().expect("a final marker");
    assert_eq!(last.bytes, LEN as u64);
    assert_eq!(last.remote, format!("tcp:127.0.0.1:{}", a.port));
    assert_eq!(std::fs::read(b.file("pulled")).unwrap(), data);
    assert_eq!(xattr(&b.file("pulled")).as_deref(), Some(sum.as_str()));
    // A saw the token and our Want-Digest on the GET.
    let log = a.log("access.log");
    assert!(
        log.contains("GET /dir/f 200 auth=[Bearer x] scitag=[-] want=[adler32]"),
        "{log}"
    );
    // A's PUT got its xattr from the log-phase hook (no GET needed).
    wait_for("xattr after PUT", Duration::from_secs(10), || {
        xattr(&a.file("dir/f")).filter(|v| *v == sum)
    });

    // Push: A sends its file to B, B is asked for its checksum.
    let (status, body) = a.copy(
        "/dir/f",
        &[
            &format!("Destination: {}", b.url("/pushed")),
            "RequireChecksumVerification: true",
        ],
    );
    assert_eq!(status, 202, "{body}");
    let (markers, result) = parse_markers(&body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
    assert_eq!(result, Ok("Created".into()), "{body}");
    assert_eq!(markers.last().unwrap().bytes, LEN as u64);
    assert_eq!(std::fs::read(b.file("pushed")).unwrap(), data);
    let log = b.log("access.log");
    assert!(log.contains("PUT /pushed 201"), "{log}");
    assert!(
        log.contains("HEAD /pushed 200 auth=[-] scitag=[-] want=[adler32]"),
        "{log}"
    );
    assert_eq!(
        b.metric(
            "storage_front_transfers_total",
            &["direction=\"pull\"", "result=\"success\""]
        ),
        1.0
    );
    assert_eq!(
        a.metric(
            "storage_front_transfers_total",
            &["direction=\"push\"", "result=\"success\""]
        ),
        1.0
    );
    assert_eq!(
        b.metric("storage_front_transfer_bytes_total", &["pull"]),
        LEN as f64
    );

    // Overwrite: F on an existing target: 412, nothing moves.
    let src = format!("Source: {}", a.url("/dir/f"));
    let (status, body) = b.copy("/pulled", &[&src, "Overwrite: F"]);
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("exists and Overwrite is F"), "{body}");
    // Control: the same with Overwrite: T runs.
    assert_eq!(b.copy("/pulled", &[&src, "Overwrite: T"]).0, 202);

    // Refusals, each with its reason.
    let dst = format!("Destination: {}", a.url("/x"));
    for (headers, reason) in [
        (
            vec![src.as_str(), dst.as_str()],
            "both Source and Destination",
        ),
        (vec!["Source: ftp://h/x"], "Source: scheme \"ftp\""),
        (vec!["Source: /x"], "Source: \"/x\" is not an absolute URL"),
        (
            vec![src.as_str(), "Credential: gridsite"],
            "Credential \"gridsite\" is not supported",
        ),
        (
            vec![src.as_str(), "TransferHeaderHost: evil"],
            "TransferHeaderhost is not allowed",
        ),
        (
            vec![src.as_str(), "Overwrite: maybe"],
            "overwrite: expected T or F",
        ),
    ] {
        let (status, body) = b.copy("/refused", &headers);
        assert_eq!(status, 400, "{headers:?}: {body}");
        assert!(
            body.contains(reason),
            "{headers:?}: {body:?} lacks {reason:?}"
        );
    }
    // Neither header: nginx's Lua sends it to the sidecar, which says why.
    let (status, body) = b.copy("/refused", &[]);
    assert_eq!(
        (status, body.trim()),
        (400, "neither Source nor Destination given")
    );
    // Push of a file that does not exist.
    let (status, body) = a.copy("/nothing", &[&format!("Destination: {}", b.url("/n"))]);
    assert_eq!(status, 404, "{body}");
    assert!(!b.file("refused").exists() && !b.file("n").exists());

    // A source that answers 404: failure with the status.
    let (status, body) = b.copy("/missing", &[&format!("Source: {}", a.url("/nope"))]);
    assert_eq!(status, 202);
    assert_eq!(
        parse_markers(&body).unwrap().1,
        Err("source answered 404 Not Found".into())
    );
    assert!(!b.file("missing").exists());

    // Checksum mismatch: A's stored checksum is wrong, verification catches
    // it and B keeps nothing; control: without verification the copy runs.
    let bad = b.file("bad");
    a.put("/wrong", &data);
    wait_for("xattr", Duration::from_secs(10), || xattr(&a.file("wrong")));
    xattr::set(a.file("wrong"), "user.storm.checksum.adler32", b"0badbeef").unwrap();
    let wrong = format!("Source: {}", a.url("/wrong"));
    let (_, body) = b.copy("/bad", &[&wrong, "RequireChecksumVerification: true"]);
    let failure = parse_markers(&body).unwrap().1.unwrap_err();
    assert_eq!(
        failure,
        format!("checksum mismatch: source says adler32 0badbeef, received data has {sum}")
    );
    assert!(!bad.exists());
    assert_eq!(
        only_regular_files(&b.file("")),
        ["pulled", "pushed", "ready"]
    );
    let (_, body) = b.copy("/bad", &[&wrong]);
    assert_eq!(parse_markers(&body).unwrap().1, Ok("Created".into()));
    assert_eq!(
        b.metric(
            "storage_front_transfers_total",
            &["direction=\"pull\"", "result=\"failure\""]
        ),
        2.0
    );

    // A COPY within the server (Destination on this host) stays with
    // nginx's dav module: copied, and the sidecar saw nothing.
    let before = a.metric("storage_front_transfers_total", &[]);
    let (status, body) = a.copy("/dir/f", &[&format!("Destination: {}", a.url("/local"))]);
    assert!(status == 201 || status == 204, "{status} {body}");
    assert_eq!(std::fs::read(a.file("local")).unwrap(), data);
    assert_eq!(a.metric("storage_front_transfers_total", &[]), before);

    // The marker parser rejects what davix rejects (controls).
    for broken in [
        "Perf Marker\nTimestamp: 1\nStripe Index: 0\nStripe Bytes Transferred: 5\nTotal Stripe Count: 1\nRemoteConnections: tcp:1.2.3.4:5\n",
        "success: Created\nmore\n",
        "Perf Marker\nTimestamp: x\nStripe Index: 0\nStripe Bytes Transferred: 5\nTotal Stripe Count: 1\nRemoteConnections: \nEnd\n",
        "",
    ] {
        assert!(parse_markers(broken).is_err(), "{broken:?}");
    }
}

fn only_regular_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A source that sends its headers and then trickles data forever.
fn trickling_source() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = read_until(&mut s, "\r\n\r\n");
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..200 {
            if s.write_all(&chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (port, t)
}

#[test]
fn client_disconnect_aborts_and_removes_the_partial_file() {
    let b = Site::start("disc", SiteOptions::default());
    let (port, source) = trickling_source();
    let mut s = raw(
        &format!("127.0.0.1:{}", b.port),
        &format!(
            "COPY /partial HTTP/1.1\r\nHost: x\r\nSource: http://127.0.0.1:{port}/big\r\n\r\n"
        ),
    );
    let head = read_until(&mut s, "Stripe Bytes Transferred: ");
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    // The partial file exists while the copy runs (the control).
    let temp = || {
        std::fs::read_dir(b.file(""))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".partial."))
    };
    wait_for("temporary file", Duration::from_secs(10), || {
        temp().then_some(())
    });
    drop(s);
    wait_for("partial file removed", Duration::from_secs(10), || {
        (!temp()).then_some(())
    });
    assert!(!b.file("partial").exists());
    wait_for("aborted counted", Duration::from_secs(10), || {
        (b.metric("storage_front_transfers_total", &["result=\"aborted\""]) == 1.0).then_some(())
    });
    source.join().unwrap();
}

/// A CA and a host certificate for 127.0.0.1 made with the openssl CLI;
/// the CA lands in `ca_dir` under its subject-hash name (`<hash>.0`), the
/// /etc/grid-security/certificates layout. Returns (cert, key) paths.
fn make_ca(dir: &std::path::Path, ca_dir: &std::path::Path, tag: &str) -> (String, String) {
    let p = |f: &str| dir.join(format!("{tag}-{f}")).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-subj",
            &format!("/CN=Test CA {tag}"),
            "-days",
            "2",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-keyout",
            &p("host.key"),
            "-out",
            &p("host.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &p("host.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("host.pem"),
        "-days",
        "2",
        "-extfile",
        &p("ext"),
    ]);
    let hash = run(&["x509", "-noout", "-subject_hash", "-in", &p("ca.pem")]);
    std::fs::copy(p("ca.pem"), ca_dir.join(format!("{hash}.0"))).unwrap();
    // What a grid CA directory also holds: not certificates, skipped.
    std::fs::write(ca_dir.join(format!("{hash}.signing_policy")), "junk").unwrap();
    (p("host.pem"), p("host.key"))
}

#[test]
fn https_remote_is_verified_against_the_ca_directory() {
    let dir = std::env::temp_dir().join(format!("sf-pki-{}", std::process::id()));
    let (good_ca, wrong_ca) = (dir.join("good"), dir.join("wrong"));
    for d in [&good_ca, &wrong_ca] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (cert, key) = make_ca(&dir, &good_ca, "good");
    make_ca(&dir, &wrong_ca, "wrong");
    let (tls_port, _) = ports();
    let a = Site::start(
        "tls",
        SiteOptions {
            server_extra: &format!(
                "listen 127.0.0.1:{tls_port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};"
            ),
            ..Default::default()
        },
    );
    let b = Site::start("tlsb", SiteOptions::default());
    let data = content(1 << 20, 9);
    a.put("/f", &data);
    let install = |from: &std::path::Path| {
        for e in std::fs::read_dir(b.dir.join("ca")).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
        for e in std::fs::read_dir(from).unwrap().flatten() {
            std::fs::copy(e.path(), b.dir.join("ca").join(e.file_name())).unwrap();
        }
    };
    install(&good_ca);
    let src = format!("Source: davs://127.0.0.1:{tls_port}/f");
    let (status, body) = b.copy("/g", &[&src, "RequireChecksumVerification: true"]);
    assert_eq!(status, 202);
    assert_eq!(
        parse_markers(&body).unwrap().1,
        Ok("Created".into()),
        "{body}"
    );
    assert_eq!(std::fs::read(b.file("g")).unwrap(), data);
    // The CA directory is read at every connection: with the wrong CA the
    // same copy fails with the TLS reason and leaves nothing.
    install(&wrong_ca);
    let (_, body) = b.copy("/h", &[&src]);
    let failure = parse_markers(&body).unwrap().1.unwrap_err();
    assert!(
        failure.starts_with(&format!(
            "TLS with 127.0.0.1:{tls_port}: invalid peer certificate: UnknownIssuer"
        )),
        "{failure}"
    );
    assert!(!b.file("h").exists());
    // An empty CA directory is a clear failure too.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    install(&empty);
    let (_, body) = b.copy("/h", &[&src]);
    let failure = parse_markers(&body).unwrap().1.unwrap_err();
    assert!(
        failure.ends_with("no CA certificate (hashed-name PEM files)"),
        "{failure}"
    );
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A destination that takes a push slowly (512 KiB every 100 ms, never
/// silent for the 3 s idle timeout), then answers 201.
fn slow_destination(len: usize) -> (u16, std::thread::JoinHandle<usize>) {
    use std::io::Read;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let head = read_until(&mut s, "\r\n\r\n");
        let mut got = head.len() - head.find("\r\n\r\n").unwrap() - 4;
        let mut buf = vec![0u8; 512 << 10];
        while got < len {
            std::thread::sleep(Duration::from_millis(100));
            let n = s.read(&mut buf).unwrap();
            // (whatever is queued, up to 512 KiB)
            assert!(n > 0, "closed after {got} bytes");
            got += n;
        }
        s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        got
    });
    (port, t)
}

#[test]
fn a_slow_push_longer_than_the_idle_timeout_completes() {
    let a = Site::start("slow", SiteOptions::default());
    // Far more than the socket buffers hold: the upload itself is slow.
    let len = 32 << 20;
    std::fs::write(a.file("f"), content(len, 2)).unwrap();
    let (port, dest) = slow_destination(len);
    let started = std::time::Instant::now();
    let (status, body) = a.copy("/f", &[&format!("Destination: http://127.0.0.1:{port}/f")]);
    assert_eq!(status, 202);
    // Longer than twice the idle timeout (the bug the 1 GiB bench found).
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let (markers, result) = parse_markers(&body).unwrap();
    assert_eq!(result, Ok("Created".into()), "{body}");
    assert!(markers.len() > 20, "markers kept coming: {}", markers.len());
    // (Approximate: the head was read as lossy text.)
    assert!(dest.join().unwrap() >= len);
}

/// davix (the client library gfal2 and FTS use for HTTP) drives both copy
/// modes against the sidecar and parses its marker stream.
#[test]
fn davix_cp_pull_and_push() {
    let a = Site::start("dva", SiteOptions::default());
    let b = Site::start("dvb", SiteOptions::default());
    let data = content(LEN, 11);
    a.put("/f", &data);
    for mode in ["pull", "push"] {
        let target = b.url(&format!("/{mode}ed"));
        let o = std::process::Command::new("davix-cp")
            .args([
                "--copy-mode",
                mode,
                "-H",
                "SciTag: 206",
                &a.url("/f"),
                &target,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "davix-cp {mode}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read(b.file(&format!("{mode}ed"))).unwrap(),
            data,
            "{mode}"
        );
    }
    // Control: a copy that fails is reported as failed by davix.
    let o = std::process::Command::new("davix-cp")
        .args(["--copy-mode", "pull", &a.url("/nope"), &b.url("/never")])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!b.file("never").exists());
}

/// gfal-copy with checksum verification (`-K ADLER32`), in both copy modes.
#[test]
fn gfal_copy_with_adler32_pull_and_push() {
    let a = Site::start("gfa", SiteOptions::default());
    let b = Site::start("gfb", SiteOptions::default());
    let data = content(LEN, 12);
    a.put("/f", &data);
    for mode in ["pull", "push"] {
        let o = std::process::Command::new("gfal-copy")
            .env("GFAL_PYTHONBIN", "/usr/bin/python3")
            .args(["-K", "ADLER32", "--copy-mode", mode, "--no-delegation"])
            .args(["-D", "HTTP PLUGIN:HEADERS=SciTag: 206"])
            .arg(a.url("/f"))
            .arg(b.url(&format!("/g{mode}")))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "gfal-copy {mode}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(std::fs::read(b.file(&format!("g{mode}"))).unwrap(), data);
    }
    let done = |site: &Site, dir: &str| {
        site.metric(
            "storage_front_transfers_total",
            &[&format!("direction=\"{dir}\""), "result=\"success\""],
        )
    };
    assert_eq!((done(&b, "pull"), done(&a, "push")), (1.0, 1.0));
    // gfal asked both ends for their adler32.
    for site in [&a, &b] {
        let log = site.log("access.log");
        assert!(
            log.contains("want=[ADLER32]") || log.contains("want=[adler32]"),
            "{log}"
        );
    }
}
