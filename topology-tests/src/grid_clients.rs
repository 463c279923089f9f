//! The grid_clients scenario: the clients WLCG sites see (gfal-copy,
//! davix, curl) talk to the lab's VIP over HTTPS by its name, trusting the
//! lab CA through a grid-layout CA directory, and a foreign site
//! (xrootd-server with its HTTP-TPC plugin) copies to and from the VIP by
//! HTTP third-party copy. Every file is compared byte for byte and by an
//! adler32 computed here; the wire at the router is watched for the
//! copies' IPv6 packets.
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::{RngCore, SeedableRng, rngs::SmallRng};

use crate::foreign_site::{self, ForeignSite};
use crate::outcome::Outcome;
use crate::process::{alive, stop_pid};
use crate::sidecars::{Flowmarks, Sidecar, StorageFronts, sum_metric};
use crate::site::Site;
use crate::topology::Topology;
use crate::wire::{self, Capture};

/// A client command that has not finished in this long has hung.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// SciTag the copies carry: experiment 3, activity 14 (flowmark's docs'
/// example; label 0x30038 with zero entropy).
pub const SCITAG: u32 = 206;
/// flowmark's label layout (docs/flowmark.md): the bits that carry the
/// tag (the rest is per-flow entropy).
const LABEL_SEMANTIC_MASK: u32 = 0x3FEFC;
/// [`SCITAG`] in those bits: experiment 3 / activity 14.
const SCITAG_LABEL: u32 = 0x30038;
const MB: usize = 1 << 20;

/// What one client command did.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit code and the tail of its output, for a check's detail.
    pub fn summary(&self) -> String {
        let tail = |s: &str| {
            let s = s.trim();
            let cut = s.len().saturating_sub(300);
            let cut = (cut..=s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            s[cut..].replace('\n', " | ")
        };
        format!(
            "exit {:?} in {} ms{}{}",
            self.code,
            self.elapsed.as_millis(),
            if self.stdout.trim().is_empty() {
                String::new()
            } else {
                format!("; out: {}", tail(&self.stdout))
            },
            if self.stderr.trim().is_empty() {
                String::new()
            } else {
                format!("; err: {}", tail(&self.stderr))
            }
        )
    }
}

/// The grid clients of one client namespace: the environment they need
/// and a bounded run of each (killed by pid when over `CLIENT_LIMIT`).
pub struct Clients {
    pub ns: String,
    pub ca_dir: PathBuf,
    pub ca_cert: PathBuf,
    /// The VIP's name (in the namespace's hosts file and the certificate).
    pub host: String,
    /// Local files of the clients.
    pub dir: PathBuf,
}

impl Clients {
    pub fn new(site: &Site) -> Result<Clients> {
        let dir = site.dir.join("grid-clients");
        fs::create_dir_all(&dir)?;
        Ok(Clients {
            ns: site.clients[0].clone(),
            ca_dir: site.pki.ca_dir.clone(),
            ca_cert: site.pki.ca_cert.clone(),
            host: site.pki.host_name.clone(),
            dir,
        })
    }

    /// `https://<VIP name><path>` (davix, curl) and its `davs://` form (gfal).
    pub fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.host)
    }

    pub fn davs(&self, path: &str) -> String {
        format!("davs://{}{path}", self.host)
    }

    /// Runs `argv` in the client namespace through `ip netns exec` (so the
    /// namespace's hosts file applies) with the grid environment.
    pub fn run(&self, argv: &[&str]) -> Result<Run> {
        run_in(&self.ns, argv, &self.env(), CLIENT_LIMIT)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("X509_CERT_DIR".into(), self.ca_dir.display().to_string()),
            // A pyenv python3 may come first in PATH; gfal's scripts need Debian's.
            ("GFAL_PYTHONBIN".into(), "/usr/bin/python3".into()),
            ("HOME".into(), self.dir.display().to_string()),
        ]
    }
}

/// Runs `argv` in namespace `ns` with `env`, killing it (by pid) after
/// `limit`: a client that hangs is a failure, never a hung test.
pub fn run_in(ns: &str, argv: &[&str], env: &[(String, String)], limit: Duration) -> Result<Run> {
    let t0 = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))?;
    let pid = child.id();
    let mut out_pipe = child.stdout.take().context("stdout")?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut code = None;
    let mut timed_out = false;
    loop {
        if let Some(st) = child.try_wait()? {
            code = st.code();
            break;
        }
        if t0.elapsed() > limit {
            timed_out = true;
            stop_pid(pid, Duration::from_secs(2));
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stdout = out_t.join().unwrap_or_default();
    let mut stderr = err_t.join().unwrap_or_default();
    if timed_out {
        stderr += &format!("\n(killed after {limit:?})");
    }
    Ok(Run {
        code,
        stdout,
        stderr,
        elapsed: t0.elapsed(),
    })
}

/// adler32 as storage systems write it: 8 lowercase hex digits.
pub fn adler32_hex(data: &[u8]) -> String {
    format!("{:08x}", adler2::adler32_slice(data))
}

/// A file of `size` pseudo-random bytes (seeded, so a rerun is the same).
fn random_file(path: &Path, size: usize, seed: u64) -> Result<Vec<u8>> {
    let mut data = vec![0u8; size];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut data);
    fs::write(path, &data).with_context(|| format!("writing {}", path.display()))?;
    Ok(data)
}

/// Whether the file at `path` holds exactly `want`, with a detail.
fn same_bytes(path: &Path, want: &[u8]) -> (bool, String) {
    match fs::read(path) {
        Ok(got) if got == want => (
            true,
            format!("{} bytes, adler32 {}", got.len(), adler32_hex(&got)),
        ),
        Ok(got) => (
            false,
            format!(
                "{} bytes adler32 {}, expected {} bytes adler32 {}",
                got.len(),
                adler32_hex(&got),
                want.len(),
                adler32_hex(want)
            ),
        ),
        Err(e) => (false, format!("{}: {e}", path.display())),
    }
}

/// `gfal-copy -f EXTRA file://LOCAL davs://VIP/REMOTE`, checked byte-exact
/// on the storage under `what`.
fn gfal_upload(
    (c, site, out): (&Clients, &Site, &mut Outcome),
    what: &str,
    extra: &[&str],
    (local, remote, data): (&Path, &str, &[u8]),
) -> Result<()> {
    let src = format!("file://{}", local.display());
    let dst = c.davs(remote);
    let mut argv = vec!["gfal-copy", "-f"];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[&src, &dst]);
    let r = c.run(&argv)?;
    let (same, detail) = same_bytes(&site.storage.join(remote.trim_start_matches('/')), data);
    out.check(
        what,
        r.ok() && same,
        format!("{}; on storage: {detail}", r.summary()),
    );
    Ok(())
}

