//! A second storage site for third-party copies: Debian's xrootd-server
//! with its HTTP protocol (libXrdHttp) and HTTP-TPC plugin
//! (libXrdHttpTPC), in its own namespace behind the site router, plain
//! http on IPv4 and IPv6 (xrootd 5.5.3 accepts http:// TPC URLs). It
//! computes adler32 itself (`xrootd.chksum`), so a copy that lands there
//! is checked by the foreign site's own `Digest`.
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab::Netns;

use crate::process::{run_checked, stop_pid, wait_until};
use crate::site::Site;

/// The foreign site's link: 192.0.2.224/28 and 2001:db8:f0f::/64, the
/// router at .225 / ::1 (outside every node's and client's range).
pub const ADDR4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 226);
pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 225);
pub const ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf0f, 0, 0, 0, 0, 2);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf0f, 0, 0, 0, 0, 1);
/// xrootd's HTTP port (its xroot protocol keeps 1094).
pub const HTTP_PORT: u16 = 8080;
/// The router's side of the link (where the wire is watched).
pub const ROUTER_DEV: &str = "r-xrd";
/// The Debian package's unprivileged user (xrootd refuses to serve as root).
const XROOTD_USER: &str = "xrootd";

pub struct ForeignSite {
    pub ns: String,
    pub dir: PathBuf,
    /// What xrootd serves as /data (its `oss.localroot` is `dir/root`).
    pub data: PathBuf,
    child: Option<Child>,
    _netns: Netns,
}

impl ForeignSite {
    /// Starts xrootd in namespace `<lab>-xrd` linked to the lab's router;
    /// returns once it answers HTTP from the router's namespace.
    pub fn start(site: &Site) -> Result<ForeignSite> {
        let name = &site.topo.name;
        let netns = Netns::named(&format!("{name}-xrd"))?;
        let ns = netns.name.clone();
        let rns = &site.router.ns;
        run_checked(
            "ip",
            &[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", ROUTER_DEV,
                "netns", rns,
            ],
        )?;
        for (n, dev) in [(ns.as_str(), "eth0"), (rns.as_str(), ROUTER_DEV)] {
            run_checked("ip", &["-n", n, "link", "set", dev, "up"])?;
        }
        for (n, dev, a) in [
            (ns.as_str(), "eth0", format!("{ADDR4}/28")),
            (ns.as_str(), "eth0", format!("{ADDR6}/64")),
            (rns.as_str(), ROUTER_DEV, format!("{ROUTER4}/28")),
            (rns.as_str(), ROUTER_DEV, format!("{ROUTER6}/64")),
        ] {
            let mut args = vec!["-n", n, "addr", "add", &a, "dev", dev];
            if a.contains(':') {
                args.push("nodad");
            }
            run_checked("ip", &args)?;
        }
        netns.ip(&format!("route add default via {ROUTER4}"))?;
        netns.ip(&format!("-6 route add default via {ROUTER6}"))?;

        let dir = site.dir.join("xrd");
        let root = dir.join("root");
        let data = root.join("data");
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        fs::create_dir_all(dir.join("admin"))?;
        // xrootd 5.5.3 loads its HTTP ext handlers (the TPC plugin) only
        // when TLS is configured: a certificate of its own from the lab CA,
        // readable by its user. Port 8080 still answers plain http.
        let (cert, key) = site.pki.issue(
            "foreign",
            "foreign site",
            &[],
            &[ADDR4.into(), ADDR6.into()],
        )?;
        for (from, to) in [(&cert, "xrd.pem"), (&key, "xrd.key")] {
            fs::copy(from, dir.join(to))?;
        }
        let cfg = dir.join("xrootd.cfg");
        fs::write(
            &cfg,
            format!(
                "# The lab's foreign site: xrootd with HTTP and HTTP-TPC, no security (a lab).\n\
                 all.export /data\n\
                 oss.localroot {root}\n\
                 all.adminpath {admin}\n\
                 all.pidpath {admin}\n\
                 xrd.port 1094\n\
                 xrd.protocol XrdHttp:{HTTP_PORT} libXrdHttp.so\n\
                 http.exthandler xrdtpc libXrdHttpTPC.so\n\
                 http.cadir {ca}\n\
                 xrd.tls {tls_cert} {tls_key}\n\
                 xrd.tlsca certdir {ca}\n\
                 xrootd.chksum adler32\n\
                 # Every request's header lines in the log (`got hdr line:`),\n\
                 # so a test can see what a copy's active party sent.\n\
                 http.trace debug\n",
                tls_cert = dir.join("xrd.pem").display(),
                tls_key = dir.join("xrd.key").display(),
                root = root.display(),
                admin = dir.join("admin").display(),
                ca = site.pki.ca_dir.display(),
            ),
        )?;
        run_checked(
            "chown",
            &[
                "-R",
                &format!("{XROOTD_USER}:{XROOTD_USER}"),
                &dir.display().to_string(),
            ],
        )?;
        let log = dir.join("xrootd.log");
        // `ip netns exec` (not nsenter) so xrootd reads the namespace's own
        // hosts file with the VIP's name.
        crate::pki::write_netns_hosts(
            &ns,
            &site.pki.host_name,
            &[site.topo.vips.ipv4.into(), site.topo.vips.ipv6.into()],
        )?;
        let out = fs::File::create(dir.join("xrootd.out"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "xrootd", "-c"])
            .arg(&cfg)
            .args(["-R", XROOTD_USER, "-l"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting xrootd")?;
        fs::write(dir.join("xrootd.pid"), child.id().to_string())?;
        let mut me = ForeignSite {
            ns,
            dir,
            data,
            child: Some(child),
            _netns: netns,
        };
        let url = format!("http://[{ADDR6}]:{HTTP_PORT}/data/");
        let rns = rns.clone();
        let ready = wait_until(
            "xrootd to answer HTTP from the router",
            Duration::from_secs(15),
            || {
                if me
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some())
                {
                    return true;
                }
                run_checked(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &rns,
                        "curl",
                        "-sf",
                        "-o",
                        "/dev/null",
                        "-X",
                        "PROPFIND",
                        "-H",
                        "Depth: 0",
                        &url,
                    ],
                )
                .is_ok()
            },
        );
        if let Some(c) = me.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            let text = fs::read_to_string(me.dir.join("xrootd.out")).unwrap_or_default();
            bail!("xrootd exited ({status}): {}", text.trim());
        }
        ready?;
        Ok(me)
    }

    /// Hands its data directory to the xrootd user (which serves and
    /// receives as itself), after files were written there as root.
    pub fn give_to_xrootd(&self) -> Result<()> {
        crate::process::run_checked(
            "chown",
            &["-R", "xrootd:xrootd", &self.data.display().to_string()],
        )?;
        Ok(())
    }

    /// An http URL of `path` (starting with /data/) at the foreign site,
    /// by its IPv6 address (so the copy's packets carry a flow label).
    pub fn url6(&self, path: &str) -> String {
        format!("http://[{ADDR6}]:{HTTP_PORT}{path}")
    }

    /// xrootd's log so far (its length is a mark for [`Self::requests_since`]).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("xrootd.log")).unwrap_or_default()
    }

    /// The header blocks of the requests xrootd logged after byte `mark`
    /// of its log (`http.trace debug`: one `got hdr line:` per line, the
    /// request line first), each as its lines without CRLF.
    pub fn requests_since(&self, mark: usize) -> Vec<Vec<String>> {
        let log = self.log();
        header_blocks(log.get(mark..).unwrap_or(""))
    }

    pub fn url4(&self, path: &str) -> String {
        format!("http://{ADDR4}:{HTTP_PORT}{path}")
    }

    /// Where `path` (/data/...) lands on the foreign site's disk.
    pub fn file(&self, path: &str) -> PathBuf {
        self.data.join(path.trim_start_matches("/data/"))
    }

    pub fn addrs() -> [IpAddr; 2] {
        [ADDR4.into(), ADDR6.into()]
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops xrootd (by its pid) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_pid(c.id(), Duration::from_secs(3));
            let _ = c.wait();
        }
    }
}

