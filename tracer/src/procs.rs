//! Process snapshots: what symbolizing a process's user addresses needs,
//! taken the first time the process shows up in the counts so that a process
//! that exits mid-capture still symbolizes.
//!
//! blazesym's `Process` source reads /proc/PID at symbolization time, which is
//! too late for such processes, so the snapshot keeps its own copy of the
//! executable mappings (parsed from /proc/PID/maps) with an open file for each
//! mapped object (through /proc/PID/map_files, which also reaches files of
//! other mount namespaces and deleted files), plus a copy of the JIT perf map.
//! Symbolization then hands blazesym the open file (`/proc/self/fd/N`) and a
//! file offset.
use std::{
    collections::HashMap,
    fs::{self, File},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::Arc,
};

/// An ELF object mapped by a process, kept open.
#[derive(Debug)]
pub struct MappedFile {
    /// The path the process mapped it under (its own mount namespace).
    pub name: String,
    /// `dev:inode` of the file: one object however many processes map it
    /// (also the key of its cached unwind information).
    pub key: String,
    file: File,
}

impl MappedFile {
    /// A path to the open file that stays valid while `self` lives.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Short module name for unresolved frames: the file name.
    pub fn short(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// One executable mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// The pathname column of /proc/PID/maps ("" for anonymous, "[vdso]"...).
    pub path: String,
    pub file: Option<Arc<MappedFile>>,
}

/// One entry of a perf map (/tmp/perf-PID.map): `START SIZE NAME`, hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfMapEntry {
    pub start: u64,
    pub size: u64,
    pub name: String,
}

/// What we know about a process.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub pid: u32,
    /// Start time (clock ticks since boot), to tell a reused PID apart.
    pub start_time: u64,
    pub comm: String,
    pub exe: String,
    pub mappings: Vec<Mapping>,
    /// Sorted by start; `None` when the process has no perf map.
    pub perf_map: Option<Vec<PerfMapEntry>>,
    /// Where the perf map was looked for (for the explanation when missing).
    pub perf_map_path: String,
}

/// The mapping-address translation result.
pub enum Lookup<'a> {
    /// A file-backed mapping: the file and the file offset of the address.
    File(&'a Arc<MappedFile>, u64),
    /// Anonymous executable memory (JIT code) or an address in no mapping.
    Anon,
    /// A special mapping such as [vdso], with the offset into it.
    Special(&'a str, u64),
}

impl Snapshot {
    pub fn is_jvm(&self) -> bool {
        self.comm == "java"
            || self.exe.ends_with("/java")
            || self.mappings.iter().any(|m| m.path.ends_with("/libjvm.so"))
    }

    pub fn lookup(&self, addr: u64) -> Lookup<'_> {
        let i = self.mappings.partition_point(|m| m.end <= addr);
        match self.mappings.get(i) {
            Some(m) if m.start <= addr => match &m.file {
                Some(f) => Lookup::File(f, addr - m.start + m.offset),
                None if m.path.starts_with('[') => Lookup::Special(&m.path, addr - m.start),
                None if m.path.is_empty() => Lookup::Anon,
                None => Lookup::Special(&m.path, addr - m.start + m.offset),
            },
            _ => Lookup::Anon,
        }
    }

    pub fn perf_map_symbol(&self, addr: u64) -> Option<(&str, u64)> {
        let map = self.perf_map.as_ref()?;
        let i = map.partition_point(|e| e.start <= addr);
        let e = map.get(i.checked_sub(1)?)?;
        (addr < e.start.saturating_add(e.size.max(1))).then(|| (e.name.as_str(), addr - e.start))
    }
}

/// Parses /proc/PID/maps text, keeping executable mappings.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut v = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (_dev, _inode) = (it.next(), it.next());
        let path = it.next().unwrap_or("").trim().to_string();
        if !perms.contains('x') {
            continue;
        }
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(off, 16),
        ) else {
            continue;
        };
        v.push(Mapping {
            start,
            end,
            offset,
            path,
            file: None,
        });
    }
    v.sort_by_key(|m| m.start);
    v
}

/// Parses a perf map; malformed lines are skipped (JITs write these files
/// concurrently, a torn last line is normal).
pub fn parse_perf_map(text: &str) -> Vec<PerfMapEntry> {
    let mut v: Vec<PerfMapEntry> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let start = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
            let size = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
            let name = it.next()?.trim().to_string();
            (!name.is_empty()).then_some(PerfMapEntry { start, size, name })
        })
        .collect();
    v.sort_by_key(|e| e.start);
    v
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may contain spaces and parentheses: fields after the
    // last ')' are fixed. starttime is field 22, i.e. the 20th after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// The process's PID in its own PID namespace (the number a containerized
/// JVM puts in its perf map's name).
fn ns_pid(pid: u32) -> u32 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last().and_then(|p| p.parse().ok()))
        })
        .unwrap_or(pid)
}