/// The SciTag header every TPC gfal-copy sends, as a gfal2 option.
fn scitag_option() -> String {
    format!("HTTP PLUGIN:HEADERS=SciTag: {SCITAG}")
}

/// With a bearer token gfal2 asks for no delegation (`Credential: none`),
/// which xrootd (and StoRM) require; without one it asks for gridsite
/// delegation and xrootd answers 400. Neither lab site checks the token.
const BEARER_TOKEN: &str = "BEARER:TOKEN=lbd-lab";

/// `gfal-copy -f EXTRA --copy-mode MODE` with the SciTag and the token:
/// a third-party copy from `src` to `dst`.
fn gfal_tpc(c: &Clients, mode: &str, extra: &[&str], src: &str, dst: &str) -> Result<Run> {
    let scitag = scitag_option();
    let mut argv = vec!["gfal-copy", "-f"];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[
        "--copy-mode",
        mode,
        "-D",
        &scitag,
        "-D",
        BEARER_TOKEN,
        src,
        dst,
    ]);
    c.run(&argv)
}

/// A file of `size` random bytes at `path` on the foreign site, owned by
/// xrootd (which serves and receives as its own user).
fn foreign_source(foreign: &ForeignSite, path: &str, size: usize, seed: u64) -> Result<Vec<u8>> {
    let there = foreign.file(path);
    fs::create_dir_all(there.parent().context("a parent")?)?;
    let data = random_file(&there, size, seed)?;
    foreign.give_to_xrootd()?;
    Ok(data)
}

/// The adler32 the sidecar stored in the file's StoRM xattr, if any.
fn stored_adler32(path: &Path) -> Option<String> {
    xattr::get(path, storage_front::checksum::XATTR)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The `Digest: adler32=...` value of a HEAD asked with `Want-Digest`.
fn digest_adler32(headers: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("digest") {
            return None;
        }
        v.split(',').find_map(|d| {
            let (alg, val) = d.trim().split_once('=')?;
            alg.eq_ignore_ascii_case("adler32")
                .then(|| format!("{:0>8}", val.trim().to_ascii_lowercase()))
        })
    })
}

