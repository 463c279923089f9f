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
use flowmark_common::{FlowKey, FlowValue, RuleValue, counter};

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
    config: Array<MapData, u32>,
    /// HAS_* bits of the rules loaded so far.
    rule_kinds: u32,
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
        let config = Array::try_from(take("CONFIG")?)?;
        Ok(Marker {
            ebpf,
            flows,
            ports,
            cgroups,
            stats,
            config,
            rule_kinds: 0,
        })
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
        let Some(p) = self.ebpf.program_mut(BASELINE) else {
            bail!("program {BASELINE} missing")
        };
        let p: &mut SchedClassifier = p.try_into()?;
        if p.fd().is_err() {
            p.load().context("verifier refused the baseline")?;
        }
        Ok(p)
    }

    pub fn set_flow(&mut self, key: &FlowKey, label: u32) -> anyhow::Result<()> {
        let value = FlowValue {
            label,
            ..Default::default()
        };
        self.flows
            .insert(key, &value, 0)
            .context("writing the flow map")
    }

    /// Removes a flow, returning its kernel counters if it was there.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Option<FlowValue> {
        let v = self.flows.get(key, 0).ok();
        let _ = self.flows.remove(key);
        v
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key, 0).ok()
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
        self.rule_kinds |= kind;
        self.config
            .set(0, &self.rule_kinds, 0)
            .context("writing the config map")
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
