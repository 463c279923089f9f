//! DWARF-mode user stacks: the kernel program copies the user registers and a
//! bounded window of the user stack per sample ([`tracer_common::UserSample`]);
//! here they are unwound with framehop, using the `.eh_frame` (indexed by
//! `.eh_frame_hdr`) or `.debug_frame` of each mapped object, so code built
//! without frame pointers yields whole stacks.
//!
//! Unwind information is read once per file (keyed by device and inode, the
//! key [`crate::procs`] opens files under) and shared by every process that
//! maps it; each process gets a framehop unwinder over its executable
//! mappings, rebuilt when a sample lands outside them (a library loaded
//! after the snapshot). The same per-file pass decides whether the file was
//! built with frame pointers (the automatic per-binary mode choice).
use std::{
    collections::HashMap,
    fs,
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use framehop::{
    ExplicitModuleSectionInfo, Module, Unwinder,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use gimli::{BaseAddresses, CallFrameInstruction, CieOrFde, EhFrame, LittleEndian, UnwindSection};
use object::{Object, ObjectSection, ObjectSegment};

use crate::procs::{MappedFile, Mapping, Processes, Snapshot};

/// Deepest stack kept from an unwind (as for kernel-side stacks).
pub const MAX_FRAMES: usize = tracer_common::MAX_DEPTH;

/// A pseudo-address ending a stack whose unwinding ran out of the copied
/// window (or met unreadable memory) before the root: symbolized as a frame
/// that says so rather than silently showing a shorter stack.
pub const TRUNCATED: u64 = u64::MAX - 0xfff;

/// Section data shared between unwinders (framehop reads it through Deref).
type Data = Arc<[u8]>;

/// What one ELF file contributes to unwinding.
#[derive(Clone)]
pub struct FileUnwindInfo {
    /// (file offset, virtual address) of each PT_LOAD segment: to place the
    /// file in a process from its mappings.
    loads: Vec<(u64, u64)>,
    sections: Sections,
    /// Built with frame pointers (most FDEs define the CFA from RBP); `None`
    /// when the file has no CFI at all.
    pub frame_pointers: Option<bool>,
}

#[derive(Clone, Default)]
struct Sections {
    text_svma: Option<Range<u64>>,
    got_svma: Option<Range<u64>>,
    eh_frame_svma: Option<Range<u64>>,
    eh_frame: Option<Data>,
    eh_frame_hdr_svma: Option<Range<u64>>,
    eh_frame_hdr: Option<Data>,
    debug_frame: Option<Data>,
}

impl Sections {
    fn explicit(&self) -> ExplicitModuleSectionInfo<Data> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text_svma.clone(),
            got_svma: self.got_svma.clone(),
            eh_frame_svma: self.eh_frame_svma.clone(),
            eh_frame: self.eh_frame.clone(),
            eh_frame_hdr_svma: self.eh_frame_hdr_svma.clone(),
            eh_frame_hdr: self.eh_frame_hdr.clone(),
            debug_frame: self.debug_frame.clone(),
            ..Default::default()
        }
    }
}

/// Reads the unwind sections and load segments of an ELF image (a byte
/// slice, or a file through [`object::ReadCache`], which reads only the
/// headers and the sections asked for: a 150 MB library is not read whole).
pub fn file_info<'d, R: object::ReadRef<'d>>(image: R) -> Option<FileUnwindInfo> {
    let obj = object::File::parse(image).ok()?;
    let range = |s: &object::Section<'d, '_, R>| s.address()..s.address() + s.size();
    let data = |s: &object::Section<'d, '_, R>| -> Option<Data> {
        s.uncompressed_data().ok().map(|d| Arc::from(&*d))
    };
    let mut sec = Sections::default();
    for s in obj.sections() {
        match s.name().unwrap_or("") {
            ".text" => sec.text_svma = Some(range(&s)),
            ".got" => sec.got_svma = Some(range(&s)),
            ".eh_frame" => {
                sec.eh_frame_svma = Some(range(&s));
                sec.eh_frame = data(&s);
            }
            ".eh_frame_hdr" => {
                sec.eh_frame_hdr_svma = Some(range(&s));
                sec.eh_frame_hdr = data(&s);
            }
            ".debug_frame" => sec.debug_frame = data(&s),
            _ => {}
        }
    }
    let loads = obj
        .segments()
        .map(|s| (s.file_range().0, s.address()))
        .collect();
    let frame_pointers = match (&sec.eh_frame, &sec.eh_frame_svma) {
        (Some(d), Some(r)) => uses_frame_pointers(d, r.start),
        _ => None,
    };
    Some(FileUnwindInfo {
        loads,
        sections: sec,
        frame_pointers,
    })
}

/// x86-64 DWARF register number of RBP.
const RBP: gimli::Register = gimli::X86_64::RBP;
/// FDEs looked at to decide (enough for a stable fraction, cheap on libxul-
/// sized files).
const FP_SAMPLE_FDES: usize = 4000;