pub fn run(topo: &Topology, out: &mut Outcome, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    progress("foreign site: xrootd with HTTP-TPC behind the router");
    let mut foreign = ForeignSite::start(&site)?;
    progress("flowmark on every node, a firefly collector at the foreign site");
    let flowmarks = Flowmarks::start(&site, &foreign.ns)?;
    progress("storage-front sidecar on every node (nginx snippets + reload)");
    let fronts = StorageFronts::start(&site, &|id| flowmarks.socket(id))?;
    let c = Clients::new(&site)?;
    let hashed = site.pki.hashed_ca()?;
    out.check(
        "the lab CA is in the grid layout (<hash>.0)",
        hashed.is_some(),
        format!("{hashed:?}"),
    );

    // A step that cannot go on is a failed check; the others still run.
    if let Err(e) = https_basics(&c, &site, out) {
        out.check("https basics ran", false, format!("{e:#}"));
    }
    if let Err(e) = uploads_and_downloads(&c, &site, out, progress) {
        out.check("uploads and downloads ran", false, format!("{e:#}"));
    }
    if let Err(e) = checksums(&c, &site, out, progress) {
        out.check("checksums ran", false, format!("{e:#}"));
    }
    if let Err(e) = third_party_copies(&c, &site, &mut foreign, out, progress) {
        out.check("third-party copies ran", false, format!("{e:#}"));
    }
    if let Err(e) = our_copies(&c, &site, &fronts, &flowmarks, &foreign, out, progress) {
        out.check(
            "third-party copies by our node ran",
            false,
            format!("{e:#}"),
        );
    }

    if let Err(e) = drain_during_a_pull(&c, &mut site, &fronts, &foreign, out, progress) {
        out.check(
            "a pull with its node drained mid-copy ran",
            false,
            format!("{e:#}"),
        );
    }
    if let Err(e) = backend_fail_during_a_pull(&c, &mut site, &fronts, &foreign, out, progress) {
        out.check(
            "a pull with its node's nginx stopped mid-copy ran",
            false,
            format!("{e:#}"),
        );
    }
    if let Err(e) = pull_from_our_vip(&site, &flowmarks, &foreign, out, progress) {
        out.check(
            "a second site's pull from our VIP ran",
            false,
            format!("{e:#}"),
        );
    }

    progress("no client process left behind");
    foreign.stop();
    // The collector runs in the foreign namespace.
    let flowmark_pids = flowmarks.pids();
    drop(flowmarks);
    let mut left = Vec::new();
    for ns in site.clients.iter().chain([&foreign.ns]) {
        let pids = crate::process::run_checked("ip", &["netns", "pids", ns])?;
        left.extend(
            pids.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .filter(|&p| alive(p))
                .map(|p| {
                    let cmd = fs::read(format!("/proc/{p}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .unwrap_or_default();
                    format!("{ns}: pid {p} ({})", cmd.trim())
                }),
        );
    }
    out.check(
        "no process left in the client and foreign namespaces",
        left.is_empty(),
        left.join(", "),
    );
    drop(foreign);
    let mut gone: Vec<u32> = fronts.sidecars.iter().map(|s| s.pid()).collect();
    gone.extend(flowmark_pids);
    drop(fronts);
    let left: Vec<String> = gone
        .iter()
        .filter(|&&p| alive(p))
        .map(|p| p.to_string())
        .collect();
    out.check(
        "every node's storage-front sidecar and flowmark stopped by their pid",
        left.is_empty(),
        format!("still running: {left:?}"),
    );
    site.check_alive()
}

/// curl over HTTPS by name and by address (the certificate's SANs); the
/// control: without the lab CA the same request is refused.
fn https_basics(c: &Clients, site: &Site, out: &mut Outcome) -> Result<()> {
    let ca = c.ca_cert.display().to_string();
    let by_name = c.run(&["curl", "-sS", "--cacert", &ca, &c.https("/whoami")])?;
    out.check(
        "curl over https by the VIP's name",
        by_name.ok() && by_name.stdout.starts_with("node"),
        by_name.summary(),
    );
    let v6 = format!("https://[{}]/whoami", site.topo.vips.ipv6);
    let by_addr = c.run(&["curl", "-sS", "--cacert", &ca, &v6])?;
    out.check(
        "curl over https by the IPv6 VIP (address in the certificate)",
        by_addr.ok() && by_addr.stdout.starts_with("node"),
        by_addr.summary(),
    );
    let untrusted = c.run(&["curl", "-sS", &c.https("/whoami")])?;
    // 60: the peer's certificate could not be verified.
    out.check(
        "control: without the lab CA curl refuses the certificate",
        untrusted.code == Some(60),
        untrusted.summary(),
    );
    Ok(())
}

fn uploads_and_downloads(
    c: &Clients,
    site: &Site,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    progress("gfal-copy up and down through the VIP (davs://)");
    let up = c.dir.join("gfal-up.bin");
    let data = random_file(&up, 8 * MB + 123, 1)?;
    let remote = "/data/grid/gfal.bin";
    gfal_upload(
        (c, site, out),
        "gfal-copy uploads byte-exact (davs://)",
        &[],
        (&up, remote, &data),
    )?;
    let down = c.dir.join("gfal-down.bin");
    let r = c.run(&[
        "gfal-copy",
        "-f",
        &c.davs(remote),
        &format!("file://{}", down.display()),
    ])?;
    let (same, detail) = same_bytes(&down, &data);
    out.check(
        "gfal-copy downloads byte-exact (davs://)",
        r.ok() && same,
        format!("{}; {detail}", r.summary()),
    );

    progress("davix-put and davix-get through the VIP (https://)");
    let dput = c.dir.join("davix-up.bin");
    let data = random_file(&dput, 3 * MB + 7, 2)?;
    let capath = c.ca_dir.display().to_string();
    let remote = "/data/grid/davix.bin";
    let r = c.run(&[
        "davix-put",
        "--capath",
        &capath,
        &dput.display().to_string(),
        &c.https(remote),
    ])?;
    let (same, detail) = same_bytes(&site.storage.join("data/grid/davix.bin"), &data);
    out.check(
        "davix-put uploads byte-exact",
        r.ok() && same,
        format!("{}; on storage: {detail}", r.summary()),
    );
    let dget = c.dir.join("davix-down.bin");
    let r = c.run(&[
        "davix-get",
        "--capath",
        &capath,
        &c.https(remote),
        &dget.display().to_string(),
    ])?;
    let (same, detail) = same_bytes(&dget, &data);
    out.check(
        "davix-get downloads byte-exact",
        r.ok() && same,
        format!("{}; {detail}", r.summary()),
    );
    Ok(())
}

/// HTTP-TPC with the foreign site as the active party: it pulls a file
/// from our VIP, and pushes one to it; gfal-copy drives both with the
/// SciTag header. The copies' packets are watched at the router.
fn third_party_copies(
    c: &Clients,
    site: &Site,
    foreign: &mut ForeignSite,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    // Source on our side: uploaded through the VIP first.
    let src = c.dir.join("tpc-src.bin");
    let data = random_file(&src, 16 * MB + 5, 3)?;
    let ours = "/data/grid/tpc-out.bin";
    let r = c.run(&[
        "gfal-copy",
        "-f",
        &format!("file://{}", src.display()),
        &c.davs(ours),
    ])?;
    if !r.ok() {
        bail!("uploading the TPC source failed: {}", r.summary());
    }

    progress("TPC: the foreign site pulls from our VIP (gfal-copy --copy-mode pull)");
    let cap = Capture::start(
        &site.router.ns,
        foreign_site::ROUTER_DEV,
        "ip6 and tcp",
        site.dir.join("tpc-pull.pcap"),
    )?;
    let theirs = "/data/grid/from-lbd.bin";
    // The destination (xrootd) makes no parent directories by itself: -p.
    let r = gfal_tpc(c, "pull", &["-p"], &c.davs(ours), &foreign.url6(theirs))?;
    let packets = cap.finish()?;
    let (same, detail) = same_bytes(&foreign.file(theirs), &data);
    let digest = foreign_digest(c, foreign, theirs)?;
    let want = adler32_hex(&data);
    out.check(
        "TPC pull by the foreign site from our VIP: byte-exact, its adler32 matches",
        r.ok() && same && digest.as_deref() == Some(want.as_str()),
        format!(
            "{}; there: {detail}; its Digest adler32 {digest:?}, computed {want}",
            r.summary()
        ),
    );
    let from_vip: Vec<&wire::Packet> = packets
        .iter()
        .filter(|p| p.src == std::net::IpAddr::from(site.topo.vips.ipv6) && p.payload > 0)
        .collect();
    out.check(
        "the pull's data crossed the router over IPv6 from the VIP",
        from_vip.iter().map(|p| u64::from(p.payload)).sum::<u64>() >= data.len() as u64,
        format!(
            "{} data packets, {} bytes from the VIP of {} captured IPv6 packets",
            from_vip.len(),
            from_vip.iter().map(|p| u64::from(p.payload)).sum::<u64>(),
            packets.len()
        ),
    );

    // What the VIP's data packets carried: the kernel's own flow labels
    // (one per connection) here; a SciTag's label once our node is the
    // active party of a copy.
    let mut labels: Vec<String> = from_vip
        .iter()
        .map(|p| format!("{}:{:#07x}", p.dport, p.flow_label))
        .collect();
    labels.sort();
    labels.dedup();
    out.notes.push(format!(
        "flow labels of the pull's data packets from the VIP (port:label): {}",
        labels.join(", ")
    ));

    progress("TPC: the foreign site pushes to our VIP (gfal-copy --copy-mode push)");
    let theirs = "/data/grid-src/to-lbd.bin";
    let data = foreign_source(foreign, theirs, 12 * MB + 9, 4)?;
    let ours = "/data/grid/pushed.bin";
    let r = gfal_tpc(c, "push", &[], &foreign.url6(theirs), &c.davs(ours))?;
    let (same, detail) = same_bytes(&site.storage.join("data/grid/pushed.bin"), &data);
    out.check(
        "TPC push by the foreign site to our VIP: byte-exact",
        r.ok() && same,
        format!("{}; here: {detail}", r.summary()),
    );
    if !foreign.alive() {
        bail!("xrootd died during the copies");
    }
    Ok(())
}

/// gfal-copy uploads with `-K ADLER32` (it compares its own adler32 with
/// the Digest our VIP answers), and curl's HEAD with `Want-Digest: ADLER32`
/// sees the adler32 computed here.
fn checksums(
    c: &Clients,
    site: &Site,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    progress("checksums: gfal-copy -K ADLER32 upload, curl -I Want-Digest through the VIP");
    let up = c.dir.join("gfal-k.bin");
    let data = random_file(&up, 5 * MB + 77, 5)?;
    let remote = "/data/grid/gfal-k.bin";
    let want = adler32_hex(&data);
    gfal_upload(
        (c, site, out),
        "gfal-copy -K ADLER32 uploads through the VIP (checksums compared by gfal)",
        &["-K", "ADLER32"],
        (&up, remote, &data),
    )?;
    let ca = c.ca_cert.display().to_string();
    let h = c.run(&[
        "curl",
        "-sS",
        "-I",
        "--cacert",
        &ca,
        "-H",
        "Want-Digest: ADLER32",
        &c.https(remote),
    ])?;
    let got = digest_adler32(&h.stdout);
    out.check(
        "curl -I Want-Digest: ADLER32 through the VIP: Digest adler32 = computed here",
        h.ok() && got.as_deref() == Some(want.as_str()),
        format!("Digest adler32 {got:?}, computed {want}; {}", h.summary()),
    );
    let stored = stored_adler32(&site.storage.join("data/grid/gfal-k.bin"));
    out.check(
        "the adler32 is stored in the file's StoRM xattr",
        stored.as_deref() == Some(want.as_str()),
        format!(
            "{} = {stored:?}, computed {want}",
            storage_front::checksum::XATTR
        ),
    );
    Ok(())
}

/// HTTP-TPC with our node as the active party: our VIP pulls a file from
/// the foreign site and pushes one to it (gfal-copy and davix-cp, SciTag
/// header, checksums at both ends); the sidecars' counters prove the
/// copies were third-party copies run by them, not streamed by the client.
fn our_copies(
    c: &Clients,
    site: &Site,
    fronts: &StorageFronts,
    flowmarks: &Flowmarks,
    foreign: &ForeignSite,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let done = |dir: &str| {
        fronts.counter(
            storage_front::metrics::TRANSFERS,
            &[("direction", dir), ("result", "success")],
        )
    };
    // The foreign source: written there, owned by xrootd.
    let src = "/data/grid-src/for-lbd.bin";
    let data = foreign_source(foreign, src, 10 * MB + 3, 6)?;
    let want = adler32_hex(&data);

    progress("TPC: our VIP pulls from the foreign site (gfal-copy --copy-mode pull)");
    let before = done("pull")?;
    let mark = foreign.log().len();
    let ours = "/data/grid/pulled-by-lbd.bin";
    let r = gfal_tpc(
        c,
        "pull",
        &["-K", "ADLER32"],
        &foreign.url6(src),
        &c.davs(ours),
    )?;
    let after = done("pull")?;
    let (same, detail) = same_bytes(&site.storage.join("data/grid/pulled-by-lbd.bin"), &data);
    out.check(
        "gfal-copy TPC pull by our VIP from xrootd: byte-exact, adler32 checked",
        r.ok() && same,
        format!("{}; here: {detail}", r.summary()),
    );
    let stored = stored_adler32(&site.storage.join("data/grid/pulled-by-lbd.bin"));
    out.check(
        "the pulled file's adler32 is stored by the sidecar (xattr = computed here)",
        stored.as_deref() == Some(want.as_str()),
        format!("{stored:?}, computed {want}"),
    );
    out.check(
        "the pull was a third-party copy by a sidecar (its success counter +1)",
        after - before == 1.0,
        format!("pull successes {before} -> {after}"),
    );
    // The source must mark a pull's data, so the sidecar forwards the tag:
    // xrootd logged the sidecar's GET (its User-Agent) with `SciTag: 206`.
    let requests = foreign.requests_since(mark);
    let header = |block: &[String], name: &str| {
        block.iter().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let gets: Vec<&Vec<String>> = requests
        .iter()
        .filter(|b| b[0].starts_with("GET ") && b[0].contains(src))
        .filter(|b| header(b, "user-agent").is_some_and(|u| u.starts_with("storage-front/")))
        .collect();
    out.check(
        "the sidecar's GET to the source carried the COPY's SciTag (xrootd's log)",
        gets.len() == 1 && header(gets[0], "scitag") == Some(SCITAG.to_string()),
        format!(
            "{} GET(s) by storage-front logged by xrootd: {gets:?} (of {} requests)",
            gets.len(),
            requests.len()
        ),
    );

    progress("TPC: our VIP pushes to the foreign site (gfal-copy --copy-mode push)");
    let before = done("push")?;
    let theirs = "/data/grid/pushed-by-lbd.bin";
    let tpc_cms = [
        ("experiment", "cms"),
        ("activity", "Analysis Input"),
        ("transfer", "tpc"),
    ];
    let collected = |name: &str| -> Result<f64> {
        Ok(sum_metric(&flowmarks.collector_metrics()?, name, &tpc_cms))
    };
    let ended_before = collected("flowmark_collector_flows_ended_total")?;
    let sent_before = collected("flowmark_collector_bytes_sent_total")?;
    let cap = Capture::start(
        &site.router.ns,
        foreign_site::ROUTER_DEV,
        &format!("ip6 and tcp and dst port {}", foreign_site::HTTP_PORT),
        site.dir.join("tpc-push-ours.pcap"),
    )?;
    let r = gfal_tpc(
        c,
        "push",
        &["-K", "ADLER32"],
        &c.davs(ours),
        &foreign.url6(theirs),
    )?;
    let after = done("push")?;
    let packets = cap.finish()?;
    let (same, detail) = same_bytes(&foreign.file(theirs), &data);
    let digest = foreign_digest(c, foreign, theirs)?;
    out.check(
        "gfal-copy TPC push by our VIP to xrootd: byte-exact, xrootd's adler32 matches",
        r.ok() && same && digest.as_deref() == Some(want.as_str()),
        format!(
            "{}; there: {detail}; its Digest adler32 {digest:?}, computed {want}",
            r.summary()
        ),
    );
    out.check(
        "the push was a third-party copy by a sidecar (its success counter +1)",
        after - before == 1.0,
        format!("push successes {before} -> {after}"),
    );
    // Our node's data connection carries the SciTag's flow label on the
    // wire at the router: every packet with data to xrootd that is not
    // the client's own (gfal's HEADs for the checksum).
    let clients: Vec<std::net::IpAddr> = (1..=site.clients.len())
        .map(|c| crate::topology::addr::client6(c as u16).into())
        .collect();
    let data_packets: Vec<&wire::Packet> = packets
        .iter()
        .filter(|p| !clients.contains(&p.src) && p.payload > 0)
        .collect();
    let sources: std::collections::BTreeSet<String> = packets
        .iter()
        .filter(|p| p.payload > 0)
        .map(|p| format!("{}.{}", p.src, p.sport))
        .collect();
    let labels: std::collections::BTreeSet<u32> =
        data_packets.iter().map(|p| p.flow_label).collect();
    let bytes: u64 = data_packets.iter().map(|p| u64::from(p.payload)).sum();
    out.check(
        "every data packet of our push carries the SciTag's flow label at the router (one entropy)",
        bytes >= data.len() as u64 && one_scitag_label(&labels),
        format!(
            "{} data packets, {bytes} bytes from {sources:?} of {} captured; labels {labels:x?} (want {SCITAG_LABEL:#x} in {LABEL_SEMANTIC_MASK:#x})",
            data_packets.len(),
            packets.len()
        ),
    );
    // Its fireflies (start, end with the bytes) reached the collector at
    // the flow's peer, counted as a third-party copy of cms / Analysis Input.
    let (ended, sent) = collector_after("the push's end firefly", &collected, ended_before)?;
    out.check(
        "the collector counts the push as a TPC flow (cms / Analysis Input, transfer=tpc) with its bytes",
        ended - ended_before == 1.0 && sent - sent_before >= data.len() as f64,
        format!(
            "flows ended {ended_before} -> {ended}, bytes sent {sent_before} -> {sent}"
        ),
    );

    progress("TPC: davix-cp pull and push with our VIP as the active party");
    let capath = c.ca_dir.display().to_string();
    let header = format!("SciTag: {SCITAG}");
    let before = (done("pull")?, done("push")?);
    let ours2 = "/data/grid/davix-pulled.bin";
    let pull = c.run(&[
        "davix-cp",
        "--capath",
        &capath,
        "--copy-mode",
        "pull",
        "-H",
        &header,
        &foreign.url6(src),
        &c.https(ours2),
    ])?;
    let (same, detail) = same_bytes(&site.storage.join("data/grid/davix-pulled.bin"), &data);
    out.check(
        "davix-cp TPC pull by our VIP from xrootd: byte-exact",
        pull.ok() && same,
        format!("{}; here: {detail}", pull.summary()),
    );
    let after = (done("pull")?, done("push")?);
    out.check(
        "davix-cp's pull was run by a sidecar (pull counter +1)",
        after.0 - before.0 == 1.0,
        format!("pull {} -> {}", before.0, after.0),
    );
    let theirs2 = "/data/grid/davix-pushed.bin";
    let push = c.run(&[
        "davix-cp",
        "--capath",
        &capath,
        "--copy-mode",
        "push",
        "-H",
        &header,
        &c.https(ours2),
        &foreign.url6(theirs2),
    ])?;
    let (same, detail) = same_bytes(&foreign.file(theirs2), &data);
    let digest = foreign_digest(c, foreign, theirs2)?;
    out.check(
        "davix-cp TPC push by our VIP to xrootd: byte-exact, xrootd's adler32 matches",
        push.ok() && same && digest.as_deref() == Some(want.as_str()),
        format!(
            "{}; there: {detail}; its Digest adler32 {digest:?}, computed {want}",
            push.summary()
        ),
    );
    let after2 = done("push")?;
    out.check(
        "davix-cp's push was run by a sidecar (push counter +1)",
        after2 - after.1 == 1.0,
        format!("push {} -> {after2}", after.1),
    );
    Ok(())
}

/// A pull (COPY with `Source:` over HTTPS through the VIP) whose node is drained
/// while the copy runs: the established COPY connection stays on the
/// draining node, its markers keep coming, and it ends `success: Created`
/// with the file whole. The foreign site's link is slowed (tbf) so the
/// copy lasts a few marker intervals.
fn drain_during_a_pull(
    c: &Clients,
    site: &mut Site,
    fronts: &StorageFronts,
    foreign: &ForeignSite,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    progress("TPC: a pull through the VIP whose node is drained mid-copy");
    // Who resets what during the copy (the router sees every node's link).
    let rst_pcap = site.dir.join("drain-pull-rst.pcap");
    let rst = Capture::start(
        &site.router.ns,
        "any",
        // IPv6: next header TCP, no extension header, RST in the flags.
        "(tcp[tcpflags] & tcp-rst != 0) or (ip6 and ip6[6] == 6 and ip6[53] & 4 != 0)",
        rst_pcap.clone(),
    )?;
    // HTTPS: the VIPs steer 443 as well as 80, so the drained node keeps
    // its established TLS connection as second hop.
    // 40 Mbit/s: ~3.4 s, a few marker intervals.
    let pull = slow_pull(
        (c, fronts, foreign),
        ("/data/grid/drained-pull.bin", "40mbit"),
        |k| {
            let drained_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            site.lbd_cli(k, &["drain"])?;
            site.wait_member_state(k, "draining", Duration::from_secs(10))?;
            Ok(drained_at)
        },
    );
    let _ = rst.finish();
    let resets = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&rst_pcap)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace('\n', " | ")
        })
        .unwrap_or_default();
    let pull = pull?;
    let (k, drained_at) = pull
        .node
        .zip(pull.acted)
        .context("no sidecar ran the copy within 10 s")?;
    let copy = &pull.run;
    // Marker timestamps after the drain: the copy kept reporting.
    let stamps: Vec<u64> = copy
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Timestamp: ")?.trim().parse().ok())
        .collect();
    let after_drain = stamps.iter().filter(|&&t| t > drained_at).count();
    let (same, detail) = same_bytes(&site.storage.join("data/grid/drained-pull.bin"), &pull.data);
    let served_by = pull.served_by();
    let completed = copy.ok()
        && copy.stdout.contains("HTTP/1.1 202")
        && copy.stdout.trim_end().ends_with("success: Created")
        && after_drain >= 1
        && served_by == format!("node{k}")
        && same;
    out.check(
        "a pull whose node is drained mid-copy completes there (markers after the drain, success: Created, byte-exact)",
        completed,
        format!(
            "node {k} drained at {drained_at}; answered by {served_by}; {} markers, \
             {after_drain} after the drain; {}; here: {detail}; resets seen at the router: {resets}",
            stamps.len(),
            copy.summary()
        ),
    );
    drop(pull);
    site.lbd_cli(k, &["undrain"])?;
    let all: Vec<u16> = site.nodes.iter().map(|n| n.id).collect();
    site.wait_paths(&all, Duration::from_secs(15))
        .context("undrain")?;
    Ok(())
}