/// Takes a snapshot of a live process; `None` if it is already gone.
pub fn snapshot(pid: u32, files: &mut HashMap<String, Arc<MappedFile>>) -> Option<Snapshot> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    // A zombie (exited, not yet reaped) has no mappings left: no snapshot
    // beats an empty one.
    if maps.is_empty() {
        return None;
    }
    let start_time = start_time(pid)?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut mappings = parse_maps(&maps);
    for m in &mut mappings {
        if !m.path.starts_with('/') {
            continue;
        }
        // One open file per (pid-independent) object: key on the map_files
        // target's device+inode so a library shared by many processes is
        // opened once.
        let mf = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        let Ok(file) =
            File::open(&mf).or_else(|_| File::open(format!("/proc/{pid}/root{}", m.path)))
        else {
            continue;
        };
        let key = match file.metadata() {
            Ok(md) => {
                use std::os::unix::fs::MetadataExt;
                format!("{}:{}", md.dev(), md.ino())
            }
            Err(_) => format!("{pid}:{}", m.path),
        };
        let entry = files.entry(key.clone()).or_insert_with(|| {
            Arc::new(MappedFile {
                name: m.path.clone(),
                key: key.clone(),
                file,
            })
        });
        m.file = Some(entry.clone());
    }
    let nspid = ns_pid(pid);
    let perf_map_path = format!("/proc/{pid}/root/tmp/perf-{nspid}.map");
    let perf_map = fs::read_to_string(&perf_map_path)
        .ok()
        .map(|t| parse_perf_map(&t));
    Some(Snapshot {
        pid,
        start_time,
        comm,
        exe,
        mappings,
        perf_map,
        perf_map_path: format!("/tmp/perf-{nspid}.map"),
    })
}

/// Snapshots of every process seen during a capture.
#[derive(Default)]
pub struct Processes {
    pub by_pid: HashMap<u32, Snapshot>,
    files: HashMap<String, Arc<MappedFile>>,
}

impl Processes {
    /// Snapshots processes not seen before.
    pub fn observe(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            if pid == 0 || self.by_pid.contains_key(&pid) {
                continue;
            }
            if let Some(s) = snapshot(pid, &mut self.files) {
                self.by_pid.insert(pid, s);
            }
        }
    }

    /// Snapshots a live process again (a library mapped since, or an exec),
    /// keeping the old snapshot if it is gone.
    pub fn resnapshot(&mut self, pid: u32) {
        if let Some(s) = snapshot(pid, &mut self.files) {
            self.by_pid.insert(pid, s);
        }
    }

    /// At the end of a capture: refreshes the snapshots of processes still
    /// alive (new libraries, a perf map written meanwhile), keeping the first
    /// snapshot of those that exited or whose PID was reused.
    pub fn refresh(&mut self) {
        let pids: Vec<u32> = self.by_pid.keys().copied().collect();
        for pid in pids {
            let Some(old) = self.by_pid.get(&pid) else {
                continue;
            };
            if start_time(pid) != Some(old.start_time) {
                continue;
            }
            if let Some(s) = snapshot(pid, &mut self.files) {
                self.by_pid.insert(pid, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let t = "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 123 /usr/bin/x\n\
                 55d0c0a01000-55d0c0a05000 r-xp 00001000 08:01 123 /usr/bin/x\n\
                 7f0000000000-7f0000001000 rwxp 00000000 00:00 0 \n\
                 7ffc1000-7ffc3000 r-xp 00000000 00:00 0                          [vdso]\n\
                 garbage line\n";
        let m = parse_maps(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x7ffc1000);
        assert_eq!(m[0].path, "[vdso]");
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[1].path, "/usr/bin/x");
        assert_eq!(m[2].path, "");
        let s = Snapshot {
            mappings: m,
            ..Default::default()
        };
        assert!(matches!(
            s.lookup(0x55d0c0a01010),
            Lookup::Special("/usr/bin/x", 0x1010)
        ));
        assert!(matches!(s.lookup(0x7f0000000010), Lookup::Anon));
        assert!(matches!(s.lookup(0x7ffc1004), Lookup::Special("[vdso]", 4)));
        assert!(matches!(s.lookup(1), Lookup::Anon));
    }

    #[test]
    fn parses_perf_maps() {
        let t = "7f00 40 LHot;::spin\n7e00 10 Interpreter\nbad\n7f80 zz x\n";
        let s = Snapshot {
            perf_map: Some(parse_perf_map(t)),
            ..Default::default()
        };
        assert_eq!(s.perf_map_symbol(0x7f10), Some(("LHot;::spin", 0x10)));
        assert_eq!(s.perf_map_symbol(0x7e05), Some(("Interpreter", 5)));
        assert_eq!(s.perf_map_symbol(0x7f40), None);
        assert_eq!(s.perf_map_symbol(0x10), None);
    }
}