/// Was this code built with frame pointers? With `-fno-omit-frame-pointer`
/// every function that sets up a frame says, in its CFI, that the CFA is
/// RBP-based from the prologue on; without, almost none does (only functions
/// with a variable-sized frame). At least half the FDEs must do so.
fn uses_frame_pointers(eh_frame: &[u8], eh_frame_addr: u64) -> Option<bool> {
    let section = EhFrame::new(eh_frame, LittleEndian);
    let bases = BaseAddresses::default().set_eh_frame(eh_frame_addr);
    let mut entries = section.entries(&bases);
    let (mut fdes, mut rbp) = (0usize, 0usize);
    while let Ok(Some(e)) = entries.next() {
        let CieOrFde::Fde(partial) = e else { continue };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        fdes += 1;
        let mut ins = fde.instructions(&section, &bases);
        while let Ok(Some(i)) = ins.next() {
            match i {
                CallFrameInstruction::DefCfaRegister { register }
                | CallFrameInstruction::DefCfa { register, .. }
                    if register == RBP =>
                {
                    rbp += 1;
                    break;
                }
                _ => {}
            }
        }
        if fdes >= FP_SAMPLE_FDES {
            break;
        }
    }
    (fdes > 0).then_some(rbp * 2 >= fdes)
}

/// The load bias of a file mapped at `m`: the address its virtual address 0
/// would have (framehop's `base_avma` for ELF).
fn load_bias(info: &FileUnwindInfo, m: &Mapping) -> u64 {
    // The PT_LOAD segment holding the mapping's file offset (segments are
    // page-aligned in the file, the mapping starts at a page boundary).
    let seg = info
        .loads
        .iter()
        .filter(|(off, _)| *off & !0xfff <= m.offset)
        .max_by_key(|(off, _)| *off)
        .copied()
        .unwrap_or((0, 0));
    let vaddr_of_map_start = seg.1.wrapping_sub(seg.0.wrapping_sub(m.offset));
    m.start.wrapping_sub(vaddr_of_map_start)
}

struct ProcUnwinder {
    unwinder: UnwinderX86_64<Data>,
    /// The snapshot's executable ranges, to tell an address of a library
    /// mapped after it.
    ranges: Vec<Range<u64>>,
    built: Instant,
}

impl ProcUnwinder {
    fn covers(&self, addr: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&addr))
    }
}

/// Unwinding state for a capture.
pub struct Unwinding {
    files: HashMap<String, Option<Arc<FileUnwindInfo>>>,
    vdso: Option<Arc<FileUnwindInfo>>,
    procs: HashMap<(u32, u64), ProcUnwinder>,
    cache: CacheX86_64,
    /// Samples unwound, and time spent doing it (for `--stats`).
    pub unwound: u64,
    pub unwind_time: Duration,
}

impl Default for Unwinding {
    fn default() -> Self {
        Self {
            files: HashMap::new(),
            vdso: own_vdso(),
            procs: HashMap::new(),
            cache: CacheX86_64::new(),
            unwound: 0,
            unwind_time: Duration::ZERO,
        }
    }
}

/// The vDSO is one image per kernel: this process's copy (read from its own
/// memory) stands for every process's `[vdso]`.
fn own_vdso() -> Option<Arc<FileUnwindInfo>> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    let m = crate::procs::parse_maps(&maps)
        .into_iter()
        .find(|m| m.path == "[vdso]")?;
    // SAFETY: the vDSO mapping is readable for the life of the process.
    let bytes =
        unsafe { std::slice::from_raw_parts(m.start as *const u8, (m.end - m.start) as usize) };
    file_info(bytes).map(Arc::new)
}

impl Unwinding {
    /// Unwind information of a mapped file, read once per file.
    pub fn file(&mut self, f: &MappedFile) -> Option<Arc<FileUnwindInfo>> {
        self.files
            .entry(f.key.clone())
            .or_insert_with(|| {
                let cache = object::ReadCache::new(fs::File::open(f.fd_path()).ok()?);
                file_info(&cache).map(Arc::new)
            })
            .clone()
    }

    /// The automatic mode choice for a process: DWARF when its executable
    /// (the mapping of `/proc/PID/exe`) was built without frame pointers.
    /// JVMs keep frame pointers: their Java frames are JIT code, which has no
    /// CFI and is walked by RBP (`-XX:+PreserveFramePointer`).
    pub fn needs_dwarf(&mut self, snap: &Snapshot) -> bool {
        if snap.is_jvm() {
            return false;
        }
        let exe = snap
            .mappings
            .iter()
            .find(|m| m.path == snap.exe)
            .and_then(|m| m.file.clone());
        match exe {
            Some(f) => self.file(&f).and_then(|i| i.frame_pointers) == Some(false),
            None => false,
        }
    }