/// One flow label (one entropy) whose SciTag bits are [`SCITAG`]'s.
fn one_scitag_label(labels: &std::collections::BTreeSet<u32>) -> bool {
    labels.len() == 1
        && labels
            .iter()
            .all(|l| l & LABEL_SEMANTIC_MASK == SCITAG_LABEL)
}

/// Waits (up to 10 s) for the collector's ended flows to go up from
/// `ended_before`, then reads (flows ended, bytes sent) through `collected`.
fn collector_after(
    what: &str,
    collected: &dyn Fn(&str) -> Result<f64>,
    ended_before: f64,
) -> Result<(f64, f64)> {
    let mut ended = ended_before;
    let _ = crate::process::wait_until(what, Duration::from_secs(10), || {
        ended = collected("flowmark_collector_flows_ended_total").unwrap_or(ended_before);
        ended > ended_before
    });
    Ok((ended, collected("flowmark_collector_bytes_sent_total")?))
}

/// The foreign site's file the slowed pulls copy: 16 MB.
fn slow_source(foreign: &ForeignSite) -> Result<(String, Vec<u8>)> {
    let src = "/data/grid-src/slow.bin";
    let there = foreign.file(src);
    fs::create_dir_all(there.parent().context("a parent")?)?;
    let data = if fs::metadata(&there).is_ok_and(|m| m.len() == (16 * MB + 5) as u64) {
        fs::read(&there)?
    } else {
        random_file(&there, 16 * MB + 5, 7)?
    };
    foreign.give_to_xrootd()?;
    Ok((src.to_string(), data))
}

