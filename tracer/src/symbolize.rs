//! Stack ids to frames, with blazesym: user code through ELF symbols and
//! DWARF (with inlined frames) of the files kept open by [`crate::procs`],
//! the kernel through kallsyms, JIT code through the process's perf map.
//! Anything unresolved keeps its module and offset.
use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Kernel, Process, Source},
};
use blazesym::{MaybeDefault, Pid};
use tracer_common::StackKey;

use crate::{
    procs::{Lookup, MappedFile, Processes},
    unwind::TRUNCATED,
};

/// What a frame is, which decides its folded-stack suffix (the flamegraph
/// colours these: `_[k]` kernel, `_[i]` inlined, `_[j]` JIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The root frame: the command name of the task.
    Process,
    User,
    Inlined,
    Jit,
    Kernel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub name: String,
    pub kind: Kind,
}

impl Frame {
    fn new(name: impl Into<String>, kind: Kind) -> Self {
        Self {
            name: name.into(),
            kind,
        }
    }

    /// The frame as it appears in folded stacks.
    pub fn folded(&self) -> String {
        // ';' separates frames in folded stacks and a newline ends them.
        let name = self.name.replace([';', '\n'], ":");
        match self.kind {
            Kind::Process | Kind::User => name,
            Kind::Inlined => format!("{name}_[i]"),
            Kind::Jit => format!("{name}_[j]"),
            Kind::Kernel => format!("{name}_[k]"),
        }
    }
}

/// A stack, root first, and its weight (samples or nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    pub value: u64,
}

/// Symbolization output and what the operator should know about it.
#[derive(Debug, Default)]
pub struct Symbolization {
    pub stacks: Vec<Stack>,
    /// Explanations (missing perf map, ...), one per process at most.
    pub notes: Vec<String>,
    /// Distinct addresses symbolized.
    pub addresses: usize,
}

/// Addresses after the innermost frame are return addresses: look up the
/// call instruction before them, or inlined frames and line info would name
/// the code after the call.
fn lookup_addr(ip: u64, depth: usize) -> u64 {
    if depth == 0 { ip } else { ip.saturating_sub(1) }
}

type Resolved = Vec<Frame>;

/// Turns a blazesym result into frames (outermost first, inlined calls after
/// their containing function).
fn frames_of(res: &Symbolized<'_>, fallback: &str, kind: Kind) -> Resolved {
    match res {
        Symbolized::Sym(sym) => {
            let mut v = vec![Frame::new(sym.name.to_string(), kind)];
            for f in sym.inlined.iter() {
                v.push(Frame::new(f.name.to_string(), Kind::Inlined));
            }
            v
        }
        Symbolized::Unknown(_) => vec![Frame::new(fallback.to_string(), kind)],
    }
}