    fn build(&mut self, snap: &Snapshot) -> ProcUnwinder {
        let mut unwinder = UnwinderX86_64::new();
        let mut ranges = Vec::new();
        for m in &snap.mappings {
            // Every executable mapping counts as known, JIT code included:
            // only an address outside all of them means a new mapping.
            ranges.push(m.start..m.end);
            let info = match (&m.file, m.path.as_str()) {
                (Some(f), _) => self.file(f),
                (None, "[vdso]") => self.vdso.clone(),
                _ => None,
            };
            let Some(info) = info else { continue };
            let bias = if m.file.is_some() {
                load_bias(&info, m)
            } else {
                m.start
            };
            unwinder.add_module(Module::new(
                m.path.clone(),
                m.start..m.end,
                bias,
                info.sections.explicit(),
            ));
        }
        ProcUnwinder {
            unwinder,
            ranges,
            built: Instant::now(),
        }
    }

    /// Unwinds one sample: instruction pointer first, then return
    /// addresses, ending with [`TRUNCATED`] when the walk stopped short of
    /// the root (stack deeper than the window, or no unwind information).
    pub fn unwind(
        &mut self,
        procs: &mut Processes,
        tgid: u32,
        regs: (u64, u64, u64),
        stack: &[u8],
    ) -> Vec<u64> {
        let t0 = Instant::now();
        let (ip, sp, bp) = regs;
        let Some(snap) = procs.by_pid.get(&tgid) else {
            return vec![ip];
        };
        let key = (tgid, snap.start_time);
        if !self.procs.contains_key(&key) {
            let u = self.build(snap);
            self.procs.insert(key, u);
        }
        let mut frames = self.walk(key, regs, stack);
        // An address outside every known mapping: a library loaded after the
        // snapshot. Take a new one (at most every 100 ms per process) and
        // unwind again.
        let stale = frames
            .iter()
            .any(|&a| a != TRUNCATED && !self.procs[&key].covers(a));
        if stale && self.procs[&key].built.elapsed() > Duration::from_millis(100) {
            procs.resnapshot(tgid);
            if let Some(snap) = procs.by_pid.get(&tgid) {
                let u = self.build(snap);
                self.procs.insert(key, u);
                frames = self.walk(key, (ip, sp, bp), stack);
            }
        }
        self.unwound += 1;
        self.unwind_time += t0.elapsed();
        frames
    }

    fn walk(&mut self, key: (u32, u64), (ip, sp, bp): (u64, u64, u64), stack: &[u8]) -> Vec<u64> {
        let u = &self.procs[&key];
        let end = sp.saturating_add(stack.len() as u64);
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            if addr < sp || addr.saturating_add(8) > end {
                return Err(());
            }
            let o = (addr - sp) as usize;
            let b: [u8; 8] = stack[o..o + 8].try_into().map_err(|_| ())?;
            Ok(u64::from_le_bytes(b))
        };
        let mut it = u.unwinder.iter_frames(
            ip,
            UnwindRegsX86_64::new(ip, sp, bp),
            &mut self.cache,
            &mut read_stack,
        );
        let mut out = Vec::new();
        loop {
            match it.next() {
                Ok(Some(f)) => {
                    out.push(f.address());
                    if out.len() >= MAX_FRAMES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    out.push(TRUNCATED);
                    break;
                }
            }
        }
        out
    }

    /// Forgets a process's unwinder (it exited; its snapshot stays for
    /// symbolization).
    pub fn forget(&mut self, tgid: u32) {
        self.procs.retain(|(p, _), _| *p != tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_bias_of_pie_and_fixed_executables() {
        let info = FileUnwindInfo {
            loads: vec![(0, 0), (0x1000, 0x1000), (0x3000, 0x3000)],
            sections: Sections::default(),
            frame_pointers: None,
        };
        let m = Mapping {
            start: 0x5555_5555_5000,
            end: 0x5555_5555_6000,
            offset: 0x1000,
            path: "/x".into(),
            file: None,
        };
        assert_eq!(load_bias(&info, &m), 0x5555_5555_4000);
        // Non-PIE: vaddr 0x401000 at file offset 0x1000, mapped where linked.
        let fixed = FileUnwindInfo {
            loads: vec![(0, 0x400000), (0x1000, 0x401000)],
            ..info
        };
        let m = Mapping {
            start: 0x401000,
            end: 0x402000,
            offset: 0x1000,
            path: "/x".into(),
            file: None,
        };
        assert_eq!(load_bias(&fixed, &m), 0);
    }

    /// Distribution code is built without frame pointers: Debian's libc and
    /// python3 are classified so (the automatic mode unwinds them with
    /// DWARF).
    #[test]
    fn distribution_binaries_have_no_frame_pointers() {
        for path in ["/usr/bin/python3", "/lib/x86_64-linux-gnu/libc.so.6"] {
            let Ok(img) = fs::read(path) else { continue };
            let info = file_info(&*img).expect("ELF");
            eprintln!("{path}: frame pointers {:?}", info.frame_pointers);
            assert_eq!(info.frame_pointers, Some(false), "{path}");
        }
    }

    #[test]
    fn own_executable_unwind_info_is_read() {
        let exe = fs::read("/proc/self/exe").unwrap();
        let info = file_info(&*exe).expect("ELF");
        assert!(info.sections.eh_frame.is_some());
        assert!(info.frame_pointers.is_some());
    }
}
