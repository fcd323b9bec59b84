# tupper: a btrfs proxy snapshotter and a runc-free runtime v2 shim for containerd.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/tupper/tupper/version.Version=$(VERSION)
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)

.PHONY: all build test demo demo-down bench clean deps proto fuzz critest

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

deps:
	hack/install-deps.sh

test: deps build
	hack/test.sh

demo: deps build
	hack/demo.sh up

demo-down:
	hack/demo.sh down

# critest offline against hack/cri.sh's CRI containerd: make critest HANDLER=runc
# (summary in _output/critest-$(HANDLER).txt; KEEP=1 leaves the stack up).
HANDLER ?= runc
critest: deps build
	hack/critest.sh $(HANDLER)

bench: deps build
	hack/bench.sh

# Longer fuzzing than the bounded run inside make test.
fuzz:
	FUZZTIME=$${FUZZTIME:-60s} hack/test.sh fuzz

# Regenerate proto/ with pinned generators (protoc-gen-go at go.mod's version).
proto:
	hack/genproto.sh

clean:
	rm -rf $(BIN)
