//! The wire at the router: tcpdump (AF_PACKET) on one of the router's
//! links, writing a pcap while a transfer runs, then read back with
//! `tcpdump -v` for each IPv6 TCP packet's flow label and 5-tuple. The
//! router sees exactly what left a node, so this is where a SciTag's flow
//! label is checked.
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{alive, signal_pid, stop_pid, wait_until};

/// One captured IPv6 TCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub flow_label: u32,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// TCP payload bytes (0 for a bare ACK).
    pub payload: u32,
}

pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
}

impl Capture {
    /// Starts tcpdump on `dev` in namespace `ns` with the BPF `filter`
    /// (immediate mode: without it packets wait in the ring and a stop
    /// can lose them),
    /// writing `file`; returns once tcpdump listens (it says so on stderr).
    pub fn start(ns: &str, dev: &str, filter: &str, file: PathBuf) -> Result<Capture> {
        let log = file.with_extension("log");
        let err = fs::File::create(&log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args([
                "tcpdump",
                "-i",
                dev,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "128",
                "-w",
            ])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("starting tcpdump")?;
        let pid = child.id();
        let c = Capture {
            child: Some(child),
            file,
        };
        wait_until("tcpdump to listen", Duration::from_secs(10), || {
            !alive(pid) || fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        })?;
        if !alive(pid) {
            bail!(
                "tcpdump ended: {}",
                fs::read_to_string(&log).unwrap_or_default().trim()
            );
        }
        Ok(c)
    }

    /// Stops the capture (SIGINT: tcpdump flushes and exits) and returns
    /// the IPv6 TCP packets it saw.
    pub fn finish(mut self) -> Result<Vec<Packet>> {
        if let Some(mut c) = self.child.take() {
            signal_pid(c.id(), libc::SIGINT);
            let pid = c.id();
            let _ = wait_until("tcpdump to exit", Duration::from_secs(5), || !alive(pid));
            stop_pid(pid, Duration::from_secs(1));
            let _ = c.wait();
        }
        let out = Command::new("tcpdump")
            .args(["-n", "-v", "-r"])
            .arg(&self.file)
            .output()
            .context("tcpdump -r")?;
        if !out.status.success() {
            bail!(
                "tcpdump -r {}: {}",
                self.file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(parse(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_pid(c.id(), Duration::from_secs(2));
            let _ = c.wait();
        }
    }
}

/// tcpdump's `-v` lines for IPv6 TCP packets, e.g.
/// `12:00:00.1 IP6 (flowlabel 0x30038, hlim 64, next-header TCP (6) payload length: 1240) 2001:db8:1::2.41000 > 2001:db8:f0f::2.8080: Flags [.], ..., length 1208`
pub fn parse(text: &str) -> Vec<Packet> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Packet> {
    let rest = line.split_once("IP6 (")?.1;
    let label = rest
        .split_once("flowlabel 0x")
        .map(|(_, l)| {
            l.split(|c: char| !c.is_ascii_hexdigit())
                .next()
                .unwrap_or("")
        })
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    // The header in parentheses holds "TCP (6)" itself: it ends after
    // "payload length: N)".
    let (header, after) = rest.split_once("payload length: ")?;
    if !header.contains("next-header TCP") {
        return None;
    }
    let (_, tuple) = after.split_once(") ")?;
    let (src, rest) = tuple.split_once(" > ")?;
    let (dst, rest) = rest.split_once(": ")?;
    let split = |s: &str| -> Option<(IpAddr, u16)> {
        let (a, p) = s.rsplit_once('.')?;
        Some((a.parse().ok()?, p.parse().ok()?))
    };
    let (src, sport) = split(src)?;
    let (dst, dport) = split(dst)?;
    // tcpdump names what it decodes after the length (`length 1208: HTTP`
    // on port 8080): only the digits count.
    let payload = rest
        .rsplit_once("length ")
        .and_then(|(_, n)| {
            let digits = n.trim_start();
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            digits[..end].parse().ok()
        })
        .unwrap_or(0);
    Some(Packet {
        flow_label: label,
        src,
        sport,
        dst,
        dport,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_lines_give_label_tuple_and_payload() {
        let text = "\
17:01:02.000001 IP6 (flowlabel 0x30038, hlim 63, next-header TCP (6) payload length: 1240) 2001:db8:1::2.41000 > 2001:db8:f0f::2.8080: Flags [.], cksum 0x1 (correct), seq 1:1209, ack 1, win 502, length 1208
17:01:02.000002 IP6 (hlim 64, next-header TCP (6) payload length: 32) 2001:db8:f0f::2.8080 > 2001:db8:1::2.41000: Flags [.], cksum 0x2 (correct), ack 1209, win 501, length 0
17:01:02.000003 IP6 (flowlabel 0x1, hlim 64, next-header UDP (17) payload length: 20) 2001:db8:1::2.5 > 2001:db8:f0f::2.6: UDP, length 12
17:01:02.000004 IP 192.0.2.18.1 > 192.0.2.226.2: Flags [S], length 0
17:01:02.000005 IP6 (flowlabel 0x30039, hlim 63, next-header TCP (6) payload length: 232) 2001:db8:1::2.41000 > 2001:db8:f0f::2.8080: Flags [P.], cksum 0x3 (correct), seq 1209:1409, ack 1, win 502, length 200: HTTP";
        let p = parse(text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].flow_label, 0x30038);
        assert_eq!(p[0].src, "2001:db8:1::2".parse::<IpAddr>().unwrap());
        assert_eq!((p[0].sport, p[0].dport, p[0].payload), (41000, 8080, 1208));
        assert_eq!((p[1].flow_label, p[1].payload), (0, 0));
        assert_eq!((p[2].flow_label, p[2].payload), (0x30039, 200));
    }
}
