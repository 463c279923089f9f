//! The operator socket: mode 0600, requests reach the daemon's inbox, bad
//! input gets an error answer (never a crash or a hang).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use lbd::control::{self, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

async fn raw(path: &std::path::Path, bytes: &[u8]) -> Response {
    let s = UnixStream::connect(path).await.expect("connect");
    let (r, mut w) = s.into_split();
    let _ = w.write_all(bytes).await;
    let _ = w.shutdown().await;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(r).read_line(&mut line),
    )
    .await
    .expect("an answer within 10 s")
    .expect("read");
    serde_json::from_str(line.trim()).expect("JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_root_only_and_bad_requests_get_errors() {
    let dir = std::env::temp_dir().join(format!("lbdt-ctl-{}", std::process::id()));
    let path = dir.join("run/lbd.sock");
    // A stale socket file from a crashed daemon is replaced.
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(&path, b"stale").expect("stale");
    let listener = control::bind(&path).expect("bind");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (tx, mut rx) = mpsc::channel(4);
    let server = tokio::spawn(control::serve(listener, tx));
    let daemon = tokio::spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let r: Request = req;
            let _ = reply.send(Response::Message(format!("{r:?}")));
        }
    });

    let r = control::call(&path, &Request::Drain).await.expect("call");
    assert!(r.is_ok() && r.text() == Some("Drain"), "{r:?}");
    let r = control::call(
        &path,
        &Request::Table {
            vip: "198.51.100.10".into(),
        },
    )
    .await
    .expect("call");
    assert!(
        r.is_ok() && r.text().is_some_and(|m| m.contains("198.51.100.10")),
        "{r:?}"
    );

    let r = raw(&path, b"{\"cmd\":\"reboot\"}\n").await;
    let refused =
        |r: &Response, start: &str| matches!(r, Response::Error(m) if m.starts_with(start));
    assert!(
        refused(&r, "bad request: unknown variant `reboot`"),
        "{r:?}"
    );
    let r = raw(&path, b"\xff\xfe garbage\n").await;
    assert!(refused(&r, "bad request"), "{r:?}");
    let r = raw(&path, b"").await;
    assert!(refused(&r, "bad request"), "{r:?}");
    // A line far beyond the 64 KiB limit is cut, not buffered without end.
    let r = raw(&path, &vec![b'x'; 1 << 20]).await;
    assert!(!r.is_ok(), "{r:?}");

    // The daemon answers the next request normally.
    let r = control::call(&path, &Request::Status).await.expect("call");
    assert!(r.is_ok(), "{r:?}");
    server.abort();
    daemon.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
