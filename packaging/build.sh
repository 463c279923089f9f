#!/usr/bin/env bash
# `make packages`: the lbd, flowmark, lbd-trace and storage-front packages (.deb and .rpm)
# in target/packages/, from the release binaries (and the static musl
# lbd-trace, built by `make tracer-static` first). Man pages and completions
# come from the binaries' own clap definitions (their hidden
# `generate-docs`), lbd.toml(5) from the config reference in docs/lbd.md.
# See docs/packaging.md.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
ASSETS="$TARGET/packaging"
OUT="$TARGET/packages"
CACHE="${LBD_CACHE:-$HOME/.cache/lbd}"
# The pinned packagers (scripts/setup.sh installs them).
CARGO_DEB="$CACHE/cargo-deb-$(sed -n 's/^CARGO_DEB_VERSION=//p' scripts/setup.sh)/bin/cargo-deb"
CARGO_RPM="$CACHE/cargo-generate-rpm-$(sed -n 's/^CARGO_RPM_VERSION=//p' scripts/setup.sh)/bin/cargo-generate-rpm"
MUSL=x86_64-unknown-linux-musl
VERSION="$(cargo metadata --no-deps --format-version 1 |
  jq -r '.packages[] | select(.name == "lbd") | .version')"

# The same selection as `make build` and `make test`, so nothing rebuilds
# with other features.
cargo build --release --all-targets
[[ -x "$TARGET/$MUSL/release/lbd-trace" ]] || {
  echo "build.sh: $TARGET/$MUSL/release/lbd-trace missing: run make tracer-static" >&2
  exit 1
}

rm -rf "$ASSETS" "$OUT"
mkdir -p "$OUT"

# Man pages and completions, from each binary's clap command.
"$TARGET/release/lbd" generate-docs "$ASSETS/lbd"
"$TARGET/release/flowmark" generate-docs "$ASSETS/flowmark"
"$TARGET/$MUSL/release/lbd-trace" generate-docs "$ASSETS/lbd-trace"
"$TARGET/release/storage-front" generate-docs "$ASSETS/storage-front"

# lbd.toml(5): the "Config reference" section of docs/lbd.md.
{
  printf '%% lbd.toml 5 "" "lbd %s" "File Formats"\n\n' "$VERSION"
  printf '# NAME\n\nlbd.toml - configuration of the lbd load balancer node daemon\n\n'
  printf '# SYNOPSIS\n\n/etc/lbd/lbd.toml\n\n# DESCRIPTION\n\n'
  awk '/^## Config reference/ {on = 1; next} on && /^## / {exit} on' docs/lbd.md
  printf '\n# SEE ALSO\n\n**lbd**(1), **lbd-check-config**(1), **lbd-run**(1)\n'
} >"$ASSETS/lbd/lbd.toml.md"
go-md2man -in "$ASSETS/lbd/lbd.toml.md" -out "$ASSETS/lbd/man/lbd.toml.5"
for d in lbd flowmark lbd-trace storage-front; do
  gzip -9n "$ASSETS/$d"/man/*
done

# Units as packaged: binaries in /usr/bin, docs under /usr/share/doc/PACKAGE.
mkdir -p "$ASSETS/lbd/systemd" "$ASSETS/flowmark/systemd"
sed 's|/usr/local/bin/|/usr/bin/|g; s|^# systemd unit for lbd (install as .*)\.|# systemd unit for lbd (from the lbd package).|' \
  configs/lbd/lbd.service >"$ASSETS/lbd/systemd/lbd.service"
# The drop-in for nginx.service (listener quiesce before nginx stops).
sed 's|/usr/local/bin/|/usr/bin/|g; s|^# systemd drop-in for nginx.service (install as|# systemd drop-in for nginx.service (from the lbd package; a site copy in|; s|^# /etc/systemd/system/nginx.service.d/lbd-listener.conf, then|# /etc/systemd/system/nginx.service.d/lbd-listener.conf overrides it, then|' \
  configs/lbd/nginx-lbd-listener.conf >"$ASSETS/lbd/nginx-lbd-listener.conf"
for u in flowmark flowmark-collect; do
  sed 's|/usr/local/bin/|/usr/bin/|g; s|/usr/share/doc/lbd/flowmark.md|/usr/share/doc/flowmark/flowmark.md|' \
    "configs/flowmark/$u.service" >"$ASSETS/flowmark/systemd/$u.service"
done
# cargo-deb (like dh_installsystemd) takes PACKAGE.UNIT.service for a unit
# not named after the package.
mv "$ASSETS/flowmark/systemd/flowmark-collect.service" \
  "$ASSETS/flowmark/systemd/flowmark.flowmark-collect.service"

# The nginx snippet loads flowmark.lua from where the package puts it.
sed 's|/etc/flowmark/|/usr/share/flowmark/|g; s|^# Install flowmark.lua as .*|# flowmark.lua is in /usr/share/flowmark/ (the flowmark package).|' \
  configs/flowmark/nginx-http.conf >"$ASSETS/flowmark/nginx-http.conf"

# storage-front's unit as shipped; its nginx snippet loads the Lua files
# from where the packages put them.
mkdir -p "$ASSETS/storage-front/systemd"
cp configs/storage-front/storage-front.service "$ASSETS/storage-front/systemd/"
sed 's|/etc/storage-front/|/usr/share/storage-front/|g; s|/etc/flowmark/|/usr/share/flowmark/|g; s|^# Install storage_front.lua as .*|# storage_front.lua is in /usr/share/storage-front/ (the storage-front package).|' \
  configs/storage-front/nginx-http.conf >"$ASSETS/storage-front/nginx-http.conf"

# Debian changelogs with the workspace's version (lintian wants one).
for p in lbd flowmark lbd-trace storage-front; do
  cat >"$ASSETS/$p/changelog" <<CHANGELOG
$p ($VERSION-1) unstable; urgency=medium

  * Built from the lbd workspace by make packages (docs/packaging.md).

 -- lbd developers <lbd@example.invalid>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
CHANGELOG
done

DEB=("$CARGO_DEB" --no-build --strip --fast --output "$OUT/")
"${DEB[@]}" -p lbd
"${DEB[@]}" -p flowmark
"${DEB[@]}" -p storage-front
"${DEB[@]}" -p tracer --target "$MUSL"
# cargo-deb 3.8 writes "Depends: " even when nothing is depended on (the
# static lbd-trace); policy wants no field then: drop it and repack.
repack="$ASSETS/lbd-trace/repack"
rm -rf "$repack"
dpkg-deb -R "$OUT/lbd-trace_$VERSION-1_amd64.deb" "$repack"
sed -i '/^Depends: *$/d' "$repack/DEBIAN/control"
dpkg-deb --root-owner-group -b "$repack" "$OUT/lbd-trace_$VERSION-1_amd64.deb" >/dev/null
rm -rf "$repack"

# The RPMs take stripped copies (cargo-deb strips its own).
strip -o "$ASSETS/lbd/lbd" "$TARGET/release/lbd"
strip -o "$ASSETS/flowmark/flowmark" "$TARGET/release/flowmark"
strip -o "$ASSETS/storage-front/storage-front" "$TARGET/release/storage-front"
for p in lbd flowmark lbd-trace storage-front; do
  crate="$p"
  [[ "$p" == lbd-trace ]] && crate=tracer
  target=()
  [[ "$p" == lbd-trace ]] && target=(--target "$MUSL")
  "$CARGO_RPM" -p "$crate" "${target[@]}" --metadata-overwrite "packaging/rpm/$p.toml" \
    --output "$OUT/"
done
ls -l "$OUT"
