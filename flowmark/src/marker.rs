//! Loads the tc egress program (`flowmark-ebpf`, embedded at build time),
//! attaches it to interfaces through a clsact qdisc, and owns its maps.
//!
//! The program is attached with a netlink cls_bpf filter under clsact, never
//! TCX and never by replacing a qdisc: an existing clsact (say, the
//! dataplane's MSS clamp) is reused as it is, and the clsact we add is left
//! in place on exit (other filters may have joined it); our filter itself
//! goes away when the daemon exits.

use std::{ffi::CString, os::unix::fs::MetadataExt, path::Path};

use anyhow::{Context, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        SchedClassifier,
        tc::{self, NlOptions, TcAttach, TcAttachType, TcError},
    },
};
use flowmark_common::{
    CacheSlot, Config, FlowKey, FlowValue, RuleValue, cache_slot, counter, port_bit,
};

pub const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowmark"));
pub const PROGRAM: &str = "flowmark_egress";
/// A program that only returns TC_ACT_OK: the benchmark's baseline.
pub const BASELINE: &str = "flowmark_baseline";

pub struct Marker {
    ebpf: Ebpf,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    ports: HashMap<MapData, u16, RuleValue>,
    cgroups: HashMap<MapData, u64, RuleValue>,
    stats: PerCpuArray<MapData, u64>,
    config_map: Array<MapData, Config>,
    config: Config,
    cache: PerCpuArray<MapData, CacheSlot>,
    remote_ports: Array<MapData, u64>,
    /// Registered flows per remote port (`dport_be`): its filter bit is set
    /// while the count is not 0.
    port_flows: std::collections::HashMap<u16, u32>,
}