/// The foreign site's uplink slowed by tbf while this lives.
struct SlowLink {
    ns: String,
}

impl SlowLink {
    fn start(foreign: &ForeignSite, rate: &str) -> Result<SlowLink> {
        let link = SlowLink {
            ns: foreign.ns.clone(),
        };
        link.tc(&[
            "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "32kb", "latency",
            "500ms",
        ])?;
        Ok(link)
    }

    fn tc(&self, args: &[&str]) -> Result<String> {
        crate::process::run_checked(
            "ip",
            &[&["netns", "exec", &self.ns, "tc"][..], args].concat(),
        )
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        let _ = self.tc(&["qdisc", "del", "dev", "eth0", "root"]);
    }
}

/// What a slowed pull saw: the client's run, the node whose sidecar ran
/// it (None: no sidecar within 10 s), what was done to that node, the
/// source's bytes, and when the client started.
struct SlowPull<T> {
    run: Run,
    node: Option<u16>,
    acted: Option<T>,
    data: Vec<u8>,
    started: Instant,
    /// `tc -s qdisc` of the slowed link when the client ended.
    shaped: String,
    /// The link stays slow until this is dropped (the sidecar may still
    /// be copying after its client ended).
    _slow: SlowLink,
}

impl<T> SlowPull<T> {
    /// The node that answered the COPY (its `X-Node` header), or "?".
    fn served_by(&self) -> &str {
        self.run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("X-Node: "))
            .map_or("?", str::trim)
    }
}

