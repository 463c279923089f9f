//! Builds the kernel-side programs (`tracer-ebpf`) with the pinned nightly and
//! bpf-linker, so `cargo build` alone yields an `lbd-trace` with its programs
//! embedded (the one-file, nothing-to-install property rests on this).
fn main() -> anyhow::Result<()> {
    ebpf_build::build(env!("CARGO_MANIFEST_DIR"), "tracer-ebpf")
}
