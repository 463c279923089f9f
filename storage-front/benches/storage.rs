//! `make bench-storage`: node to node over a veth pair between two network
//! namespaces, each node a real nginx + the shipped Lua glue + the
//! storage-front sidecar. In every round, interleaved, on the same file:
//! plain PUT and GET with curl (the baseline; the GET stores the file, as
//! a client's download and a TPC pull do, and a GET to /dev/null is
//! reported beside it), PUT with checksum (the PUT
//! plus the `HEAD` with `Want-Digest: adler32` that `gfal-copy -K ADLER32`
//! sends after an upload: it waits for the sidecar's checksum), TPC pull and
//! TPC push. Median of the rounds; ratios to the baseline of the same run.
//! `SF_BENCH_MB` (default 1024) and `SF_BENCH_ROUNDS` (default 5).
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;

const A6: &str = "2001:db8:15::1";
const B6: &str = "2001:db8:15::2";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "target/bench/storage.json".into());
    let mb = env("SF_BENCH_MB", 1024);
    let rounds = env("SF_BENCH_ROUNDS", 5).max(1);
    let len = mb << 20;

    let (ns_a, ns_b) = veth_pair("bn", A6, B6);
    let peer = Site::start(
        "bpeer",
        SiteOptions {
            host: A6,
            netns: Some(&ns_a.name),
            ..Default::default()
        },
    );
    let node = Site::start(
        "bnode",
        SiteOptions {
            host: B6,
            netns: Some(&ns_b.name),
            ..Default::default()
        },
    );
    eprintln!("writing {mb} MiB test file");
    let data = content(len, 7);
    let sum = adler32(&data);
    let src = peer.dir.join("tmp/src");
    std::fs::write(&src, &data).unwrap();
    std::fs::write(peer.file("src"), &data).unwrap();
    std::fs::write(node.file("src"), &data).unwrap();
    drop(data);
    let src = src.to_str().unwrap().to_string();
    let mbps = |secs: f64| (len as f64 * 8.0 / 1e6) / secs;
    let timed = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        mbps(t.elapsed().as_secs_f64())
    };
    let ok_code = |out: (String, String, bool), want: &[&str]| {
        assert!(
            out.2 && want.iter().any(|w| out.0.trim_end().ends_with(w)),
            "{out:?}"
        );
    };
    let put = |path: &str| {
        ok_code(
            peer.curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-T",
                &src,
                &node.url(path),
            ]),
            &["201", "204"],
        )
    };
    let copy_ok = |(status, body): (u16, String)| {
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            parse_markers(&body).unwrap().1,
            Ok("Created".into()),
            "{body}"
        );
    };
    let names = [
        "put_mbps",
        "put_checksum_mbps",
        "get_mbps",
        "get_discard_mbps",
        "tpc_pull_mbps",
        "tpc_push_mbps",
    ];
    let mut samples: Vec<Vec<f64>> = vec![vec![]; names.len()];
    // How long the HEAD after the checksummed PUT waited (the checksum's
    // share of put_checksum_mbps).
    let mut checksum_head_ms = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        samples[0].push(timed(&|| put("/put")));
        let _ = std::fs::remove_file(node.file("put"));
        let head_ms = std::cell::Cell::new(0.0);
        samples[1].push(timed(&|| {
            put("/putsum");
            let t = Instant::now();
            let (head, err, ok) =
                peer.curl(&["-I", "-H", "Want-Digest: ADLER32", &node.url("/putsum")]);
            assert!(ok, "{err}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("digest: adler32={sum}")),
                "{head}"
            );
            head_ms.set(t.elapsed().as_secs_f64() * 1e3);
        }));
        checksum_head_ms.push(head_ms.get());
        let _ = std::fs::remove_file(node.file("putsum"));
        let got = peer.dir.join("tmp/got");
        let got = got.to_str().unwrap();
        samples[2].push(timed(&|| {
            ok_code(
                peer.curl(&["-o", got, "-w", "%{http_code}", &node.url("/src")]),
                &["200"],
            )
        }));
        assert_eq!(std::fs::metadata(got).unwrap().len(), len as u64);
        let _ = std::fs::remove_file(got);
        samples[3].push(timed(&|| {
            ok_code(
                peer.curl(&["-o", "/dev/null", "-w", "%{http_code}", &node.url("/src")]),
                &["200"],
            )
        }));
        samples[4].push(timed(&|| {
            copy_ok(node.copy("/pulled", &[&format!("Source: {}", peer.url("/src"))]))
        }));
        assert_eq!(xattr(&node.file("pulled")).as_deref(), Some(sum.as_str()));
        let _ = std::fs::remove_file(node.file("pulled"));
        samples[5].push(timed(&|| {
            copy_ok(node.copy("/src", &[&format!("Destination: {}", peer.url("/pushed"))]))
        }));
        let _ = std::fs::remove_file(peer.file("pushed"));
    }
    let med: Vec<f64> = samples.iter().map(|s| median(s)).collect();
    let ratios = [
        ("put_checksum_over_put", med[1] / med[0]),
        ("tpc_pull_over_get", med[4] / med[2]),
        ("tpc_push_over_put", med[5] / med[0]),
    ];
    println!(
        "\nstorage-front, {mb} MiB files, {rounds} rounds, node to node over veth (median Mb/s)"
    );
    println!("{:<20} {:>10}   samples", "measure", "Mb/s");
    for (i, n) in names.iter().enumerate() {
        let s: Vec<String> = samples[i].iter().map(|v| format!("{v:.0}")).collect();
        println!("{n:<20} {:>10.0}   {}", med[i], s.join(" "));
    }
    for (n, r) in ratios {
        println!("{n:<24} {r:.3}  (goal >= 0.9)");
    }
    let head_s: Vec<String> = checksum_head_ms.iter().map(|v| format!("{v:.0}")).collect();
    println!(
        "HEAD after the checksummed PUT: median {:.0} ms ({})",
        median(&checksum_head_ms),
        head_s.join(" ")
    );
    let mut json = serde_json::json!({
        "file_mib": mb,
        "rounds": rounds,
        "setup": "two network namespaces joined by a veth pair (IPv6); nginx + storage-front in each; curl as the client",
        "get_definition": "get_mbps: curl stores the file on the peer's storage (like a client's download and a TPC pull, the baseline of tpc_pull_over_get); get_discard_mbps: the same GET to /dev/null",
        "put_checksum_definition": "PUT plus the HEAD with Want-Digest: adler32 that gfal-copy -K sends; the HEAD waits for the sidecar's adler32 of the new file",
    });
    for (i, n) in names.iter().enumerate() {
        json[n] = serde_json::json!(med[i]);
        json[format!("{n}_samples")] = serde_json::json!(samples[i]);
    }
    for (n, r) in ratios {
        json[n] = serde_json::json!(r);
    }
    json["checksum_head_ms"] = serde_json::json!(median(&checksum_head_ms));
    json["checksum_head_ms_samples"] = serde_json::json!(checksum_head_ms);
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("wrote {out}");
    drop((peer, node));
}