/// A pull of the foreign site's 16 MB file over its link slowed to
/// `rate` (tbf), a COPY over HTTPS through the VIP by its name (as grid
/// clients talk to a site) to `path`; `act` runs on the node whose
/// sidecar runs the copy while it runs.
fn slow_pull<T>(
    (c, fronts, foreign): (&Clients, &StorageFronts, &ForeignSite),
    (path, rate): (&str, &str),
    act: impl FnOnce(u16) -> Result<T>,
) -> Result<SlowPull<T>> {
    let (src, data) = slow_source(foreign)?;
    let slow = SlowLink::start(foreign, rate)?;
    let ca = c.ca_cert.display().to_string();
    let source = format!("Source: {}", foreign.url6(&src));
    let scitag = format!("SciTag: {SCITAG}");
    let target = c.https(path);
    let started = Instant::now();
    let (run, node, acted) = std::thread::scope(|scope| -> Result<_> {
        let copy = scope.spawn(|| {
            c.run(&[
                "curl", "-sS", "-N", "--cacert", &ca, "-X", "COPY", "-H", &source, "-H", &scitag,
                "-D", "-", &target,
            ])
        });
        let node = copying_node(fronts);
        let acted = node.map(act).transpose();
        let run = copy
            .join()
            .map_err(|_| anyhow::anyhow!("the COPY thread panicked"))??;
        Ok((run, node, acted?))
    })?;
    let shaped = slow
        .tc(&["-s", "qdisc", "show", "dev", "eth0"])
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(SlowPull {
        run,
        node,
        acted,
        data,
        started,
        shaped,
        _slow: slow,
    })
}

/// The node whose sidecar runs a copy (waited for up to 10 s).
fn copying_node(fronts: &StorageFronts) -> Option<u16> {
    lab::wait::poll_every(
        "a sidecar running the copy",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            fronts
                .sidecars
                .iter()
                .find(|s| {
                    s.metrics().is_ok_and(|m| {
                        sum_metric(&m, storage_front::metrics::TRANSFERS_ACTIVE, &[]) >= 1.0
                    })
                })
                .map(|s| s.node)
        },
    )
    .ok()
}

