//! Loads the kernel programs, attaches them, pins everything under one
//! directory of bpffs, swaps VIP tables atomically and reads counters.
//!
//! Restart safety: maps and attachment links are pinned. A restarted daemon
//! calls [`Dataplane::open`] with the same directory: the maps are reused
//! with their contents, and attaching again atomically replaces the program
//! behind the pinned link (`bpf_link_update`), so forwarding never stops.
//! Only [`Dataplane::cleanup`] removes the pins, on purpose.
//!
//! Layout version: the maps are pinned in `PIN_DIR/layout-N`, N being
//! [`LAYOUT_VERSION`]. A build with another layout finds the other
//! directory (or, before versioning, maps at the top) and refuses to start
//! with [`LayoutMismatch`], which tells the operator to run `lbd cleanup`,
//! instead of reading the old maps with the wrong types.
//!
//! A pinned link whose interface was deleted and created again is detached
//! in the kernel: it is detected, unpinned and the program attached afresh.
use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, TracePoint, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use dataplane_common::{
    BUCKETS_LEN, Bucket, Config, FAMILY_V4, FAMILY_V6, LAYOUT_VERSION, LISTEN_GEN,
    LISTEN_GEN_ARMED, ListenerState, MAX_NODES, MAX_TABLE_SIZE, MAX_VIPS, MemberInfo, NodeInfo,
    SLOTS_PER_VIP, VipInfo, VipKey, VipKey4, counter,
};

use crate::{listen_watch, pinned_link};
use tracing::{info, warn};

/// The compiled kernel programs (built by build.rs with aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dataplane"));

/// Default pin directory of a node's dataplane.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lbd";

/// Size of one element slot in a BPF array (values are 8-byte aligned).
const ARRAY_SLOT: usize = 8;

/// Prefix of every pinned map's name.
const MAP_PREFIX: &str = "LBD_";
/// Pin of the listener watch's tracepoint link (`link_` like the others,
/// so `cleanup` removes it with them).
pub const LISTEN_WATCH_LINK: &str = "link_tp_listen_close";
/// Prefix of the per-layout map directory under the pin directory.
const LAYOUT_DIR_PREFIX: &str = "layout-";

/// The maps of `pin_dir` were pinned by a build with another layout.
#[derive(Debug, thiserror::Error)]
#[error(
    "{dir} holds dataplane maps pinned with layout {found}, but this lbd uses layout {wanted}: \
     run `lbd cleanup` (it detaches the dataplane and removes its pins; this node stops \
     forwarding until lbd starts again), then start lbd"
)]
pub struct LayoutMismatch {
    pub dir: PathBuf,
    /// The layout found ("unversioned" for maps pinned before versioning).
    pub found: String,
    pub wanted: u32,
}

/// A VIP as the dataplane sees it: one address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    pub addr: IpAddr,
    pub port: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
}

impl Vip {
    pub fn key(&self) -> VipKey {
        let (addr, family) = addr_bytes(self.addr);
        VipKey {
            addr,
            port_be: self.port.to_be(),
            proto: self.proto,
            family,
        }
    }
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            6 => "tcp",
            17 => "udp",
            _ => "?",
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{proto}", self.port),
        }
    }
}

/// IPv4 in the first four bytes, the rest zero.
pub fn addr_bytes(addr: IpAddr) -> ([u8; 16], u8) {
    let mut b = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (b, FAMILY_V4)
        }
        IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

/// Sum over CPUs of each counter, by name.
pub type Counters = BTreeMap<&'static str, u64>;

pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// Why the listener cache cannot be armed (the tracepoint's record
    /// layout could not be read at load time), if so.
    listen_watch_unusable: Option<String>,
}

