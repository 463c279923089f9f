//! The lab's PKI: a CA made at lab start and one host certificate for the
//! VIP's name (and the VIP addresses), shared by every node, as a site
//! shares one certificate behind its load-balanced name. Clients trust
//! the CA through a directory in the grid layout
//! (`/etc/grid-security/certificates`: the CA under its subject hash,
//! `<hash>.0`), which gfal2, davix and xrootd read via `X509_CERT_DIR`, and
//! curl through `--cacert`.
//!
//! Made with the `openssl` tool rather than a crate: the hashed name is
//! OpenSSL's own subject hash (`openssl rehash`), so the tool is needed
//! anyway, and a lab CA needs nothing it cannot do.
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::process::run_checked;
use crate::topology::Topology;

/// Days the lab's certificates are valid (a lab lives minutes).
const VALID_DAYS: &str = "2";

pub struct LabPki {
    pub dir: PathBuf,
    /// The CA certificate (PEM), for `curl --cacert`.
    pub ca_cert: PathBuf,
    /// The grid-layout CA directory (`X509_CERT_DIR`).
    pub ca_dir: PathBuf,
    /// The VIP's certificate and key, shared by the nodes.
    pub host_cert: PathBuf,
    pub host_key: PathBuf,
    /// The name in the host certificate (and in the clients' hosts file).
    pub host_name: String,
}

/// The name clients use for a lab's VIPs (RFC 2606 `.example`).
pub fn vip_name(topo: &Topology) -> String {
    format!("storage.{}.example", topo.name)
}

impl LabPki {
    /// Makes the CA, the host certificate for `vip_name(topo)` and both
    /// VIP addresses, and the hashed CA directory under `dir`.
    pub fn create(dir: &Path, topo: &Topology) -> Result<LabPki> {
        let host_name = vip_name(topo);
        let ips = [IpAddr::from(topo.vips.ipv4), IpAddr::from(topo.vips.ipv6)];
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let p = |f: &str| dir.join(f).display().to_string();
        let pki = LabPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_dir: dir.join("certificates"),
            host_cert: dir.join("host.pem"),
            host_key: dir.join("host.key"),
            host_name,
        };
        let ca_subject = format!("/O=lbd lab/CN=lbd lab CA {}", topo.name);
        req_with_new_key(
            &p("ca.key"),
            &p("ca.pem"),
            &[
                "-x509",
                "-days",
                VALID_DAYS,
                "-subj",
                &ca_subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        pki.issue(
            "host",
            &pki.host_name.clone(),
            &[pki.host_name.as_str()],
            &ips,
        )?;
        fs::create_dir_all(&pki.ca_dir)?;
        fs::copy(&pki.ca_cert, pki.ca_dir.join("lbd-lab-ca.pem"))?;
        openssl(&["rehash", &pki.ca_dir.display().to_string()])?;
        if pki.hashed_ca()?.is_none() {
            bail!(
                "openssl rehash made no <hash>.0 in {}",
                pki.ca_dir.display()
            );
        }
        Ok(pki)
    }

    /// A certificate and key signed by the lab CA, `dir/<file>.pem` and
    /// `dir/<file>.key`, for server and client use, with `names` and `ips`
    /// as its SANs.
    pub fn issue(
        &self,
        file: &str,
        cn: &str,
        names: &[&str],
        ips: &[IpAddr],
    ) -> Result<(PathBuf, PathBuf)> {
        let p = |f: String| self.dir.join(f).display().to_string();
        let (key, csr, ext, pem) = (
            p(format!("{file}.key")),
            p(format!("{file}.csr")),
            p(format!("{file}.ext")),
            p(format!("{file}.pem")),
        );
        req_with_new_key(&key, &csr, &["-subj", &format!("/O=lbd lab/CN={cn}")])?;
        let san: Vec<String> = names
            .iter()
            .map(|n| format!("DNS:{n}"))
            .chain(ips.iter().map(|ip| format!("IP:{ip}")))
            .collect();
        fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
                san.join(",")
            ),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.ca_cert.display().to_string(),
            "-CAkey",
            &p("ca.key".into()),
            "-CAcreateserial",
            "-days",
            VALID_DAYS,
            "-extfile",
            &ext,
            "-out",
            &pem,
        ])?;
        Ok((PathBuf::from(pem), PathBuf::from(key)))
    }

    /// The `<hash>.0` entry of the CA directory.
    pub fn hashed_ca(&self) -> Result<Option<PathBuf>> {
        Ok(fs::read_dir(&self.ca_dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".0"))
                    .is_some_and(|h| h.len() == 8 && h.chars().all(|c| c.is_ascii_hexdigit()))
            }))
    }

    /// nginx's lines for HTTPS on both VIPs with the shared certificate
    /// (included in each node's server block).
    pub fn nginx_tls(&self, topo: &Topology) -> String {
        format!(
            "# HTTPS on the VIPs (written by the lab's PKI): one certificate for {name}, shared by the nodes.\n\
             listen {v4}:{HTTPS_PORT} ssl reuseport;\n\
             listen [{v6}]:{HTTPS_PORT} ssl reuseport;\n\
             ssl_certificate {cert};\n\
             ssl_certificate_key {key};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n",
            name = self.host_name,
            v4 = topo.vips.ipv4,
            v6 = topo.vips.ipv6,
            cert = self.host_cert.display(),
            key = self.host_key.display(),
        )
    }
}

pub const HTTPS_PORT: u16 = 443;

/// `openssl req` with a new P-256 key, unencrypted, written to `key`; the
/// request (or with `-x509` the certificate) to `out`; `args` added.
fn req_with_new_key(key: &str, out: &str, args: &[&str]) -> Result<()> {
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
    ];
    all.extend_from_slice(args);
    openssl(&all)
}

fn openssl(args: &[&str]) -> Result<()> {
    run_checked("openssl", args)
        .map(|_| ())
        .with_context(|| format!("openssl {}", args.first().copied().unwrap_or("")))
}

/// `/etc/netns/<ns>/hosts` and `resolv.conf` for namespace `ns`: `ip
/// netns exec` bind-mounts them over /etc's, so grid clients (which have
/// no `--resolve`) find the VIP's name. The machine's own hosts file is
/// kept (daemons look up their host name); no DNS server is named, so a
/// name the lab does not know fails at once instead of waiting for a
/// resolver the namespace cannot reach. Removed with the lab's
/// namespaces (`netns_etc_dirs`).
pub fn write_netns_hosts(ns: &str, name: &str, ips: &[IpAddr]) -> Result<()> {
    let dir = netns_etc(ns);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !hosts.ends_with('\n') && !hosts.is_empty() {
        hosts.push('\n');
    }
    hosts += "# the lab's VIP (lbd-lab)\n";
    for ip in ips {
        hosts += &format!("{ip} {name}\n");
    }
    fs::write(dir.join("hosts"), hosts).context("writing the namespace's hosts file")?;
    fs::write(
        dir.join("resolv.conf"),
        "# lbd-lab: no DNS inside the lab; names come from hosts\noptions timeout:1 attempts:1\n",
    )
    .context("writing the namespace's resolv.conf")
}

pub fn netns_etc(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// The `/etc/netns/<lab>-*` directories of lab `name` (leftovers if the
/// lab is gone).
pub fn netns_etc_dirs(name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}-");
    fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
