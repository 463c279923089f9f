//! Builds the kernel-side programs (`tracer-ebpf`) with the pinned nightly and
//! bpf-linker, so `cargo build` alone yields an `lbd-trace` with its programs
//! embedded (the one-file, nothing-to-install property rests on this).
use std::{fs, path::Path};

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let nightly = fs::read_to_string(root.join("ebpf-toolchain"))?;
    println!(
        "cargo::rerun-if-changed={}",
        root.join("ebpf-toolchain").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        root.join("tracer/common/src").display()
    );
    let ebpf_dir = root.join("tracer/ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: ebpf_dir.to_str().expect("utf-8 path"),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(nightly.trim()),
    )
}