/// A pull (COPY with `Source:` over HTTPS through the VIP) whose node's
/// nginx is stopped mid-copy, the way the backend_fail scenario stops it.
/// The COPY is proxied by that nginx to the node's sidecar, so the client
/// loses its marker stream: it must see the COPY end at once (connection
/// closed, never `success`, never a hang), and the sidecar must notice at
/// its next marker write, abort, and remove the partial file. nginx is
/// then started again and the node takes its place back.
fn backend_fail_during_a_pull(
    c: &Clients,
    site: &mut Site,
    fronts: &StorageFronts,
    foreign: &ForeignSite,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    progress("TPC: a pull through the VIP whose node's nginx is stopped mid-copy");
    let name = "failed-pull.bin";
    let dir = site.storage.join("data/grid");
    let partials = || -> Vec<String> {
        let prefix = format!(".{name}.storage-front.");
        fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    };
    let aborted = || {
        fronts.counter(
            storage_front::metrics::TRANSFERS,
            &[("direction", "pull"), ("result", "aborted")],
        )
    };
    let aborted_before = aborted()?;
    // 8 Mbit/s: the copy would last ~17 s, far longer than the sidecar
    // takes to notice (nginx closes with a FIN, so the first marker write
    // after it still succeeds and the second fails: ~2 marker intervals).
    let path = format!("/data/grid/{name}");
    let pull = slow_pull((c, fronts, foreign), (&path, "8mbit"), |k| {
        // The control: the partial file is there before the stop.
        let seen = lab::wait::poll_every(
            "the partial file",
            Duration::from_secs(5),
            Duration::from_millis(50),
            || {
                let p = partials();
                (!p.is_empty()).then_some(p)
            },
        )
        .unwrap_or_default();
        site.node(k).nginx.stop();
        Ok((Instant::now(), seen))
    })?;
    let (k, (at, seen)) = pull
        .node
        .zip(pull.acted.clone())
        .context("no sidecar ran the copy within 10 s")?;
    let copy = &pull.run;
    let ended_after = (pull.started + copy.elapsed).saturating_duration_since(at);
    let served_by = pull.served_by();
    let markers = copy.stdout.matches("Perf Marker").count();
    out.check(
        "a COPY whose node's nginx stops mid-pull ends for the client within 5 s (connection closed, no success)",
        copy.stdout.contains("HTTP/1.1 202")
            && served_by == format!("node{k}")
            && !copy.ok()
            && !copy.stdout.contains("success:")
            && ended_after < Duration::from_secs(5),
        format!(
            "nginx of node {k} stopped; answered by {served_by}; {markers} markers; \
             the client ended {} ms after the stop: {}; the slowed link: {}",
            ended_after.as_millis(),
            copy.summary(),
            pull.shaped
        ),
    );
    // The sidecar notices at its next marker write (1 s apart here).
    let mut left = partials();
    let mut count = aborted_before;
    let cleaned =
        crate::process::wait_until("the sidecar's abort", Duration::from_secs(10), || {
            left = partials();
            count = aborted().unwrap_or(count);
            left.is_empty() && count - aborted_before == 1.0
        })
        .is_ok();
    out.check(
        "its sidecar aborts the copy: the partial file removed, counted aborted, no file left",
        !seen.is_empty() && cleaned && !dir.join(name).exists(),
        format!(
            "partial file before the stop: {seen:?}; {} ms after the stop: left {left:?}, \
             aborted pulls {aborted_before} -> {count}, target exists: {}",
            at.elapsed().as_millis(),
            dir.join(name).exists()
        ),
    );
    drop(pull);
    let n = site.node(k);
    n.nginx.start(&n.ns)?;
    let all: Vec<u16> = site.nodes.iter().map(|n| n.id).collect();
    site.wait_paths(&all, Duration::from_secs(15))
        .context("nginx back after the stop")?;
    Ok(())
}

/// A pull whose source is our VIP, by a second site's storage front (the
/// same sidecar the nodes run, in the foreign namespace, so the data
/// crosses the router): the COPY's SciTag goes to the source as `SciTag`,
/// the node serving the GET (nginx with flowmark's Lua) registers that
/// connection with its flowmark, and every data packet leaving the VIP
/// carries the tag's flow label at the router. The collector counts the
/// GET as a plain (not third-party) cms / Analysis Input flow. Control:
/// the same pull without a SciTag leaves the labels to the kernel.
fn pull_from_our_vip(
    site: &Site,
    flowmarks: &Flowmarks,
    foreign: &ForeignSite,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    progress("TPC: a second site's storage front pulls from our VIP with a SciTag");
    let name = "data/grid/lbd-source.bin";
    let data = random_file(&site.storage.join(name), 8 * MB + 11, 8)?;
    let front_dir = site.dir.join("foreign-front");
    let root = front_dir.join("root");
    fs::create_dir_all(&root)?;
    let front = Sidecar::start(0, &foreign.ns, &front_dir, &root, &site.pki.ca_dir, None)?;
    crate::process::wait_until(
        "the second site's storage front",
        Duration::from_secs(20),
        || front.metrics().is_ok(),
    )?;
    let vip6 = std::net::IpAddr::from(site.topo.vips.ipv6);
    let source = format!("Source: http://[{vip6}]/{name}");
    let pull = |dest: &str, headers: &[&str]| -> Result<(Run, Vec<wire::Packet>)> {
        let cap = Capture::start(
            &site.router.ns,
            foreign_site::ROUTER_DEV,
            "ip6 and tcp and src port 80",
            site.dir.join(format!("{dest}.pcap")),
        )?;
        let url = format!("http://127.0.0.1:{}/{dest}", crate::sidecars::LISTEN_PORT);
        let mut argv = vec!["curl", "-sS", "-N", "-X", "COPY", "-H", &source];
        for h in headers {
            argv.extend(["-H", h]);
        }
        argv.push(&url);
        let r = run_in(&foreign.ns, &argv, &[], CLIENT_LIMIT)?;
        Ok((r, cap.finish()?))
    };
    let from_vip = |packets: &[wire::Packet]| -> (usize, u64, std::collections::BTreeSet<u32>) {
        let data: Vec<&wire::Packet> = packets
            .iter()
            .filter(|p| p.src == vip6 && p.payload > 0)
            .collect();
        (
            data.len(),
            data.iter().map(|p| u64::from(p.payload)).sum(),
            data.iter().map(|p| p.flow_label).collect(),
        )
    };
    let plain_cms = [
        ("experiment", "cms"),
        ("activity", "Analysis Input"),
        ("transfer", "plain"),
    ];
    let collected = |name: &str| -> Result<f64> {
        Ok(sum_metric(
            &flowmarks.collector_metrics()?,
            name,
            &plain_cms,
        ))
    };
    let ended_before = collected("flowmark_collector_flows_ended_total")?;
    let sent_before = collected("flowmark_collector_bytes_sent_total")?;
    let scitag = format!("SciTag: {SCITAG}");
    let (r, packets) = pull("from-lbd.bin", &[&scitag])?;
    let (same, detail) = same_bytes(&root.join("from-lbd.bin"), &data);
    let (n, bytes, labels) = from_vip(&packets);
    out.check(
        "a second site's pull from our VIP: byte-exact, and every data packet from the VIP carries the SciTag's flow label at the router",
        r.ok()
            && r.stdout.trim_end().ends_with("success: Created")
            && same
            && bytes >= data.len() as u64
            && one_scitag_label(&labels),
        format!(
            "{}; there: {detail}; {n} data packets, {bytes} bytes from {vip6}; labels \
             {labels:x?} (want {SCITAG_LABEL:#x} in {LABEL_SEMANTIC_MASK:#x})",
            r.summary()
        ),
    );
    let (ended, sent) = collector_after("the GET's end firefly", &collected, ended_before)?;
    out.check(
        "the collector counts the source's GET as a plain cms / Analysis Input flow with its bytes",
        ended - ended_before == 1.0 && sent - sent_before >= data.len() as f64,
        format!("flows ended {ended_before} -> {ended}, bytes sent {sent_before} -> {sent}"),
    );
    let (r, packets) = pull("from-lbd-untagged.bin", &[])?;
    let (n, _, labels) = from_vip(&packets);
    out.check(
        "control: the same pull without a SciTag is not marked (kernel labels)",
        r.ok()
            && n > 0
            && !labels
                .iter()
                .any(|l| l & LABEL_SEMANTIC_MASK == SCITAG_LABEL),
        format!("{}; {n} data packets, labels {labels:x?}", r.summary()),
    );
    drop(front);
    Ok(())
}

