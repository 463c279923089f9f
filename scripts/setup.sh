#!/usr/bin/env bash
# One idempotent setup step shared by `make demo`, `make test` and `make bench`:
# brings a fresh machine of this kind (Debian 12, kernel 6.18, root) to a
# working build. A second run costs seconds: every step checks before it acts,
# and bpf-linker is cached keyed on the nightly date it was linked against.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STABLE="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
NIGHTLY="$(cat "$ROOT/ebpf-toolchain")"
CACHE="${LBD_CACHE:-$HOME/.cache/lbd}"
LINKER_ROOT="$CACHE/bpf-linker-0.13.0-$NIGHTLY"
BPF_LINKER_VERSION=0.13.0
# The packagers of `make packages` (packaging/build.sh reads these pins).
CARGO_DEB_VERSION=3.8.0
CARGO_RPM_VERSION=0.21.1

APT_PACKAGES=(frr frr-pythontools bird2 nginx libnginx-mod-http-dav-ext
  libnginx-mod-http-lua musl-tools jq curl ethtool tcpdump iproute2 python3
  gcc file openjdk-17-jdk-headless linux-perf
  lua-cjson iperf3 openssl systemd
  rpm lintian prometheus go-md2man
  gfal2-util-scripts python3-gfal2-util gfal2-plugin-http gfal2-plugin-file davix xrootd-server)

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

step "Debian packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packaged daemons must not run on the host: tests start their own
  # instances inside network namespaces.
  for svc in frr bird nginx prometheus; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

step "Rust toolchains ($STABLE, $NIGHTLY)"
rustup toolchain list | grep -q "^$STABLE" ||
  rustup toolchain install "$STABLE" --profile minimal \
    --component rustfmt,clippy --target x86_64-unknown-linux-musl
rustup target list --toolchain "$STABLE" --installed | grep -q x86_64-unknown-linux-musl ||
  rustup target add --toolchain "$STABLE" x86_64-unknown-linux-musl
rustup toolchain list | grep -q "^$NIGHTLY" ||
  rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
rustup component list --toolchain "$NIGHTLY" --installed | grep -q rust-src ||
  rustup component add --toolchain "$NIGHTLY" rust-src

step "bpf-linker $BPF_LINKER_VERSION linked against $NIGHTLY's LLVM"
if [[ ! -x "$LINKER_ROOT/bin/bpf-linker" ]]; then
  # A plain `cargo install bpf-linker` finds Debian's llvm-14 and fails; link
  # against the nightly's own libLLVM instead (see docs/build.md).
  SYSROOT="$(rustup run "$NIGHTLY" rustc --print sysroot)"
  N="$(rustup run "$NIGHTLY" rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
  LIB="$(cd "$SYSROOT/lib" && ls libLLVM-*-rust-*.so | sed 's/^lib//;s/\.so$//')"
  RUSTFLAGS="-C link-arg=-L$SYSROOT/lib -C link-arg=-l$LIB -C link-arg=-Wl,-rpath,$SYSROOT/lib" \
    rustup run "$STABLE" cargo install --locked --root "$LINKER_ROOT" \
      "bpf-linker@$BPF_LINKER_VERSION" --no-default-features \
      --features "llvm-$N,no-llvm-linking"
fi
mkdir -p "$HOME/.cargo/bin"
ln -sf "$LINKER_ROOT/bin/bpf-linker" "$HOME/.cargo/bin/bpf-linker"

step "packagers: cargo-deb $CARGO_DEB_VERSION, cargo-generate-rpm $CARGO_RPM_VERSION"
# Cached per version like bpf-linker; cargo-deb without its bundled liblzma
# (the packages are compressed by its pure-Rust encoders).
[[ -x "$CACHE/cargo-deb-$CARGO_DEB_VERSION/bin/cargo-deb" ]] ||
  rustup run "$STABLE" cargo install --locked --root "$CACHE/cargo-deb-$CARGO_DEB_VERSION" \
    "cargo-deb@$CARGO_DEB_VERSION" --no-default-features
[[ -x "$CACHE/cargo-generate-rpm-$CARGO_RPM_VERSION/bin/cargo-generate-rpm" ]] ||
  rustup run "$STABLE" cargo install --locked --root "$CACHE/cargo-generate-rpm-$CARGO_RPM_VERSION" \
    "cargo-generate-rpm@$CARGO_RPM_VERSION"

step "bpffs and tracefs"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || true

echo "setup complete"
