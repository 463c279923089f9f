//! perfSONAR-style rules: every flow from a local port is marked by the
//! kernel program from its first packet, and sock_diag discovery sends its
//! start and end fireflies, without any registration.
mod common;

use std::time::Duration;

use common::*;

const FILE_LEN: usize = 1 << 20;

#[test]
fn port_rule_marks_from_first_packet_and_discovery_sends_fireflies() {
    let mut lab = Lab::new("disc");
    std::fs::create_dir_all(lab.dir.join("www")).unwrap();
    std::fs::write(lab.dir.join("www/file"), vec![b'z'; FILE_LEN]).unwrap();
    let conf = nginx_conf(&lab, "", "", "");
    start_node(
        &mut lab,
        &conf,
        &[
            "--pipe",
            "none",
            "--api",
            "none",
            "--port-rule",
            "8080=default:perfSONAR",
            "--discover-interval-ms",
            "100",
        ],
    );
    let cli = lab.cli.clone();
    let cap = Capture::start(&cli, "veth1");
    // Fetch the file, then hold the kept-alive connection for 1 s: long
    // enough for 100 ms polls to see it, and all data is acked by then.
    let script = format!(
        "import socket,time\n\
         s=socket.socket(socket.AF_INET6)\n\
         s.bind(('{CLI6}',43000))\n\
         s.connect(('{SRV6}',8080))\n\
         s.sendall(b'GET /file HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         n=0\n\
         while n<{FILE_LEN}:\n\
         \x20n+=len(s.recv(1<<20))\n\
         time.sleep(1)\n\
         s.close()\n"
    );
    let o = lab.exec(&cli, &["timeout", "20", "python3", "-c", &script]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = wait_for("discovered flow ended", Duration::from_secs(10), || {
        let m = metrics(&lab, &cli, 9814);
        (metric_sum(&m, "flowmark_collector_flows_ended_total", &[]) >= 1.0).then_some(m)
    });
    let packets = cap.finish();

    let flow: Vec<_> = packets
        .iter()
        .filter(|p| p.sport == 8080 && p.dport == 43000)
        .collect();
    assert!(flow.len() > 10);
    let want = flowmark_common::encode_label(1, 2);
    for p in &flow {
        // From the SYN-ACK on: the rule needs no registration.
        assert_eq!(
            p.label & flowmark_common::SEMANTIC_MASK,
            want,
            "label {:#07x}",
            p.label
        );
        assert_eq!(p.label, flow[0].label, "entropy changed within the flow");
    }
    let ps = ["experiment=\"default\"", "activity=\"perfSONAR\""];
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_started_total", &ps),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_ended_total", &ps),
        1.0,
        "{m}"
    );
    // The usage is the last tcp_info a poll saw: here, after the transfer.
    assert!(
        metric_sum(&m, "flowmark_collector_bytes_sent_total", &ps) >= FILE_LEN as f64,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_rejected_total", &[]),
        0.0,
        "{m}"
    );
}