/// The demo's third-party copy: the foreign xrootd site, flowmark on every
/// node with a collector at the foreign site, the sidecars; then a push
/// `COPY` with `SciTag: 206` through the VIP (its marker stream shown),
/// checked at the destination by xrootd's own adler32, and the
/// collector's TPC counters before and after. Prints as it goes; true if
/// the copy succeeded and the counters went up.
pub fn demo_tpc(site: &Site, say: &mut dyn FnMut(&str)) -> Result<bool> {
    say("foreign site (xrootd + HTTP-TPC), flowmark on every node, collector, sidecars");
    let mut foreign = ForeignSite::start(site)?;
    let flowmarks = Flowmarks::start(site, &foreign.ns)?;
    let fronts = StorageFronts::start(site, &|id| flowmarks.socket(id))?;
    let c = Clients::new(site)?;
    let ours = "/data/demo/tpc.bin";
    let theirs = "/data/demo/tpc-from-lbd.bin";
    let here = site.storage.join(ours.trim_start_matches('/'));
    fs::create_dir_all(here.parent().context("a parent")?)?;
    let data = random_file(&here, 32 * MB, 8)?;
    fs::create_dir_all(foreign.file("/data/demo"))?;
    foreign.give_to_xrootd()?;
    let tpc_cms = [
        ("experiment", "cms"),
        ("activity", "Analysis Input"),
        ("transfer", "tpc"),
    ];
    let counters = || -> Result<(f64, f64)> {
        let m = flowmarks.collector_metrics()?;
        Ok((
            sum_metric(&m, "flowmark_collector_flows_ended_total", &tpc_cms),
            sum_metric(&m, "flowmark_collector_bytes_sent_total", &tpc_cms),
        ))
    };
    let before = counters()?;
    println!(
        "  collector before: cms / Analysis Input, transfer=tpc: {} flows, {:.0} MB sent",
        // + 0.0: a sum of no samples is -0.0.
        before.0 + 0.0,
        before.1 / 1e6 + 0.0
    );
    let url = c.https(ours);
    println!(
        "  curl -X COPY -H 'Destination: {}' -H 'SciTag: {SCITAG}' {url}",
        foreign.url6(theirs)
    );
    let ca = c.ca_cert.display().to_string();
    let destination = format!("Destination: {}", foreign.url6(theirs));
    let scitag = format!("SciTag: {SCITAG}");
    let r = c.run(&[
        "curl",
        "-sS",
        "-N",
        "--cacert",
        &ca,
        "-X",
        "COPY",
        "-H",
        &destination,
        "-H",
        &scitag,
        "-D",
        "-",
        &url,
    ])?;
    for l in r.stdout.lines().filter(|l| {
        l.starts_with("HTTP/")
            || l.starts_with("X-Node")
            || l.starts_with("Stripe Bytes")
            || l.starts_with("success")
            || l.starts_with("failure")
    }) {
        println!("    {}", l.trim_end());
    }
    let digest = foreign_digest(&c, &foreign, theirs)?;
    let want = adler32_hex(&data);
    let (same, detail) = same_bytes(&foreign.file(theirs), &data);
    println!(
        "  at xrootd: {detail}; its Digest adler32 {}, ours {want}",
        digest.as_deref().unwrap_or("none")
    );
    let mut after = before;
    let _ = crate::process::wait_until("the end firefly", Duration::from_secs(10), || {
        after = counters().unwrap_or(before);
        after.0 > before.0
    });
    println!(
        "  collector after:  cms / Analysis Input, transfer=tpc: {} flows, {:.0} MB sent",
        after.0,
        after.1 / 1e6
    );
    let ok = r.ok()
        && r.stdout.trim_end().ends_with("success: Created")
        && same
        && digest.as_deref() == Some(want.as_str())
        && after.0 > before.0
        && after.1 - before.1 >= data.len() as f64;
    foreign.stop();
    drop((fronts, flowmarks, foreign));
    Ok(ok)
}

/// The foreign site's own adler32 of `path` (HEAD with Want-Digest).
fn foreign_digest(c: &Clients, foreign: &ForeignSite, path: &str) -> Result<Option<String>> {
    let r = c.run(&[
        "curl",
        "-sS",
        "-I",
        "-H",
        "Want-Digest: adler32",
        &foreign.url6(path),
    ])?;
    Ok(digest_adler32(&r.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_header_is_found_case_insensitively_and_zero_padded() {
        let h = "HTTP/1.1 200 OK\r\nDIGEST: md5=abc, ADLER32=84B021F\r\n";
        assert_eq!(digest_adler32(h).as_deref(), Some("084b021f"));
        assert_eq!(digest_adler32("HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(adler32_hex(b"hello\n"), "084b021f");
    }
}
