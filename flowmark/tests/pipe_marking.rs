//! StoRM-WebDAV's flowd pipe lines drive marking and fireflies: a real
//! nginx serves a file over a veth pair, the tc egress program marks the
//! registered flow on real packets (read back with AF_PACKET in the peer
//! namespace), and the peer's collector counts start and end fireflies.
mod common;

use std::{io::Write, time::Duration};

use common::*;

const FILE_LEN: usize = 2 << 20;

fn write_pipe(path: &str, text: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open pipe");
    f.write_all(text).expect("write pipe");
}

fn status(lab: &Lab) -> serde_json::Value {
    api(&lab.dir.join("api.sock"), r#"{"op":"status"}"#)
}

fn active_flows(lab: &Lab) -> usize {
    status(lab)["flows"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(usize::MAX)
}

#[test]
fn pipe_lines_mark_real_packets_and_send_fireflies() {
    let mut lab = Lab::new("pipe");
    std::fs::create_dir_all(lab.dir.join("www")).unwrap();
    std::fs::write(lab.dir.join("www/file"), vec![b'x'; FILE_LEN]).unwrap();
    let conf = nginx_conf(&lab, "", "", "");
    // A qdisc that was there before us must still be there after us.
    sh(&[
        "ip",
        "-n",
        &lab.srv,
        "link",
        "set",
        "veth0",
        "txqueuelen",
        "1000",
    ]);
    sh(&[
        "tc", "-n", &lab.srv, "qdisc", "add", "dev", "veth0", "root", "pfifo", "limit", "1000",
    ]);

    let pipe = lab.path("flowd");
    let sock = lab.path("api.sock");
    start_node(&mut lab, &conf, &["--pipe", &pipe, "--api", &sock]);
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());

    let cap = Capture::start(&cli, "veth1");
    // Garbage first: the reader must survive it and go on.
    write_pipe(
        &pipe,
        b"hello world\n\xff\xfe\nstart tcp 2001:db8:7::1 8080 2001:db8:7::2 41009 999 1\n",
    );
    write_pipe(&pipe, &[b'z'; 5000]);
    write_pipe(
        &pipe,
        b"\nstart tcp 2001:db8:7::1 8080 2001:db8:7::2 41000 3 14\n",
    );
    wait_value("flow registered", Duration::from_secs(10), || {
        (active_flows(&lab) == 1).then_some(())
    });
    assert_eq!(
        curl(&lab, &format!("http://[{SRV6}]:8080/file"), 41000, &[]),
        FILE_LEN
    );
    // nginx's access_log writes activity before experiment: still matched.
    write_pipe(
        &pipe,
        b"end tcp 2001:db8:7::1 8080 2001:db8:7::2 41000 14 3\n",
    );
    // An unregistered IPv6 flow stays unmarked.
    assert_eq!(
        curl(&lab, &format!("http://[{SRV6}]:8080/file"), 41001, &[]),
        FILE_LEN
    );
    // An IPv4 flow: fireflies only.
    write_pipe(&pipe, b"start tcp 192.0.2.1 8080 192.0.2.2 41002 2 4\n");
    wait_value("v4 flow registered", Duration::from_secs(10), || {
        (active_flows(&lab) == 1).then_some(())
    });
    assert_eq!(
        curl(&lab, &format!("http://{SRV4}:8080/file"), 41002, &[]),
        FILE_LEN
    );
    write_pipe(&pipe, b"end tcp 192.0.2.1 8080 192.0.2.2 41002 2 4\n");
    wait_value("flows ended", Duration::from_secs(10), || {
        (active_flows(&lab) == 0).then_some(())
    });
    // Every packet of the marked connection (its FIN lingers marked) has
    // crossed the link before the capture stops.
    cap.wait(
        "the marked connection closed",
        Duration::from_secs(10),
        |p| tcp_closed(p, 8080, 41000),
    );
    let packets = cap.finish();

    let marked = flow_packets(&packets, 8080, 41000);
    assert!(
        marked.len() > 10,
        "too few packets of the marked flow: {}",
        marked.len()
    );
    assert_one_label(
        "registered flow",
        &marked,
        flowmark_common::encode_label(3, 14),
    );
    let unmarked = flow_packets(&packets, 8080, 41001);
    assert!(unmarked.len() > 10);
    assert_unmarked("unregistered flow", &unmarked);
    // The client's own packets are not ours to mark.
    let client: Vec<_> = packets.iter().filter(|p| p.dport == 8080).collect();
    assert_unmarked("client", &client);

    let st = status(&lab);
    let bad = &st["bad_input"];
    for kind in [
        "pipe_bad_verb",
        "pipe_not_utf8",
        "unknown_experiment",
        "pipe_line_too_long",
    ] {
        assert!(
            bad[kind].as_u64().unwrap_or(0) >= 1,
            "{kind} not counted: {st}"
        );
    }
    // Only this flow was in the flow map, and the capture lost nothing:
    // the program marked exactly the packets seen marked on the wire.
    assert_eq!(
        st["kernel"]["marked_flow"].as_u64(),
        Some(marked.len() as u64),
        "{st}"
    );
    // Control: the unregistered flow's packets went through the program
    // too, and were counted as unmarked, so a counter of every packet
    // would not match.
    assert!(
        st["kernel"]["unmarked_v6"].as_u64().unwrap_or(0) >= unmarked.len() as u64,
        "{st}"
    );

    let m = wait_value("end fireflies counted", Duration::from_secs(10), || {
        let m = metrics(&lab, &cli, 9814);
        (metric_sum(&m, "flowmark_collector_flows_ended_total", &[]) >= 2.0).then_some(m)
    });
    let cms = ["experiment=\"cms\"", "activity=\"Analysis Input\""];
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_started_total", &cms),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_ended_total", &cms),
        1.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "flowmark_collector_bytes_sent_total", &cms) >= FILE_LEN as f64,
        "{m}"
    );
    let atlas = ["experiment=\"atlas\"", "activity=\"Data Consolidation\""];
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_started_total", &atlas),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_ended_total", &atlas),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_rejected_total", &[]),
        0.0,
        "{m}"
    );

    // Stopping removes our filter and leaves the qdiscs as they were.
    lab.stop("flowmark");
    let filters = sh(&["tc", "-n", &srv, "filter", "show", "dev", "veth0", "egress"]);
    assert!(!filters.contains("flowmark"), "{filters}");
    let qdiscs = sh(&["tc", "-n", &srv, "qdisc", "show", "dev", "veth0"]);
    assert!(qdiscs.contains("qdisc pfifo"), "{qdiscs}");
}