impl Dataplane {
    /// Loads the programs with their maps pinned in `pin_dir`; maps already
    /// pinned there are reused as they are (daemon restart).
    /// Fails with [`LayoutMismatch`] if the maps pinned there have another
    /// layout than this build's.
    pub fn open(pin_dir: impl AsRef<Path>) -> Result<Self> {
        let pin_dir = pin_dir.as_ref().to_path_buf();
        ensure_bpffs(&pin_dir)?;
        check_layout(&pin_dir)?;
        let map_dir = layout_dir(&pin_dir);
        fs::create_dir_all(&map_dir)
            .with_context(|| format!("creating pin directory {}", map_dir.display()))?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&map_dir)
            .load(EBPF_OBJECT)
            .context("loading the XDP/tc programs into the kernel")?;
        // The listener watch reads its tracepoint's record at fixed
        // offsets: where this kernel puts the fields elsewhere it is never
        // attached (no listener cache).
        let listen_watch_unusable = listen_watch::check_record().err().map(|e| e.to_string());
        Ok(Self {
            ebpf,
            pin_dir,
            listen_watch_unusable,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn xdp(&mut self, name: &str) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("verifying program {name}"))?;
        }
        Ok(prog)
    }

    /// The loaded forwarder program (for BPF_PROG_TEST_RUN).
    pub fn forwarder(&mut self) -> Result<&mut Xdp> {
        self.xdp("lbd_xdp")
    }

    /// A trivial program by name (`lbd_pass`, `lbd_tx`).
    pub fn trivial(&mut self, name: &str) -> Result<&mut Xdp> {
        self.xdp(name)
    }

    /// Attaches the forwarder to `iface` in native mode and pins the link.
    /// If a pinned link exists (restart), the program behind it is replaced
    /// atomically instead. Falls back to generic mode with a loud warning.
    /// The listener watch goes first ([`Dataplane::watch_listeners`]);
    /// without it the forwarder works as well, looking up a listener on
    /// every SYN.
    pub fn attach_xdp(&mut self, iface: &str) -> Result<()> {
        if let Err(e) = self.watch_listeners() {
            warn!(
                error = %format!("{e:#}"),
                "listener watch not attached: every SYN at the first hop looks its listener up (slower, still correct)"
            );
        }
        self.attach_xdp_program("lbd_xdp", iface)
    }

    /// Attaches `lbd_listen_close` to the `sock/inet_sock_set_state`
    /// tracepoint, pins its link, then arms the listener cache: from then
    /// on the forwarder keeps a SYN without a lookup while no listening
    /// socket of the host has closed since a lookup found its listener.
    /// A pinned link of a previous run is replaced (the new one is attached
    /// before the old one goes, so no close is missed). On failure the
    /// cache is disarmed unless a previous run's link is still pinned.
    pub fn watch_listeners(&mut self) -> Result<()> {
        let link_pin = self.pin_dir.join(LISTEN_WATCH_LINK);
        let attached = self.attach_listen_watch(&link_pin);
        if attached.is_err() && !link_pin.exists() {
            self.set_listen_gen(LISTEN_GEN_ARMED, 0)?;
        }
        attached
    }

    fn attach_listen_watch(&mut self, link_pin: &Path) -> Result<()> {
        if let Some(why) = &self.listen_watch_unusable {
            bail!("the tracepoint's record: {why}");
        }
        let (generation, armed) = self.listen_generation()?;
        if !armed {
            // Not watched until now: whatever a previous run cached may
            // have outlived its listener. Nothing else writes the
            // generation while no watch is attached.
            self.set_listen_gen(LISTEN_GEN, generation.wrapping_add(1))?;
        }
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut(listen_watch::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", listen_watch::PROGRAM))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("verifying {}", listen_watch::PROGRAM))?;
        }
        let id = prog
            .attach(listen_watch::CATEGORY, listen_watch::EVENT)
            .with_context(|| {
                format!(
                    "attaching to the {}/{} tracepoint",
                    listen_watch::CATEGORY,
                    listen_watch::EVENT
                )
            })?;
        let link: FdLink = prog
            .take_link(id)?
            .try_into()
            .context("tracepoint link is not a bpf_link")?;
        // Pinned beside the old link, then renamed over it: the old link
        // is released only once the new one runs.
        // (bpffs refuses names with a dot.)
        let fresh = link_pin.with_file_name(format!("{LISTEN_WATCH_LINK}_new"));
        let _ = fs::remove_file(&fresh);
        drop(
            link.pin(&fresh)
                .with_context(|| format!("pinning {}", fresh.display()))?,
        );
        fs::rename(&fresh, link_pin)
            .with_context(|| format!("renaming {} to {}", fresh.display(), link_pin.display()))?;
        self.set_listen_gen(LISTEN_GEN_ARMED, 1)?;
        info!("listener watch attached: SYNs skip the listener lookup while no listener closes");
        Ok(())
    }

    /// Disarms the listener cache, then detaches the listener watch (every
    /// SYN at the first hop looks its listener up again). For measuring
    /// what the watch costs; `attach_xdp` or `watch_listeners` restore it.
    pub fn unwatch_listeners(&mut self) -> Result<()> {
        self.set_listen_gen(LISTEN_GEN_ARMED, 0)?;
        let link_pin = self.pin_dir.join(LISTEN_WATCH_LINK);
        match fs::remove_file(&link_pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("unpinning {}", link_pin.display()))
            }
            _ => Ok(()),
        }
    }

    /// Runs of the listener watch's program and their total time, counted
    /// by the kernel while BPF run-time statistics are enabled
    /// (`aya::sys::enable_stats`); zeros before it is loaded.
    pub fn listen_watch_runs(&self) -> Result<(u64, std::time::Duration)> {
        let Some(prog) = self.ebpf.program(listen_watch::PROGRAM) else {
            bail!("program {} missing", listen_watch::PROGRAM);
        };
        let prog: &TracePoint = prog.try_into()?;
        if prog.fd().is_err() {
            return Ok((0, std::time::Duration::ZERO));
        }
        let info = prog.info()?;
        Ok((info.run_count(), info.run_time()))
    }

    /// The listening-socket generation (closes seen by the watch) and
    /// whether the forwarder trusts its listener cache.
    pub fn listen_generation(&self) -> Result<(u64, bool)> {
        let map: Array<&MapData, u64> = Array::try_from(self.map_ref("LBD_LISTEN_GEN")?)?;
        Ok((
            map.get(&LISTEN_GEN, 0).context("reading LBD_LISTEN_GEN")?,
            map.get(&LISTEN_GEN_ARMED, 0)
                .context("reading LBD_LISTEN_GEN")?
                != 0,
        ))
    }

    fn set_listen_gen(&mut self, index: u32, value: u64) -> Result<()> {
        let mut map: Array<&mut MapData, u64> = Array::try_from(self.map("LBD_LISTEN_GEN")?)?;
        map.set(index, &value, 0)
            .context("writing LBD_LISTEN_GEN")?;
        Ok(())
    }

    /// Attaches one of the object's XDP programs (e.g. `lbd_pass` on the peer
    /// end of a veth in labs), pinned like the forwarder.
    pub fn attach_xdp_program(&mut self, program: &str, iface: &str) -> Result<()> {
        let link_pin = self.pin_dir.join(format!("link_xdp_{iface}"));
        drop_detached_link(&link_pin, iface)?;
        let prog = self.xdp(program)?;
        if link_pin.exists() {
            let pinned = PinnedLink::from_pin(&link_pin)
                .with_context(|| format!("opening pinned link {}", link_pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(pinned))?;
            let id = prog
                .attach_to_link(link)
                .with_context(|| format!("replacing the XDP program on {iface}"))?;
            // The pin keeps the link alive: dropping our handle only closes
            // its fd (taking it out of the program stops aya detaching it).
            drop(prog.take_link(id)?);
            info!(
                iface,
                program, "XDP program replaced atomically on the pinned link"
            );
            return Ok(());
        }
        let name = ifname(iface)?;
        let id = match prog.attach(name.as_c_str(), XdpMode::Driver) {
            Ok(id) => id,
            Err(native) => {
                warn!(
                    iface, error = %native,
                    "native XDP refused; falling back to GENERIC mode: forwarding will be much slower"
                );
                prog.attach(name.as_c_str(), XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {iface} (native: {native})"))?
            }
        };
        let link: FdLink = prog
            .take_link(id)?
            .try_into()
            .context("XDP link is not a bpf_link")?;
        let pinned = link
            .pin(&link_pin)
            .with_context(|| format!("pinning {}", link_pin.display()))?;
        drop(pinned);
        info!(iface, program, "XDP program attached");
        Ok(())
    }

    /// Attaches the MSS clamp on `iface` egress (TCX: no qdisc is created or
    /// replaced) and pins the link.
    pub fn attach_mss_clamp(&mut self, iface: &str) -> Result<()> {
        let link_pin = self.pin_dir.join(format!("link_tc_{iface}"));
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut("lbd_mss_clamp")
            .ok_or_else(|| anyhow!("program lbd_mss_clamp missing"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load().context("verifying lbd_mss_clamp")?;
        }
        drop_detached_link(&link_pin, iface)?;
        if link_pin.exists() {
            let pinned = PinnedLink::from_pin(&link_pin)?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
            let id = prog.attach_to_link(link)?;
            drop(prog.take_link(id)?);
            return Ok(());
        }
        let id = prog
            .attach(ifname(iface)?.as_c_str(), TcAttachType::Egress)
            .with_context(|| format!("attaching the MSS clamp to {iface} egress"))?;
        let link: FdLink = prog
            .take_link(id)?
            .try_into()
            .context("tc link is not a bpf_link")?;
        drop(link.pin(&link_pin)?);
        Ok(())
    }

    pub fn set_config(&mut self, cfg: &Config) -> Result<()> {
        let mut map: Array<&mut MapData, Config> = Array::try_from(self.map("LBD_CONFIG")?)?;
        map.set(0, cfg, 0).context("writing LBD_CONFIG")?;
        Ok(())
    }

    pub fn config(&self) -> Result<Config> {
        let map: Array<&MapData, Config> = Array::try_from(self.map_ref("LBD_CONFIG")?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Sets (or with `None` clears) the underlay address of node `id`, and
    /// keeps the member maps in step: tunnel packets are decapsulated only
    /// from the addresses of the node list.
    pub fn set_node(&mut self, id: u16, underlay: Option<IpAddr>) -> Result<()> {
        if id == 0 || u32::from(id) >= MAX_NODES {
            bail!("node id {id} out of range 1..{MAX_NODES}");
        }
        if let Some(a) = underlay
            && (a.is_unspecified() || a.is_multicast())
        {
            bail!("node {id}: {a} cannot be an underlay address");
        }
        let old = self.node(id)?;
        let info = match underlay {
            Some(a) => {
                let (addr, family) = addr_bytes(a);
                NodeInfo {
                    addr,
                    family,
                    _pad: [0; 3],
                }
            }
            None => NodeInfo::default(),
        };
        // Trust the new address before the node list names it, and stop
        // trusting the old one only after: a member is never refused
        // while its address is the one in use.
        if let Some(a) = underlay {
            self.set_member(a, id)?;
        }
        let mut map: Array<&mut MapData, NodeInfo> = Array::try_from(self.map("LBD_NODES")?)?;
        map.set(u32::from(id), &info, 0)
            .with_context(|| format!("writing node {id}"))?;
        if let Some(prev) = old
            && Some(prev) != underlay
        {
            self.forget_member(prev, id)?;
        }
        Ok(())
    }

    /// Replaces the whole node list (and so the member maps) with `nodes`:
    /// ids and addresses not in it are removed, also those a previous run
    /// left in the pinned maps.
    pub fn set_nodes(&mut self, nodes: &[(u16, IpAddr)]) -> Result<()> {
        for &(id, addr) in nodes {
            self.set_node(id, Some(addr))?;
        }
        for id in 1..MAX_NODES as u16 {
            if !nodes.iter().any(|&(n, _)| n == id) && self.node(id)?.is_some() {
                self.set_node(id, None)?;
            }
        }
        for (addr, id) in self.members()? {
            if !nodes.contains(&(id, addr)) {
                self.forget_member(addr, id)?;
            }
        }
        Ok(())
    }

    /// The underlay address of node `id`, if set.
    pub fn node(&self, id: u16) -> Result<Option<IpAddr>> {
        let map: Array<&MapData, NodeInfo> = Array::try_from(self.map_ref("LBD_NODES")?)?;
        let n = map
            .get(&u32::from(id), 0)
            .with_context(|| format!("reading node {id}"))?;
        Ok(match n.family {
            FAMILY_V4 => Some(IpAddr::from([n.addr[0], n.addr[1], n.addr[2], n.addr[3]])),
            FAMILY_V6 => Some(IpAddr::from(n.addr)),
            _ => None,
        })
    }

    /// The member maps: every trusted tunnel source and its node id.
    pub fn members(&self) -> Result<Vec<(IpAddr, u16)>> {
        let v4: HashMap<&MapData, [u8; 4], MemberInfo> =
            HashMap::try_from(self.map_ref("LBD_MEMBERS4")?)?;
        let v6: HashMap<&MapData, [u8; 16], MemberInfo> =
            HashMap::try_from(self.map_ref("LBD_MEMBERS6")?)?;
        let mut out = Vec::new();
        for r in v4.iter() {
            let (a, m) = r.context("reading LBD_MEMBERS4")?;
            out.push((IpAddr::from(a), m.id));
        }
        for r in v6.iter() {
            let (a, m) = r.context("reading LBD_MEMBERS6")?;
            out.push((IpAddr::from(a), m.id));
        }
        out.sort();
        Ok(out)
    }

    /// Trusts `addr` as node `id`'s tunnel source.
    fn set_member(&mut self, addr: IpAddr, id: u16) -> Result<()> {
        let info = MemberInfo { id, _pad: 0 };
        match addr {
            IpAddr::V4(a) => {
                let mut m: HashMap<&mut MapData, [u8; 4], MemberInfo> =
                    HashMap::try_from(self.map("LBD_MEMBERS4")?)?;
                m.insert(&a.octets(), &info, 0)
            }
            IpAddr::V6(a) => {
                let mut m: HashMap<&mut MapData, [u8; 16], MemberInfo> =
                    HashMap::try_from(self.map("LBD_MEMBERS6")?)?;
                m.insert(&a.octets(), &info, 0)
            }
        }
        .with_context(|| format!("trusting member address {addr}"))
    }

    /// Stops trusting `addr`, unless another node has taken it over since.
    fn forget_member(&mut self, addr: IpAddr, id: u16) -> Result<()> {
        let removed = match addr {
            IpAddr::V4(a) => {
                let mut m: HashMap<&mut MapData, [u8; 4], MemberInfo> =
                    HashMap::try_from(self.map("LBD_MEMBERS4")?)?;
                match m.get(&a.octets(), 0) {
                    Ok(info) if info.id == id => m.remove(&a.octets()),
                    _ => Ok(()),
                }
            }
            IpAddr::V6(a) => {
                let mut m: HashMap<&mut MapData, [u8; 16], MemberInfo> =
                    HashMap::try_from(self.map("LBD_MEMBERS6")?)?;
                match m.get(&a.octets(), 0) {
                    Ok(info) if info.id == id => m.remove(&a.octets()),
                    _ => Ok(()),
                }
            }
        };
        match removed {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing member address {addr}")),
        }
    }

    /// The installed entry of `vip`, if any.
    fn vip_info(&self, vip: &Vip) -> Result<Option<VipInfo>> {
        let key = vip.key();
        Ok(self
            .vips()?
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v))
    }

    /// Every installed VIP (both maps), with the family-independent key.
    fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>> {
        let v4: HashMap<&MapData, VipKey4, VipInfo> =
            HashMap::try_from(self.map_ref("LBD_VIPS4")?)?;
        let v6: HashMap<&MapData, VipKey, VipInfo> = HashMap::try_from(self.map_ref("LBD_VIPS6")?)?;
        let mut all = Vec::new();
        for r in v4.iter() {
            let (k, info) = r.context("reading LBD_VIPS4")?;
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&k.addr);
            all.push((
                VipKey {
                    addr,
                    port_be: k.port_be,
                    proto: k.proto,
                    family: FAMILY_V4,
                },
                info,
            ));
        }
        for r in v6.iter() {
            all.push(r.context("reading LBD_VIPS6")?);
        }
        Ok(all)
    }

    /// The VIPs with a table in the (possibly pinned, inherited) maps: a
    /// restarted daemon compares them with its config to remove stale ones.
    pub fn installed_vips(&self) -> Result<Vec<Vip>> {
        let mut out: Vec<Vip> = self
            .vips()?
            .into_iter()
            .map(|(k, _)| {
                let addr = if k.family == FAMILY_V4 {
                    IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
                } else {
                    IpAddr::from(k.addr)
                };
                Vip {
                    addr,
                    port: u16::from_be(k.port_be),
                    proto: k.proto,
                }
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Installs `table` for `vip`: writes the idle slot, then flips the VIP's
    /// active slot with one map update, so no packet sees a half-written
    /// table. `mss_clamp` 0 disables the clamp.
    pub fn set_vip_table(&mut self, vip: &Vip, table: &[Bucket], mss_clamp: u16) -> Result<()> {
        let size = u32::try_from(table.len()).unwrap_or(u32::MAX);
        if size == 0 || size > MAX_TABLE_SIZE {
            bail!(
                "{vip}: table size {} not in 1..={MAX_TABLE_SIZE}",
                table.len()
            );
        }
        let key = vip.key();
        let existing = self.vips()?;
        let current = existing.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let (index, slot) = match current {
            Some(info) => (info.index, 1 - (info.active_slot & 1)),
            None => {
                let used: Vec<u32> = existing.iter().map(|(_, v)| v.index).collect();
                let index = (0..MAX_VIPS)
                    .find(|i| !used.contains(i))
                    .ok_or_else(|| anyhow!("{vip}: no free VIP slot (at most {MAX_VIPS} VIPs)"))?;
                // The index's listener state (steering, cached listener)
                // was another VIP's.
                let mut listener: Array<&mut MapData, ListenerState> =
                    Array::try_from(self.map("LBD_LISTENER")?)?;
                listener
                    .set(index, &ListenerState::default(), 0)
                    .with_context(|| format!("{vip}: clearing its listener state"))?;
                (index, 0)
            }
        };
        let base = (index * SLOTS_PER_VIP + slot) * MAX_TABLE_SIZE;
        self.write_buckets(base, table)
            .with_context(|| format!("{vip}: writing its table"))?;
        let info = VipInfo {
            index,
            table_size: size,
            active_slot: slot,
            mss_clamp,
            _pad: 0,
        };
        match key.v4() {
            Some(k4) => {
                let mut vips: HashMap<&mut MapData, VipKey4, VipInfo> =
                    HashMap::try_from(self.map("LBD_VIPS4")?)?;
                vips.insert(&k4, &info, 0)
            }
            None => {
                let mut vips: HashMap<&mut MapData, VipKey, VipInfo> =
                    HashMap::try_from(self.map("LBD_VIPS6")?)?;
                vips.insert(&key, &info, 0)
            }
        }
        .with_context(|| format!("{vip}: activating table"))?;
        Ok(())
    }

    /// Copies `table` into the bucket array at `base` through a shared
    /// mapping of the (BPF_F_MMAPABLE) array. The slot written is idle: no
    /// packet reads it until the VIP's active slot is flipped, and that flip
    /// is a syscall, which orders these stores before it.
    fn write_buckets(&mut self, base: u32, table: &[Bucket]) -> Result<()> {
        if base as usize + table.len() > BUCKETS_LEN as usize {
            bail!("bucket range {base}+{} beyond the array", table.len());
        }
        let fd = match self.map("LBD_BUCKETS")? {
            aya::maps::Map::Array(data) => data.fd().as_fd().as_raw_fd(),
            _ => bail!("LBD_BUCKETS is not an array map"),
        };
        // Array map elements are laid out 8-byte aligned: a 4-byte Bucket
        // takes an 8-byte slot.
        let len = BUCKETS_LEN as usize * ARRAY_SLOT;
        // SAFETY: a shared mapping of a live BPF array of exactly `len` bytes;
        // it is unmapped before returning and only the checked range is written.
        unsafe {
            let mem = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if mem == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error()).context("mmap of LBD_BUCKETS");
            }
            let slots = mem as *mut [u8; ARRAY_SLOT];
            for (i, b) in table.iter().enumerate() {
                let slot = &mut *slots.add(base as usize + i);
                slot[..2].copy_from_slice(&b.first.to_ne_bytes());
                slot[2..4].copy_from_slice(&b.second.to_ne_bytes());
                slot[4..6].copy_from_slice(&b.fallback.to_ne_bytes());
                slot[6..8].copy_from_slice(&b._pad.to_ne_bytes());
            }
            libc::munmap(mem, len);
        }
        Ok(())
    }

    /// The live table of `vip`, if it is installed.
    pub fn vip_table(&self, vip: &Vip) -> Result<Option<Vec<Bucket>>> {
        let Some(info) = self.vip_info(vip)? else {
            return Ok(None);
        };
        let buckets: Array<&MapData, Bucket> = Array::try_from(self.map_ref("LBD_BUCKETS")?)?;
        let base = (info.index * SLOTS_PER_VIP + (info.active_slot & 1)) * MAX_TABLE_SIZE;
        let table = (0..info.table_size)
            .map(|i| buckets.get(&(base + i), 0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(table))
    }

    /// Stops steering `vip` (its packets then pass to the local stack).
    pub fn remove_vip(&mut self, vip: &Vip) -> Result<()> {
        let key = vip.key();
        let removed = match key.v4() {
            Some(k4) => {
                let mut vips: HashMap<&mut MapData, VipKey4, VipInfo> =
                    HashMap::try_from(self.map("LBD_VIPS4")?)?;
                vips.remove(&k4)
            }
            None => {
                let mut vips: HashMap<&mut MapData, VipKey, VipInfo> =
                    HashMap::try_from(self.map("LBD_VIPS6")?)?;
                vips.remove(&key)
            }
        };
        match removed {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {vip}")),
        }
    }

    /// The listener state the XDP program keeps for `vip` (None: not
    /// installed): whether its last SYN at this first hop found no
    /// listener, and whether flows are being checked against the fallback.
    pub fn listener_state(&self, vip: &Vip) -> Result<Option<ListenerState>> {
        let Some(info) = self.vip_info(vip)? else {
            return Ok(None);
        };
        let map: Array<&MapData, ListenerState> = Array::try_from(self.map_ref("LBD_LISTENER")?)?;
        Ok(Some(map.get(&info.index, 0).with_context(|| {
            format!("{vip}: reading its listener state")
        })?))
    }

    /// Ends steering for `vip` once its listener is back and the flows sent
    /// to the fallback have had `drain` to finish (per the XDP program's
    /// clock): the steady state then reads one array entry and looks up
    /// nothing. Returns whether steering was ended. A SYN that finds no
    /// listener right after starts it again.
    pub fn end_steering_after(&mut self, vip: &Vip, drain: std::time::Duration) -> Result<bool> {
        let Some(info) = self.vip_info(vip)? else {
            return Ok(false);
        };
        let mut map: Array<&mut MapData, ListenerState> =
            Array::try_from(self.map("LBD_LISTENER")?)?;
        let state = map.get(&info.index, 0)?;
        let since = coarse_now_ns().saturating_sub(state.last_missing_ns);
        if state.steering == 0
            || state.missing != 0
            || state.quiesced != 0
            || since < drain.as_nanos() as u64
        {
            return Ok(false);
        }
        map.set(info.index, &ListenerState::default(), 0)
            .with_context(|| format!("{vip}: clearing its listener state"))?;
        Ok(true)
    }

    /// Quiesces `vip`'s listener (`on`) or resumes it. Quiesced, the XDP
    /// program sends the VIP's new connections to their fallback as if no
    /// listener were there, and keeps the local ones (established, or
    /// finishing their handshake): the listener's accept queue drains
    /// before it closes. Both ways steering is on and its drain period
    /// starts now, so flows sent away keep going there after a resume
    /// (resuming a VIP that is not quiesced changes nothing). Returns false
    /// when `vip` is not installed.
    pub fn set_quiesced(&mut self, vip: &Vip, on: bool) -> Result<bool> {
        let Some(info) = self.vip_info(vip)? else {
            return Ok(false);
        };
        let mut map: Array<&mut MapData, ListenerState> =
            Array::try_from(self.map("LBD_LISTENER")?)?;
        let mut state = map.get(&info.index, 0)?;
        if !on && state.quiesced == 0 {
            return Ok(true);
        }
        state.quiesced = u32::from(on);
        state.steering = 1;
        state.last_missing_ns = coarse_now_ns();
        map.set(info.index, &state, 0)
            .with_context(|| format!("{vip}: writing its listener state"))?;
        Ok(true)
    }

    /// Counters of `vip` (None: the global slot), summed over CPUs.
    pub fn counters(&self, vip: Option<&Vip>) -> Result<Counters> {
        let index = match vip {
            None => MAX_VIPS,
            Some(v) => match self.vip_info(v)? {
                Some(info) => info.index,
                None => bail!("{v} is not installed"),
            },
        };
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map_ref("LBD_STATS")?)?;
        let mut out = Counters::new();
        for (i, name) in counter::NAMES.iter().enumerate() {
            let values = stats.get(&(index * counter::NUM_COUNTERS + i as u32), 0)?;
            out.insert(name, values.iter().sum());
        }
        Ok(out)
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    fn map_ref(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    /// Detaches everything and removes every pin under `pin_dir`: the
    /// dataplane is gone afterwards (on purpose, `lbd cleanup`).
    pub fn cleanup(pin_dir: impl AsRef<Path>) -> Result<()> {
        let dir = pin_dir.as_ref();
        if !dir.exists() {
            return Ok(());
        }
        // Links first: the programs stop before their maps go.
        remove_pins(dir, |name| name.starts_with("link_"))?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = file_name(&path);
            if name.starts_with(LAYOUT_DIR_PREFIX) && path.is_dir() {
                remove_pins(&path, |n| n.starts_with(MAP_PREFIX))?;
                fs::remove_dir(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        // Maps pinned before layout versioning sit at the top.
        remove_pins(dir, |name| name.starts_with(MAP_PREFIX))?;
        fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
        Ok(())
    }
}

/// CLOCK_MONOTONIC_COARSE, the clock of `bpf_ktime_get_coarse_ns`.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// Removes the pins of `dir` whose name `ours` accepts (nothing else).
fn remove_pins(dir: &Path, ours: impl Fn(&str) -> bool) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if ours(file_name(&path)) && !path.is_dir() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Where this build pins its maps.
fn layout_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("{LAYOUT_DIR_PREFIX}{LAYOUT_VERSION}"))
}

/// Refuses a pin directory holding maps of another layout.
fn check_layout(pin_dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(pin_dir) else {
        return Ok(()); // not created yet
    };
    for entry in entries {
        let path = entry?.path();
        let name = file_name(&path);
        let found = if name.starts_with(MAP_PREFIX) {
            "unversioned (maps pinned before layout versioning)".to_string()
        } else if let Some(v) = name.strip_prefix(LAYOUT_DIR_PREFIX)
            && v != LAYOUT_VERSION.to_string()
        {
            v.to_string()
        } else {
            continue;
        };
        return Err(LayoutMismatch {
            dir: pin_dir.to_path_buf(),
            found,
            wanted: LAYOUT_VERSION,
        }
        .into());
    }
    Ok(())
}

/// A pinned link whose interface is gone (deleted, or deleted and created
/// again with a new index) is detached: unpin it so the caller attaches
/// the program afresh instead of updating a link that drives nothing.
fn drop_detached_link(link_pin: &Path, iface: &str) -> Result<()> {
    if !link_pin.exists() {
        return Ok(());
    }
    let attached_to = pinned_link::ifindex(link_pin)?;
    let now = pinned_link::iface_index(iface);
    if attached_to != 0 && attached_to == now {
        return Ok(());
    }
    warn!(
        iface,
        link = %link_pin.display(),
        attached_to,
        iface_index = now,
        "pinned link is detached (interface deleted or re-created): unpinning it and attaching again"
    );
    fs::remove_file(link_pin).with_context(|| format!("unpinning {}", link_pin.display()))
}

fn ifname(iface: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(iface)
        .with_context(|| format!("interface name {iface:?} contains a NUL byte"))
}

/// The pin directory must live on a mounted bpffs.
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let on_bpffs = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, mnt, fstype) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        fstype == "bpf" && dir.starts_with(mnt)
    });
    if !on_bpffs {
        bail!(
            "{} is not on a bpffs mount: mount one with `mount -t bpf bpf /sys/fs/bpf`",
            dir.display()
        );
    }
    Ok(())
}
