//! Builds the kernel-side programs (`dataplane-ebpf`) with the pinned nightly
//! and bpf-linker, so `cargo build` alone yields a loader with its programs
//! embedded.
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
        root.join("dataplane/common/src").display()
    );
    let ebpf_dir = root.join("dataplane/ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dataplane-ebpf",
            root_dir: ebpf_dir.to_str().expect("utf-8 path"),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(nightly.trim()),
    )
}
