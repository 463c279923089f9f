# lbd — one entry point for building, testing, benchmarking and the demo.
# Every target that builds first runs the idempotent setup step.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
# One profile for tests, benches and the demo, so everything builds once.
PROFILE := --release
STAMP := target/.setup-stamp

.PHONY: all setup build test lint fmt bench bench-dataplane demo demo-clean demo-dataplane clean tracer-static bench-tracer bench-bgp-speaker bench-bgp bench-flowmark bench-topology lab-bins packages bench-storage

all: build

# Re-run setup when its inputs change (or the stamp is missing): a second run
# is cheap anyway, the stamp just keeps it quiet.
$(STAMP): scripts/setup.sh rust-toolchain.toml ebpf-toolchain
	./scripts/setup.sh
	@mkdir -p target && touch $@

setup:
	./scripts/setup.sh
	@mkdir -p target && touch $(STAMP)

build: $(STAMP)
	$(CARGO) build $(PROFILE) --all-targets

lint: $(STAMP)
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(PROFILE) --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# All tests run against the real kernel (root, netns, XDP, real routers),
# in a cgroup of their own: a process a test leaves running fails the run.
test: $(STAMP)
	./scripts/no-leftovers.sh $(CARGO) test $(PROFILE) --no-fail-fast
	$(MAKE) lint
	$(MAKE) tracer-static

bench: bench-dataplane bench-tracer bench-bgp-speaker bench-flowmark bench-topology bench-storage

# lbd-trace as operators get it: one static musl binary, non-PIE so that
# `file` says "statically linked" (see docs/tracer.md).
# Honour CARGO_TARGET_DIR when it is set (the build goes there).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
TRACER_STATIC := $(TARGET_DIR)/x86_64-unknown-linux-musl/release/lbd-trace
tracer-static: $(STAMP)
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static -C strip=debuginfo" \
	  $(CARGO) build $(PROFILE) --target x86_64-unknown-linux-musl -p tracer --bin lbd-trace
	./tracer/check-static.sh $(TRACER_STATIC)

# .deb and .rpm packages of lbd, flowmark and lbd-trace in target/packages/
# (packaging/build.sh, docs/packaging.md).
packages: tracer-static
	./packaging/build.sh

bench-tracer: tracer-static
	$(CARGO) build $(PROFILE) -p tracer --bin tracer-bench
	./target/release/tracer-bench --tracer $(TRACER_STATIC) --out target/bench/tracer.json

# FRR in network namespaces; FRR as node speaker is the baseline.
bench-bgp-speaker: $(STAMP)
	$(CARGO) bench -p bgp-speaker --bench bgp -- --out $(CURDIR)/target/bench/bgp-speaker.json

# The issue names the file bgp.json; the convention names it after the
# component: write both.
bench-bgp: bench-bgp-speaker
	cp target/bench/bgp-speaker.json target/bench/bgp.json

# Per-packet cost of the tc egress marker (BPF_PROG_TEST_RUN vs a trivial
# program) and iperf3 marked/unmarked over a veth pair, in one run.
bench-flowmark: $(STAMP)
	$(CARGO) run $(PROFILE) -p flowmark --bin flowmark-bench -- --out target/bench/flowmark.json

# storage-front node to node over a veth: PUT/GET baseline, PUT with
# checksum, TPC pull/push (SF_BENCH_MB, SF_BENCH_ROUNDS to shrink).
bench-storage: $(STAMP)
	$(CARGO) bench -p storage-front --bench storage -- --out $(CURDIR)/target/bench/storage.json

bench-dataplane: $(STAMP)
	$(CARGO) run $(PROFILE) -p lab --bin dataplane-bench -- --out target/bench/dataplane.json
	$(CARGO) run $(PROFILE) -p lab --bin dataplane-throughput -- --out target/bench/dataplane-throughput.json

# The storage-site lab (topology-tests/): lbd-lab and the lbd it starts.
SITE := configs/topology/site.toml
LBD_LAB := $(TARGET_DIR)/release/lbd-lab
lab-bins: $(STAMP)
	$(CARGO) build $(PROFILE) -p lbd -p topology-tests -p storage-front -p flowmark --bins

# The live site: FRR router with ECMP, 3 lbd nodes with nginx WebDAV,
# transfers through the VIPs, `lbd status`, a drain and undrain, a TPC
# push with a SciTag to a foreign xrootd site (collector counters), a report.
demo: lab-bins
	$(LBD_LAB) demo $(SITE)

# Removes what an interrupted demo left behind (the demo refuses to start over it).
demo-clean: lab-bins
	$(LBD_LAB) down $(SITE)

# The dataplane alone (namespaces, Linux ECMP router, XDP, no daemon).
demo-dataplane: $(STAMP)
	$(CARGO) run $(PROFILE) -p lab --bin dataplane-demo

# The seven scenarios in a fresh lab each: target/bench/topology.json.
bench-topology: lab-bins
	$(LBD_LAB) bench $(SITE) --out target/bench/topology.json

clean:
	$(CARGO) clean