/// Symbolizes every stack of a capture.
pub fn symbolize(
    counts: &[(StackKey, u64)],
    stacks: &HashMap<u64, Vec<u64>>,
    procs: &Processes,
) -> Symbolization {
    let symbolizer = Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build();

    // Kernel addresses: one batch through kallsyms.
    let mut kaddrs = BTreeSet::new();
    for (k, _) in counts {
        if let Some(st) = stacks.get(&k.kstack) {
            for (d, ip) in st.iter().enumerate() {
                kaddrs.insert(lookup_addr(*ip, d));
            }
        }
    }
    let kaddrs: Vec<u64> = kaddrs.into_iter().collect();
    let mut ksyms: HashMap<u64, Resolved> = HashMap::new();
    let ksrc = Source::Kernel(Kernel {
        vmlinux: MaybeDefault::None,
        debug_syms: false,
        ..Default::default()
    });
    if !kaddrs.is_empty() {
        match symbolizer.symbolize(&ksrc, Input::AbsAddr(&kaddrs)) {
            Ok(res) => {
                for (a, r) in kaddrs.iter().zip(res.iter()) {
                    ksyms.insert(*a, frames_of(r, &format!("kernel+0x{a:x}"), Kind::Kernel));
                }
            }
            Err(e) => eprintln!(
                "lbd-trace: kernel symbols unavailable ({e}); kernel frames show addresses"
            ),
        }
    }

    // User addresses: grouped by mapped file, one batch per file.
    let mut by_file: HashMap<*const MappedFile, (Arc<MappedFile>, BTreeSet<u64>)> = HashMap::new();
    for (k, _) in counts {
        let (Some(st), Some(p)) = (stacks.get(&k.ustack), procs.by_pid.get(&k.tgid)) else {
            continue;
        };
        for (d, ip) in st.iter().enumerate().filter(|(_, ip)| **ip != TRUNCATED) {
            if let Lookup::File(f, off) = p.lookup(lookup_addr(*ip, d)) {
                by_file
                    .entry(Arc::as_ptr(f))
                    .or_insert_with(|| (f.clone(), BTreeSet::new()))
                    .1
                    .insert(off);
            }
        }
    }
    let vdso = vdso_symbols(&symbolizer, counts, stacks, procs);
    let mut usyms: HashMap<(*const MappedFile, u64), Resolved> = HashMap::new();
    let mut addresses = kaddrs.len();
    for (key, (file, offs)) in &by_file {
        let offs: Vec<u64> = offs.iter().copied().collect();
        addresses += offs.len();
        let path: PathBuf = file.fd_path();
        let src = Source::Elf(Elf::new(path));
        let res = symbolizer
            .symbolize(&src, Input::FileOffset(&offs))
            .unwrap_or_default();
        for (i, off) in offs.iter().enumerate() {
            let fallback = format!("{}+0x{off:x}", file.short());
            let frames = match res.get(i) {
                Some(r) => frames_of(r, &fallback, Kind::User),
                None => vec![Frame::new(fallback, Kind::User)],
            };
            usyms.insert((*key, *off), frames);
        }
    }

    let mut notes = Vec::new();
    let mut noted = BTreeSet::new();
    let mut out = Vec::with_capacity(counts.len());
    for (k, value) in counts {
        let comm = comm_str(&k.comm);
        let mut frames = vec![Frame::new(comm.clone(), Kind::Process)];
        let proc_ = procs.by_pid.get(&k.tgid);
        if let Some(st) = stacks.get(&k.ustack) {
            let mut user: Vec<Frame> = Vec::new();
            for (d, ip) in st.iter().enumerate() {
                if *ip == TRUNCATED {
                    user.push(Frame::new(
                        "[truncated: stack deeper than the copied window]",
                        Kind::User,
                    ));
                    continue;
                }
                let a = lookup_addr(*ip, d);
                let Some(p) = proc_ else {
                    user.push(Frame::new(
                        format!("[{comm} exited before it was seen] 0x{ip:x}"),
                        Kind::User,
                    ));
                    continue;
                };
                let fs: Resolved = match p.lookup(a) {
                    Lookup::File(f, off) => usyms
                        .get(&(Arc::as_ptr(f), off))
                        .cloned()
                        .unwrap_or_else(|| {
                            vec![Frame::new(format!("{}+0x{off:x}", f.short()), Kind::User)]
                        }),
                    Lookup::Special("[vdso]", off) if vdso.contains_key(&off) => vdso[&off].clone(),
                    Lookup::Special(name, off) => {
                        vec![Frame::new(format!("{name}+0x{off:x}"), Kind::User)]
                    }
                    Lookup::Anon => match p.perf_map_symbol(a) {
                        Some((name, _)) => vec![Frame::new(name.to_string(), Kind::Jit)],
                        None if p.perf_map.is_none() && p.is_jvm() => {
                            if noted.insert(k.tgid) {
                                notes.push(format!(
                                    "PID {} ({}) runs JIT-compiled Java code but has no perf map \
                                     {}: start the JVM with -XX:+PreserveFramePointer and run \
                                     `jcmd {} Compiler.perfmap` before or during the capture; \
                                     until then its JIT frames are shown as \"[java JIT code: no perf map]\"",
                                    k.tgid, p.comm, p.perf_map_path, k.tgid
                                ));
                            }
                            vec![Frame::new("[java JIT code: no perf map]", Kind::Jit)]
                        }
                        None if p.perf_map.is_some() => {
                            if p.is_jvm() && noted.insert(k.tgid) {
                                notes.push(format!(
                                    "PID {} ({}): some JIT frames are not in {} (code compiled \
                                     after the map was written): run `jcmd {} Compiler.perfmap` \
                                     again during the capture",
                                    k.tgid, p.comm, p.perf_map_path, k.tgid
                                ));
                            }
                            vec![Frame::new(
                                format!("[JIT code not in {}] 0x{ip:x}", p.perf_map_path),
                                Kind::Jit,
                            )]
                        }
                        None => vec![Frame::new(
                            format!("[anonymous memory] 0x{ip:x}"),
                            Kind::User,
                        )],
                    },
                };
                // The stack is innermost first; within one address the
                // frames are outermost first: reverse them as a group.
                user.extend(fs.into_iter().rev());
            }
            user.reverse();
            frames.extend(user);
        }
        if let Some(st) = stacks.get(&k.kstack) {
            let mut kern: Vec<Frame> = Vec::new();
            for (d, ip) in st.iter().enumerate() {
                let a = lookup_addr(*ip, d);
                match ksyms.get(&a) {
                    Some(fs) => kern.extend(fs.iter().rev().cloned()),
                    None => kern.push(Frame::new(format!("kernel+0x{a:x}"), Kind::Kernel)),
                }
            }
            kern.reverse();
            frames.extend(kern);
        }
        out.push(Stack {
            frames,
            value: *value,
        });
    }
    Symbolization {
        stacks: out,
        notes,
        addresses,
    }
}

