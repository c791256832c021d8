# tcpwatch: `make run` builds and runs it, `make test` runs the whole suite.
# Both install what they need first (Debian packages for the BPF toolchain).

GO        ?= go
CLANG     ?= clang-14
BINARY    := tcpwatch
ARGS      ?=
# -p 1: the privileged tests of different packages load BPF programs and
# build namespaces; one package at a time keeps their timing honest.
# -timeout 30m: cmd/tcpwatch runs real servers and 2,000-connection outages
# for about 10 minutes, past go test's default limit.
GOTESTFLAGS ?= -count=1 -p 1 -timeout 30m
# Packages the BPF toolchain and the tests need on a fresh Debian machine
# (redis-server, postgresql, nginx, openssh-server and openssh-client: real
# servers and clients for the end-to-end tests; prometheus scrapes --metrics
# in a test; systemd: systemd-analyze verify).
DEB_PKGS  := gcc clang-14 llvm-14 libbpf-dev bpftool redis-server postgresql nginx openssh-server openssh-client prometheus systemd strace tmux apache2-utils python3 curl

# The bench and the kernel matrix: a module of their own, apart from the
# product's (they need the product's tree, the product never needs them).
TOOLS     := cmd/tools

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The servers are for the tests, which run them in namespaces on the lab's
# addresses: their packages must not start them on the host (an sshd on the
# machine's port 22, a redis on its loopback). Debian's maintainer scripts
# start services through invoke-rc.d or deb-systemd-invoke, which both ask
# /usr/sbin/policy-rc.d first; exit 101 means "action forbidden by policy"
# (init-system-helpers' README.policy-rc.d). A policy-rc.d the machine already
# has (containers ship one) is its admin's and is left as it is; the one made
# here is removed afterwards, whatever apt-get did.
.PHONY: deps
deps: ## install the BPF toolchain (clang-14, libbpf headers, bpftool) and the test servers if missing
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			trap 'rm -f /usr/sbin/policy-rc.d' EXIT; trap 'exit 130' INT TERM; \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d || exit 1; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

.PHONY: generate
generate: deps ## rebuild the BPF objects and their Go bindings (bpf2go)
	$(GO) generate ./bpf/
	$(GO) generate -C $(TOOLS) ./tcpwatch-bench/

.PHONY: check-generated
check-generated: generate ## fail if the committed BPF object or bindings are stale
	@git diff --exit-code -- bpf/ $(TOOLS)/tcpwatch-bench/ || { echo "generated BPF files are stale: run make generate and commit" >&2; exit 1; }

.PHONY: build
build: ## build ./tcpwatch, static and without cgo (no C compiler needed)
	CGO_ENABLED=0 $(GO) build -o $(BINARY) ./cmd/tcpwatch

.PHONY: run
run: build ## build and run tcpwatch as root, e.g. make run ARGS="--events -o json"
	@if [ "$$(id -u)" != 0 ]; then exec sudo ./$(BINARY) $(ARGS); else exec ./$(BINARY) $(ARGS); fi

.PHONY: test
test: deps otelcol ## the whole suite: vet, unit tests, and the privileged tests (run as root)
	$(GO) vet ./...
	$(GO) vet -C $(TOOLS) ./...
	$(GO) test -C $(TOOLS) $(GOTESTFLAGS) ./...
	@if [ "$$(id -u)" != 0 ]; then echo "make test: privileged tests need root: rerunning with sudo" >&2; \
		exec sudo -E env "PATH=$$PATH" $(GO) test $(GOTESTFLAGS) ./...; fi
	$(GO) test $(GOTESTFLAGS) ./...

# The OpenTelemetry Collector the OTLP tests send to (cmd/tcpwatch/otlp_test.go
# builds it too): a Go module of its own, so tcpwatch's go.mod does not carry
# the Collector; built from the module proxy alone.
.PHONY: otelcol
otelcol: ## vet and build the test collector (lab/otelcol: otelcol + OTLP receiver + file exporter)
	$(GO) -C lab/otelcol vet ./...
	$(GO) -C lab/otelcol build -o /dev/null .

.PHONY: test-unit
test-unit: ## only the tests that need no root
	$(GO) test -short $(GOTESTFLAGS) ./...
	$(GO) test -C $(TOOLS) -short $(GOTESTFLAGS) ./...

.PHONY: bench
bench: deps build ## measure tracing cost beside the floor and bpftrace; writes docs/performance.md (root, ~15 min)
	@command -v bpftrace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace >/dev/null; }
	$(GO) run -C $(TOOLS) ./tcpwatch-bench --tcpwatch ./$(BINARY) --out docs/performance.md

.PHONY: vmlinux
vmlinux: deps ## regenerate vmlinux.h from this kernel's BTF
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
	@echo "vmlinux.h regenerated from $$(uname -r)"

# The kernel matrix (issue 9): Debian's kernels under qemu, see docs/kernels.md.
KERNELS   ?= 5.10 6.1 6.12 newest
STEPS     ?= check,lab,tests
SCENARIOS ?=
SMP       ?= 2
ARCH      ?= amd64
KERNEL_PKGS := qemu-system-x86 qemu-system-arm busybox-static xz-utils zstd file

.PHONY: test-kernels
test-kernels: ## run check, the lab and the privileged tests in Debian's kernels under qemu (KERNELS="5.10 6.1 newest", ARCH=amd64|arm64); writes docs/kernels.md (arm64: docs/kernels-arm64.md)
	@missing=""; for p in $(KERNEL_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) run -C $(TOOLS) ./tcpwatch-kernels -arch $(ARCH) -kernels "$(KERNELS)" -steps "$(STEPS)" -scenarios "$(SCENARIOS)" -smp $(SMP)

.PHONY: clean
clean: ## remove build output
	rm -f $(BINARY)
	$(GO) clean -testcache

.PHONY: release
release: ## static binaries for amd64 and arm64 in dist/ (the committed bpfel object serves both)
	@mkdir -p dist
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w" -o dist/tcpwatch-linux-$$arch ./cmd/tcpwatch || exit 1; \
	done
	@cd dist && sha256sum tcpwatch-linux-* > SHA256SUMS && cat SHA256SUMS

.PHONY: image
image: release ## the container image (podman or docker), from deploy/Containerfile
	@engine=$$(command -v podman || command -v docker) || { echo "no podman or docker" >&2; exit 1; }; \
	$$engine build -f deploy/Containerfile --build-arg TARGETARCH=$$($(GO) env GOARCH) -t tcpwatch:latest .

.PHONY: soak
soak: deps build ## 10 minutes of loopback churn under tcpwatch --all, RSS every 10 s; writes docs/soak.md (root)
	$(GO) run -C $(TOOLS) ./tcpwatch-bench soak --tcpwatch ./$(BINARY) --out docs/soak.md $(SOAKARGS)

# Fuzz targets, package:function; `go test` runs their seeds (f.Add and
# testdata/fuzz/<target>), `make fuzz` explores each for FUZZTIME.
FUZZTIME ?= 30s
FUZZ_TARGETS := tracer/wire:FuzzDecode tracer/wire:FuzzReadRecording tracer/tracker:FuzzTracker \
	output:FuzzJSONOutput output:FuzzTextOutput

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s); a failure is saved under testdata/fuzz
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg; done
