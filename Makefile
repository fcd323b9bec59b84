# tupper: a btrfs proxy snapshotter and a runc-free runtime v2 shim for containerd.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/tupper/tupper/version.Version=$(VERSION)
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)

.PHONY: all build test test-vm demo demo-down bench clean deps proto fuzz stress load critest installer-image

all: build

# The shim, its helper and tupper-run are linked statically (libc and
# libseccomp included): each container costs four execs (the shim's start,
# daemon and delete, and tupper-helper, which the shim finds next to
# itself), the dynamic loader's work was 0.7 ms of each, and ~1.3 MiB of
# each shim's RSS was libc. The libc is musl: glibc's static start-up reads
# the CPU's cache sizes through ~55 CPUID instructions, and on a virtual
# machine every CPUID traps to the hypervisor (0.6 ms per exec on the
# benchmark machine). libseccomp for musl is in MUSL_PREFIX
# (hack/install-deps.sh). osusergo,netgo keep Go off the libc's NSS. Go's
# threads get the libc's default stack, where cgo calls (libseccomp) run:
# musl's is 128 KiB unless the binary names one, so it names glibc's 8 MiB
# (address space only, touched as used).
MUSL_PREFIX ?= /usr/local/lib/tupper-musl
MUSL := CC=musl-gcc PKG_CONFIG_LIBDIR=$(MUSL_PREFIX)/lib/pkgconfig CGO_CFLAGS='-O2 -I$(MUSL_PREFIX)/include' CGO_LDFLAGS='-L$(MUSL_PREFIX)/lib'
STATIC_LDFLAGS := -ldflags '$(LDFLAGS) -linkmode external -extldflags "-static -Wl,-z,stack-size=8388608"'
STATIC := -tags osusergo,netgo $(STATIC_LDFLAGS)
# tupper-helper also leaves out CRIU (tupper_nocriu, see shim/container's
# doc.go), which it never uses and whose package init it would run at each
# start. cmd/tupper-helper's TestHelperLinksLittle reads this line.
HELPER_TAGS := osusergo,netgo,tupper_nocriu

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/containerd-tupper-snapshotter
	@test -f $(MUSL_PREFIX)/lib/pkgconfig/libseccomp.pc || { echo "no libseccomp for musl in $(MUSL_PREFIX): run make deps" >&2; exit 1; }
	$(MUSL) $(GO) build $(STATIC) -o $(BIN)/ ./cmd/containerd-shim-tupper-v2 ./cmd/tupper-run
	$(MUSL) $(GO) build -tags $(HELPER_TAGS) $(STATIC_LDFLAGS) -o $(BIN)/ ./cmd/tupper-helper

deps:
	hack/install-deps.sh
	hack/install-cri.sh

test: deps build
	hack/test.sh

# The VM part of make test alone: the shim, CRI and snapshotter suites in a
# QEMU guest on cgroup v2 with systemd as PID 1 (hack/vm, hack/README.md).
test-vm: deps build
	hack/vm/vm.sh test

demo: deps build
	hack/demo.sh up

demo-down:
	hack/demo.sh down

# critest offline against hack/cri.sh's CRI containerd: make critest HANDLER=runc
# (summary in _output/critest-$(HANDLER).txt; KEEP=1 leaves the stack up).
HANDLER ?= runc
critest: deps build
	hack/critest.sh $(HANDLER)

# The bench's start latency floor (hack/noopshim) is built as the shim is.
bench: deps build
	$(MUSL) $(GO) build $(STATIC) -o _output/bin/containerd-shim-noop-v2 ./hack/noopshim
	hack/bench.sh

# The Kubernetes node installer's image (deploy/kubernetes/installer.yaml),
# an OCI archive in _output/ for ctr import or any registry.
installer-image: build
	hack/installer-image.sh

# Longer fuzzing than the bounded run inside make test.
fuzz:
	FUZZTIME=$${FUZZTIME:-2000000x} hack/test.sh fuzz

# The long snapshotter crash stress run (make test runs 300 operations).
stress:
	TUPPER_STRESS_OPS=$${TUPPER_STRESS_OPS:-2000} $(GO) test -count=1 -v -timeout 30m -run 'TestStressKilledDaemon' ./snapshotter/

# The full load test: 200 containers, 8 at a time, three rounds (make test runs 24 x 1).
load: build
	TUPPER_LOAD_CONTAINERS=$${TUPPER_LOAD_CONTAINERS:-200} TUPPER_LOAD_ROUNDS=$${TUPPER_LOAD_ROUNDS:-3} \
		$(GO) test -count=1 -v -timeout 30m -run 'TestLoad' ./integration/

# Regenerate proto/ with pinned generators (protoc-gen-go at go.mod's version).
proto:
	hack/genproto.sh

clean:
	rm -rf $(BIN)