/// The vDSO is one image per kernel, mapped into every process: offsets into
/// a traced process's `[vdso]` are resolved through this process's own copy,
/// which blazesym reads from memory.
fn vdso_symbols(
    symbolizer: &Symbolizer,
    counts: &[(StackKey, u64)],
    stacks: &HashMap<u64, Vec<u64>>,
    procs: &Processes,
) -> HashMap<u64, Resolved> {
    let mut offs = BTreeSet::new();
    for (k, _) in counts {
        let (Some(st), Some(p)) = (stacks.get(&k.ustack), procs.by_pid.get(&k.tgid)) else {
            continue;
        };
        for (d, ip) in st.iter().enumerate().filter(|(_, ip)| **ip != TRUNCATED) {
            if let Lookup::Special("[vdso]", off) = p.lookup(lookup_addr(*ip, d)) {
                offs.insert(off);
            }
        }
    }
    let mut out = HashMap::new();
    if offs.is_empty() {
        return out;
    }
    let Some(base) = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|m| {
            crate::procs::parse_maps(&m)
                .into_iter()
                .find(|m| m.path == "[vdso]")
                .map(|m| m.start)
        })
    else {
        return out;
    };
    let offs: Vec<u64> = offs.into_iter().collect();
    let addrs: Vec<u64> = offs.iter().map(|o| base + o).collect();
    let mut src = Process::new(Pid::Slf);
    src.perf_map = false;
    src.debug_syms = false;
    let Ok(res) = symbolizer.symbolize(&Source::Process(src), Input::AbsAddr(&addrs)) else {
        return out;
    };
    for (off, r) in offs.iter().zip(res.iter()) {
        if let Symbolized::Sym(_) = r {
            out.insert(*off, frames_of(r, "", Kind::User));
        }
    }
    out
}

/// A kernel comm as text.
pub fn comm_str(c: &[u8]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    let s = String::from_utf8_lossy(&c[..end]).into_owned();
    if s.is_empty() {
        "[unknown comm]".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_names_are_safe() {
        assert_eq!(Frame::new("a;b", Kind::User).folded(), "a:b");
        assert_eq!(
            Frame::new("do_syscall_64", Kind::Kernel).folded(),
            "do_syscall_64_[k]"
        );
        assert_eq!(Frame::new("f", Kind::Inlined).folded(), "f_[i]");
        assert_eq!(comm_str(b"nginx\0\0\0"), "nginx");
        assert_eq!(comm_str(b"\0"), "[unknown comm]");
    }

    #[test]
    fn return_addresses_point_into_the_call() {
        assert_eq!(lookup_addr(100, 0), 100);
        assert_eq!(lookup_addr(100, 1), 99);
    }
}
