#!/usr/bin/env bash
# Checks that the lbd-trace release binary is fully static and self-contained:
# `file` says statically linked, it runs in an empty root (no libc, no
# loader, nothing but itself), and it loads and attaches its eBPF programs on
# this kernel (a 1 s whole-machine capture).
set -euo pipefail
BIN="${1:?usage: check-static.sh PATH/TO/lbd-trace}"
desc="$(file -b "$BIN")"
echo "file: $desc"
case "$desc" in
  *"statically linked"*) ;;
  *) echo "FAIL: $BIN is not statically linked" >&2; exit 1 ;;
esac
bytes=$(stat -c %s "$BIN")
echo "size: $bytes bytes ($((bytes / 1024)) KiB)"
if ((bytes >= 8 * 1024 * 1024)); then
  echo "FAIL: $BIN is $bytes bytes, the goal is under 8 MiB" >&2
  exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
cp "$BIN" "$root/lbd-trace"
chroot "$root" /lbd-trace --version
chroot "$root" /lbd-trace profile --help >/dev/null
out="$root/check.folded"
# Keep a CPU busy during the capture: an idle machine (a CI runner after
# the build) gives a whole-machine profile no samples at all.
( end=$((SECONDS + 5)); while ((SECONDS < end)); do :; done ) &
busy=$!
timeout 60 "$BIN" profile --duration 1s --freq 99 --format folded --output "$out" 2>&1 | tail -1
kill "$busy" 2>/dev/null || true
wait "$busy" 2>/dev/null || true
[[ -s "$out" ]] || { echo "FAIL: the static binary collected no stacks" >&2; exit 1; }
echo "static lbd-trace OK"