impl Drop for ForeignSite {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(crate::pki::netns_etc(&self.ns));
    }
}

/// Groups XrdHttp's `got hdr line:` trace lines into requests: a line
/// that looks like a request line (`METHOD /path HTTP/1.x`) starts one.
fn header_blocks(log: &str) -> Vec<Vec<String>> {
    const MARK: &str = "got hdr line: ";
    let mut blocks: Vec<Vec<String>> = vec![];
    for line in log.lines() {
        let Some(i) = line.find(MARK) else { continue };
        let text = line[i + MARK.len()..].trim_end().to_string();
        if text.is_empty() {
            continue;
        }
        let is_request_line = text.contains(" HTTP/1.")
            && text
                .split(' ')
                .next()
                .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()));
        match blocks.last_mut() {
            Some(b) if !is_request_line => b.push(text),
            _ if is_request_line => blocks.push(vec![text]),
            _ => {}
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_split_at_request_lines() {
        let log = "x XrdHttp: rc:40 got hdr line: GET /data/f HTTP/1.1\r\n\
                   x XrdHttp: rc:14 got hdr line: Scitag: 206\r\n\
                   x XrdHttp: rc:2 got hdr line: \r\n\
                   x other line\n\
                   x XrdHttp: rc:9 got hdr line: HEAD /data/g HTTP/1.1\r\n\
                   x XrdHttp: rc:9 got hdr line: Host: a\r\n";
        let b = header_blocks(log);
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0], ["GET /data/f HTTP/1.1", "Scitag: 206"]);
        assert_eq!(b[1], ["HEAD /data/g HTTP/1.1", "Host: a"]);
    }
}
