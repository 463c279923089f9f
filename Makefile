# lbd — one entry point for building, testing, benchmarking and the demo.
# Every target that builds first runs the idempotent setup step.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
# One profile for tests, benches and the demo, so everything builds once.
PROFILE := --release
STAMP := target/.setup-stamp

.PHONY: all setup build test lint fmt bench bench-dataplane demo clean

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

# All tests run against the real kernel (root, netns, XDP, real routers).
test: $(STAMP)
	$(CARGO) test $(PROFILE) --no-fail-fast
	$(MAKE) lint

bench: bench-dataplane

bench-dataplane: $(STAMP)
	$(CARGO) run $(PROFILE) -p dataplane --bin dataplane-bench -- --out target/bench/dataplane.json

demo: $(STAMP)
	$(CARGO) build $(PROFILE) -p dataplane --bins
	./dataplane/demo/run.sh

clean:
	$(CARGO) clean
