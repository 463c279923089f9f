//! `lbd-trace`: a fully static eBPF profiler for lbd's storage nodes.
//!
//! One file an operator copies to a node: the eBPF programs are embedded,
//! symbolization (blazesym) and flamegraphs (inferno) are linked in, nothing
//! is needed on the host but a kernel with BTF. Layout:
//! - [`filter`]: the task filters (PIDs, threads, cgroup, command name) and
//!   the kernel-side [`tracer_common::Config`] they become.
//! - [`bpf`]: loads the embedded object, attaches the programs a command
//!   needs, reads the maps back.
//! - [`capture`]: the capture loop (duration, Ctrl-C, live line, targets
//!   exiting) and the process snapshots taken when a process is first seen.
//! - [`procs`]: what a process snapshot holds (executable mappings with open
//!   files, JIT perf map), so processes that exit mid-capture still symbolize.
//! - [`symbolize`]: stack ids to frames with blazesym (ELF/DWARF/inlined,
//!   kallsyms, perf maps).
//! - [`output`]: folded stacks, SVG flamegraphs, differential flamegraphs.
//! - [`pprof`]: the pprof protobuf (gzip) writer and reader.
//! - [`latency`]: log2 histograms and their percentiles.
//! - [`unwind`]: DWARF-mode user stacks (copied stack window + registers)
//!   unwound with framehop from each file's .eh_frame/.debug_frame.
pub mod bpf;
pub mod capture;
pub mod duration;
pub mod filter;
pub mod latency;
pub mod output;
pub mod pprof;
pub mod procs;
pub mod symbolize;
pub mod unwind;