impl Marker {
    pub fn load() -> anyhow::Result<Marker> {
        let mut ebpf = Ebpf::load(OBJECT).context("loading the flowmark eBPF object")?;
        let prog: &mut SchedClassifier = program(&mut ebpf)?;
        prog.load().context("verifier refused flowmark_egress")?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing"))
        };
        let flows = HashMap::try_from(take("FLOWS")?)?;
        let ports = HashMap::try_from(take("PORT_RULES")?)?;
        let cgroups = HashMap::try_from(take("CGROUP_RULES")?)?;
        let stats = PerCpuArray::try_from(take("STATS")?)?;
        let config_map = Array::try_from(take("CONFIG")?)?;
        let cache = PerCpuArray::try_from(take("FLOW_CACHE")?)?;
        let remote_ports = Array::try_from(take("REMOTE_PORTS")?)?;
        let mut m = Marker {
            ebpf,
            flows,
            ports,
            cgroups,
            stats,
            config_map,
            config: Config::default(),
            cache,
            remote_ports,
            port_flows: Default::default(),
        };
        m.next_generation()?;
        Ok(m)
    }

    /// Invalidates every CPU's cached copies of flow-map entries: called
    /// after an entry changed or before it goes.
    fn next_generation(&mut self) -> anyhow::Result<()> {
        self.config.generation = self.config.generation.wrapping_add(1).max(1);
        self.write_config()
    }

    fn write_config(&mut self) -> anyhow::Result<()> {
        self.config_map
            .set(0, &self.config, 0)
            .context("writing the config map")
    }

    /// Attaches the egress program to `iface` (adds clsact if absent).
    pub fn attach(&mut self, iface: &str) -> anyhow::Result<()> {
        let name = CString::new(iface).context("interface name")?;
        let iface_c = name.as_c_str();
        match tc::qdisc_add_clsact(iface_c) {
            Ok(()) => tracing::info!(iface, "added clsact qdisc"),
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("adding clsact on {iface}")),
        }
        let prog = program(&mut self.ebpf)?;
        let attach = TcAttach::Netlink {
            parent: TcAttachType::Egress.into(),
            options: NlOptions::default(),
        };
        prog.attach(iface_c, attach).with_context(|| {
            format!(
                "attaching to {iface} egress (an `ingress` qdisc in place of clsact blocks this)"
            )
        })?;
        Ok(())
    }

    /// The program itself, for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> anyhow::Result<&mut SchedClassifier> {
        program(&mut self.ebpf)
    }

    /// The trivial baseline program, loaded, for BPF_PROG_TEST_RUN.
    pub fn baseline(&mut self) -> anyhow::Result<&mut SchedClassifier> {
        self.loaded(BASELINE)
    }

    /// A program of the object by name, loaded.
    fn loaded(&mut self, name: &str) -> anyhow::Result<&mut SchedClassifier> {
        let Some(p) = self.ebpf.program_mut(name) else {
            bail!("program {name} missing")
        };
        let p: &mut SchedClassifier = p.try_into()?;
        if p.fd().is_err() {
            p.load()
                .with_context(|| format!("verifier refused {name}"))?;
        }
        Ok(p)
    }

    pub fn set_flow(&mut self, key: &FlowKey, label: u32) -> anyhow::Result<()> {
        let replaced = self.flows.get(key, 0).is_ok();
        if replaced {
            // Cached copies carry the old label.
            self.next_generation()?;
        }
        let value = FlowValue {
            label,
            version: self.config.generation,
            ..Default::default()
        };
        self.flows
            .insert(key, &value, 0)
            .context("writing the flow map")?;
        if replaced {
            return Ok(());
        }
        let n = self.port_flows.entry(key.dport_be).or_default();
        *n += 1;
        if *n == 1 {
            self.set_port_bit(key.dport_be, true)?;
        }
        Ok(())
    }

    fn set_port_bit(&mut self, dport_be: u16, on: bool) -> anyhow::Result<()> {
        let (word, bit) = port_bit(dport_be);
        let w = self
            .remote_ports
            .get(&word, 0)
            .context("reading the port filter")?;
        let w = if on { w | bit } else { w & !bit };
        self.remote_ports
            .set(word, &w, 0)
            .context("writing the port filter")
    }

    /// Removes a flow, returning its kernel counters if it was there.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Option<FlowValue> {
        let v = self.flow(key);
        if let Err(e) = self.next_generation() {
            tracing::warn!("flow cache not invalidated: {e:#}");
        }
        if self.flows.remove(key).is_ok()
            && let Some(n) = self.port_flows.get_mut(&key.dport_be)
        {
            *n -= 1;
            if *n == 0 {
                self.port_flows.remove(&key.dport_be);
                if let Err(e) = self.set_port_bit(key.dport_be, false) {
                    // Harmless: a set bit only costs a lookup.
                    tracing::warn!("port filter bit left set: {e:#}");
                }
            }
        }
        v
    }

    /// A flow's entry with its counters, including the shares still held
    /// in the CPUs' cache slots.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        let mut v = self.flows.get(key, 0).ok()?;
        if let Ok(slots) = self.cache.get(&cache_slot(key), 0) {
            for s in slots.iter() {
                if s.generation == self.config.generation && s.key == *key {
                    v.packets += s.packets;
                    v.bytes += s.bytes;
                }
            }
        }
        Some(v)
    }

    pub fn add_port_rule(&mut self, port: u16, semantic: u32) -> anyhow::Result<()> {
        self.ports
            .insert(&port, &RuleValue { semantic }, 0)
            .context("writing the port rule map")?;
        self.enable_rules(flowmark_common::HAS_PORT_RULES)
    }

    pub fn add_cgroup_rule(&mut self, cgroup: &Path, semantic: u32) -> anyhow::Result<()> {
        let id = cgroup_id(cgroup)?;
        tracing::info!(cgroup = %cgroup.display(), id, "cgroup rule");
        self.cgroups
            .insert(&id, &RuleValue { semantic }, 0)
            .context("writing the cgroup rule map")?;
        self.enable_rules(flowmark_common::HAS_CGROUP_RULES)
    }

    /// Tells the program a rule kind is in use; until then it skips that
    /// lookup (and, for cgroups, the helper call) on every packet.
    fn enable_rules(&mut self, kind: u32) -> anyhow::Result<()> {
        self.config.rules |= kind;
        self.write_config()
    }

    /// Kernel counters summed over CPUs, in `counter::NAMES` order.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        counter::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sum = self
                    .stats
                    .get(&(i as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*name, sum)
            })
            .collect()
    }
}

fn program(ebpf: &mut Ebpf) -> anyhow::Result<&mut SchedClassifier> {
    let Some(p) = ebpf.program_mut(PROGRAM) else {
        bail!("program {PROGRAM} missing from the object")
    };
    Ok(p.try_into()?)
}

/// A cgroup v2 id is the inode number of its directory in cgroupfs, which
/// is what bpf_skb_cgroup_id returns for the sending socket.
pub fn cgroup_id(path: &Path) -> anyhow::Result<u64> {
    let m = std::fs::metadata(path).with_context(|| format!("cgroup {}", path.display()))?;
    if !m.is_dir() {
        bail!("cgroup {} is not a directory", path.display());
    }
    Ok(m.ino())
}
