//! Checksums through a real nginx with the shipped Lua glue: `Digest:
//! adler32=<8 hex>` on HEAD and GET, asked for (any case, q-value lists) or
//! not; a file without the xattr gets it computed once and stored; a PUT cut
//! off mid-body leaves neither file nor xattr; hostile paths are refused.
mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn digest_of(headers: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("digest")
            .then(|| v.trim().to_string())
    })
}

#[test]
fn digest_on_head_and_get_and_computed_once() {
    let s = Site::start("sum", SiteOptions::default());
    let data = content(1 << 20, 3);
    let sum = adler32(&data);
    // Written behind nginx's back: no xattr.
    std::fs::write(s.file("plain"), &data).unwrap();
    assert_eq!(xattr(&s.file("plain")), None);
    let url = s.url("/plain");
    // (The readiness poll's GET of /ready computed one already.)
    let before = s.metric("storage_front_checksum_computations_total", &[]);
    for want in [
        None,
        Some("Want-Digest: adler32"),
        Some("Want-Digest: ADLER32"),
        Some("Want-Digest: md5;q=0.3, Adler32;q=0.7"),
    ] {
        for method in [["-I"].as_slice(), ["-D", "-", "-o", "/dev/null"].as_slice()] {
            let mut args = method.to_vec();
            if let Some(w) = want {
                args.extend(["-H", w]);
            }
            args.push(&url);
            let (out, err, ok) = s.curl(&args);
            assert!(ok, "{err}");
            assert_eq!(
                digest_of(&out),
                Some(format!("adler32={sum}")),
                "{want:?} {method:?}: {out}"
            );
        }
    }
    assert_eq!(xattr(&s.file("plain")), Some(sum.clone()));
    // Eight requests, one computation.
    assert_eq!(
        s.metric("storage_front_checksum_computations_total", &[]),
        before + 1.0
    );
    // A stored value is served as stored (StoRM's files keep theirs).
    xattr::set(s.file("plain"), "user.storm.checksum.adler32", b"0000abcd").unwrap();
    let (out, _, _) = s.curl(&["-I", &url]);
    assert_eq!(digest_of(&out).as_deref(), Some("adler32=0000abcd"));
    // No Digest on a 404 (control: the header is tied to the file).
    let (out, _, _) = s.curl(&["-I", &s.url("/none")]);
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert_eq!(digest_of(&out), None);
}

#[test]
fn cut_off_put_leaves_nothing_and_hostile_paths_are_refused() {
    let s = Site::start("cut", SiteOptions::default());
    let addr = format!("127.0.0.1:{}", s.port);
    let before = s.metric("storage_front_checksum_computations_total", &[]);
    let mut c = raw(
        &addr,
        "PUT /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n",
    );
    c.write_all(&vec![1u8; 4 << 20]).unwrap();
    // nginx is storing the body in its temporary file (the control that
    // there was something to clean up).
    let body_temp = || {
        std::fs::read_dir(s.dir.join("tmp/body"))
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    wait_for("nginx's temporary file", Duration::from_secs(10), || {
        (body_temp() > 0).then_some(())
    });
    drop(c);
    wait_for("temporary file removed", Duration::from_secs(10), || {
        (body_temp() == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!s.file("cut").exists());
    assert_eq!(
        s.metric("storage_front_checksum_computations_total", &[]),
        before
    );
    // Control: a complete PUT of the same path creates it with its xattr.
    let data = content(4 << 20, 4);
    s.put("/cut", &data);
    wait_for("xattr", Duration::from_secs(10), || {
        xattr(&s.file("cut")).filter(|v| *v == adler32(&data))
    });

    // Hostile paths at the sidecar itself (nginx normalises its own).
    std::fs::create_dir_all(s.dir.join("outside")).unwrap();
    std::fs::write(s.dir.join("outside/secret"), b"x").unwrap();
    std::os::unix::fs::symlink(s.dir.join("outside"), s.file("link")).unwrap();
    let side = format!("http://127.0.0.1:{}", s.sidecar_port);
    for (path, want) in [
        (
            "/.storage-front/checksum/%2e%2e/outside/secret",
            "path contains \"..\"",
        ),
        (
            "/.storage-front/checksum/link/secret",
            "path leaves the document root",
        ),
        ("/.storage-front/checksum/a%00b", "path contains a NUL byte"),
    ] {
        let (out, _, _) = s.curl(&["--path-as-is", &format!("{side}{path}")]);
        assert_eq!(out.trim(), want, "{path}");
    }
    // A COPY whose path leaves the root through a symlink is refused too.
    let (status, body) = s.copy("/link/new", &[&format!("Source: {}", s.url("/cut"))]);
    assert_eq!(
        (status, body.trim()),
        (400, "/link/new: path leaves the document root")
    );
    assert!(!s.dir.join("outside/new").exists());
    assert!(xattr(&s.dir.join("outside/secret")).is_none());
}
