//! SciTags on third-party copy, on the wire: two sites in two network
//! namespaces joined by a veth pair (IPv6), a real flowmark daemon on the
//! pushing node. A push with `SciTag: 206` (cms, Analysis Input) sends
//! data packets whose IPv6 flow label carries experiment 3 / activity 14,
//! as captured by tcpdump on the receiving side; a push with an invalid
//! SciTag is counted and its packets carry no label (the control). A pull
//! forwards the tag to the source as `SciTag`, and the source (nginx with
//! flowmark's Lua loaded through storage-front's snippet) marks its data.
mod common;

use std::process::Command;

use std::time::Duration;

use common::*;

const A6: &str = "2001:db8:14::1";
const B6: &str = "2001:db8:14::2";
/// flowmark's label layout (docs/flowmark.md): the bits that carry the tag.
const SEMANTIC_MASK: u32 = 0x3FEFC;
/// SciTag 206 = experiment 3, activity 14, zero entropy.
const LABEL_206: u32 = 0x30038;
const LEN: usize = 4 << 20;

fn flowmark_bin() -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
    let bin = format!("{target}/release/flowmark");
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} missing: cargo build --release -p flowmark"
    );
    bin
}

/// The (label, payload length) of the IPv6 TCP packets in tcpdump's `-v`
/// output whose line contains `pattern` (e.g. `> B.port:`).
fn labels(capture: &str, pattern: &str) -> Vec<(u32, u32)> {
    capture
        .lines()
        .filter(|l| l.contains(pattern))
        .filter_map(|l| {
            // tcpdump prints no flowlabel when it is 0.
            let label = match l.split("flowlabel 0x").nth(1) {
                Some(rest) => u32::from_str_radix(rest.split(',').next()?, 16).ok()?,
                None => 0,
            };
            let len = l.split("payload length: ").nth(1)?.split(')').next()?;
            Some((label, len.parse().ok()?))
        })
        .collect()
}

/// The labels of packets that carry data (more than TCP's header and
/// options), not pure ACKs.
fn data_labels(packets: &[(u32, u32)]) -> Vec<u32> {
    packets
        .iter()
        .filter(|(_, len)| *len > 64)
        .map(|(l, _)| *l)
        .collect()
}

