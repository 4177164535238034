# kmsfs build, test and demo targets. See README.md.
#   make demo   build and run the main job end to end on the local KMS
#   make test   unit and integration tests (real FUSE mounts), with -race
#   make lint   go vet, staticcheck, gofmt, go mod tidy unchanged

GO          ?= go
GOBIN_DIR   := $(shell $(GO) env GOPATH)/bin
STATICCHECK ?= $(GOBIN_DIR)/staticcheck
TEST_TIMEOUT ?= 15m
TESTFLAGS   ?=

.PHONY: all build test test-unit lint deps demo clean fuzz endurance

all: build

build:
	$(GO) build -o bin/kmsfs ./cmd/kmsfs

# deps installs fuse3, attr and fio when missing and running as root;
# otherwise it fails and lists what is missing.
deps:
	bash .ci/deps.sh

# Everything, integration tests included (they mount for real).
test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./...

# Only the packages that need no FUSE, no root and no OS tools.
test-unit:
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(TESTFLAGS) $$($(GO) list ./... | grep -v /integration)

lint:
	$(GO) vet ./...
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff

# fuzz runs every fuzz target for FUZZTIME (default 10s) each, about 1.5
# minutes in all, and fails when a target has no checked-in seed corpus.
fuzz:
	bash .ci/fuzz.sh

# endurance runs the differential tests at 200,000 operations with the
# daemon's memory sampled (integration/endurance_test.go): about 5 minutes.
endurance: deps
	KMSFS_ENDURANCE=1 $(GO) test -race -count=1 -timeout 60m -run 'TestEndurance' -v ./integration/

demo: deps build
	bash .ci/demo.sh

clean:
	rm -rf bin

# bench runs fio, metadata and listing jobs on the plain disk, the go-fuse
# ceiling, gocryptfs and kmsfs (local and AWS key service, plaintext names,
# zstd compression, and shared mode with two mounts of one tree, which
# also run randwrite-2m's two writers), 5 interleaved rounds, then the
# disk-space comparison of bench-du at full size: about 1 h 15 min on 2
# vCPU. bench-quick is one short round of every job (~3 minutes). Both
# want root (to drop caches) and an idle machine. See bench/README.md.
.PHONY: bench bench-quick bench-du
bench:
	bash bench/deps.sh
	$(GO) run ./bench
	$(GO) run ./bench -du

bench-quick:
	bash bench/deps.sh
	$(GO) run ./bench -quick

# bench-du: disk space (du) of Go's source tree and of random data in
# CIPHERDIRs with compression none, s2 and zstd at 4, 16 and 64 KiB chunks.
bench-du:
	bash bench/deps.sh
	$(GO) run ./bench -du -quick
