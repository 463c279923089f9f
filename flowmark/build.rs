//! Builds the kernel-side program (`flowmark-ebpf`) with the pinned nightly
//! and bpf-linker, so `cargo build` alone yields a daemon with its program
//! embedded.
fn main() -> anyhow::Result<()> {
    ebpf_build::build(env!("CARGO_MANIFEST_DIR"), "flowmark-ebpf")
}
