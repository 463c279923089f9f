//! Builds the kernel-side programs (`dataplane-ebpf`) with the pinned nightly
//! and bpf-linker, so `cargo build` alone yields a loader with its programs
//! embedded.
fn main() -> anyhow::Result<()> {
    ebpf_build::build(env!("CARGO_MANIFEST_DIR"), "dataplane-ebpf")
}