#[test]
fn tpc_data_carries_the_scitag_flow_label_push_and_pull() {
    let id = std::process::id();
    let (ns_a, ns_b) = veth_pair("st", A6, B6);
    let (na, nb) = (ns_a.name.clone(), ns_b.name.clone());
    let dir = std::env::temp_dir().join(format!("sf-scitag-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("flowmark.sock");
    let fm_log = std::fs::File::create(dir.join("flowmark.log")).unwrap();
    let flowmark = Command::new("ip")
        .args([
            "netns",
            "exec",
            &na,
            &flowmark_bin(),
            "run",
            "--iface",
            "veth0",
        ])
        .args(["--pipe", "none", "--ongoing-interval", "0", "--api"])
        .arg(&sock)
        .stdout(fm_log.try_clone().unwrap())
        .stderr(fm_log)
        .spawn()
        .map(Proc)
        .unwrap();
    wait_for("flowmark's socket", Duration::from_secs(20), || {
        sock.exists().then_some(())
    });
    // The flow's peer (B) receives fireflies on UDP 10514: a real collector.
    let col_log = std::fs::File::create(dir.join("collector.log")).unwrap();
    let collector = Command::new("ip")
        .args(["netns", "exec", &nb, &flowmark_bin(), "collect"])
        .args(["--listen", "[::]:10514", "--metrics", "127.0.0.1:9814"])
        .stdout(col_log.try_clone().unwrap())
        .stderr(col_log)
        .spawn()
        .map(Proc)
        .unwrap();
    let extra = format!("flowmark_socket = \"{}\"\n", sock.display());
    let a = Site::start(
        "sta",
        SiteOptions {
            host: A6,
            netns: Some(&na),
            sidecar_extra: &extra,
            flowmark_lua: Some(sock.to_str().unwrap()),
            ..Default::default()
        },
    );
    let b = Site::start(
        "stb",
        SiteOptions {
            host: B6,
            netns: Some(&nb),
            ..Default::default()
        },
    );
    let data = content(LEN, 5);
    std::fs::write(a.file("f"), &data).unwrap();

    // Captures on B's side the packets matching `filter` while `run` runs.
    let capture = |name: &str, filter: &[&str], pattern: &str, run: &dyn Fn()| {
        let out = dir.join(format!("cap-{name}"));
        let tcpdump = Command::new("ip")
            .args([
                "netns", "exec", &nb, "tcpdump", "-i", "veth1", "-nn", "-v", "-l",
            ])
            .args(["-w", "-", "--immediate-mode"])
            .args(["ip6", "and", "tcp", "and"])
            .args(filter)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join("tcpdump.err")).unwrap())
            .spawn()
            .map(Proc)
            .unwrap();
        wait_for("tcpdump listening", Duration::from_secs(10), || {
            std::fs::read_to_string(dir.join("tcpdump.err"))
                .unwrap_or_default()
                .contains("listening on")
                .then_some(())
        });
        run();
        // No grace period: tcpdump writes what the kernel still holds for
        // it as it stops, and the drop waits for its exit (SIGTERM).
        drop(tcpdump);
        let text = Command::new("tcpdump")
            .args(["-nn", "-v", "-r"])
            .arg(&out)
            .output()
            .unwrap();
        labels(&String::from_utf8_lossy(&text.stdout), pattern)
    };
    let copy_ok = |site: &Site, path: &str, headers: &[&str]| {
        let (status, body) = site.copy(path, headers);
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            parse_markers(&body).unwrap().1,
            Ok("Created".into()),
            "{body}"
        );
    };
    let b_port = b.port.to_string();
    let to_b = format!("> {B6}.{}:", b.port);
    let push = |scitag: &str, target: &str| {
        let dst = format!("Destination: {}", b.url(&format!("/{target}")));
        capture(target, &["dst", "port", &b_port], &to_b, &|| {
            copy_ok(&a, "/f", &[&dst, scitag])
        })
    };

    let marked = push("SciTag: 206", "marked");
    let data_packets = data_labels(&marked);
    assert!(data_packets.len() > 20, "{marked:?}");
    for l in &data_packets {
        assert_eq!(
            l & SEMANTIC_MASK,
            LABEL_206,
            "label {l:#x} in {data_packets:x?}"
        );
    }
    // One entropy for the whole flow.
    assert!(data_packets.iter().all(|l| *l == data_packets[0]));
    assert_eq!(std::fs::read(b.file("marked")).unwrap(), data);
    assert_eq!(a.metric("storage_front_scitag_registered_total", &[]), 1.0);

    // The start and end fireflies reached the collector, which counts the
    // copy under cms / Analysis Input with at least the file's bytes, as a
    // third-party copy (`transfer="tpc"`: the flow's application is
    // storage-front).
    let collected_as = |name: &str, labels: &[&str]| -> f64 {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &nb,
                "curl",
                "-s",
                "http://127.0.0.1:9814/metrics",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|w| l.contains(w)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let cms = ["experiment=\"cms\"", "activity=\"Analysis Input\""];
    let collected = |name: &str| collected_as(name, &cms);
    wait_for("end firefly", Duration::from_secs(10), || {
        (collected("flowmark_collector_flows_ended_total") == 1.0).then_some(())
    });
    assert_eq!(collected("flowmark_collector_flows_started_total"), 1.0);
    assert!(collected("flowmark_collector_bytes_sent_total") >= LEN as f64);
    let cms_tpc = [cms[0], cms[1], "transfer=\"tpc\""];
    assert_eq!(
        collected_as("flowmark_collector_flows_ended_total", &cms_tpc),
        1.0
    );
    assert!(collected_as("flowmark_collector_bytes_sent_total", &cms_tpc) >= LEN as f64);

    // Control: an invalid SciTag is counted and nothing is marked.
    let unmarked = push("SciTag: 64", "unmarked");
    assert!(data_labels(&unmarked).len() > 20);
    assert!(unmarked.iter().all(|(l, _)| *l == 0), "{unmarked:x?}");
    assert_eq!(a.metric("storage_front_scitag_invalid_total", &[]), 1.0);
    assert_eq!(a.metric("storage_front_scitag_registered_total", &[]), 1.0);

    // Pull: the tag goes to the source as SciTag (TransferHeaderSciTag
    // becomes SciTag), and the source, an lbd node whose nginx runs
    // flowmark's Lua through storage-front's snippet, marks its data:
    // atlas (2) / Data Consolidation (4) = 0x10010.
    let a_port = a.port.to_string();
    let from_a = format!("{A6}.{} > {B6}.", a.port);
    let src = format!("Source: {}", a.url("/f"));
    let pulled = capture("pulled", &["src", "port", &a_port], &from_a, &|| {
        copy_ok(&b, "/pulled", &[&src, "TransferHeaderSciTag: 132"])
    });
    assert!(
        a.log("access.log")
            .contains("GET /f 200 auth=[-] scitag=[132]")
    );
    assert_eq!(std::fs::read(b.file("pulled")).unwrap(), data);
    let data_packets = data_labels(&pulled);
    assert!(data_packets.len() > 20, "{pulled:?}");
    // nginx registers after the request arrived: its data is all marked.
    for l in &data_packets {
        assert_eq!(l & SEMANTIC_MASK, 0x10010, "label {l:#x}");
    }
    // The source's flow was registered by its nginx (a GET, as for any
    // client): the collector at its peer counts it as plain, not TPC.
    let atlas = ["experiment=\"atlas\"", "activity=\"Data Consolidation\""];
    wait_for("the GET's end firefly", Duration::from_secs(10), || {
        (collected_as("flowmark_collector_flows_ended_total", &atlas) == 1.0).then_some(())
    });
    let plain = [atlas[0], atlas[1], "transfer=\"plain\""];
    assert_eq!(
        collected_as("flowmark_collector_flows_ended_total", &plain),
        1.0
    );
    assert!(collected_as("flowmark_collector_bytes_sent_total", &plain) >= LEN as f64);
    let tpc = [atlas[0], atlas[1], "transfer=\"tpc\""];
    assert_eq!(
        collected_as("flowmark_collector_flows_started_total", &tpc),
        0.0
    );

    drop((a, b, flowmark, collector));
    let _ = std::fs::remove_dir_all(&dir);
}
