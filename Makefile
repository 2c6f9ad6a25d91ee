# mito: two commands do everything.
#   make demo   runs the main job on the embedded default (no database, S3 or Redis server)
#   make test   runs every check and test against real services it starts itself
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin

.PHONY: all build shims demo test faults bench vet fmt clean

all: build

## build: mito, the shim for this machine, and static shims for linux/amd64 and linux/arm64, into bin/
build: shims
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/mito ./cmd/mito-shim

## shims: static, stripped shims for linux/amd64 and linux/arm64
shims:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mito-shim-linux-amd64 ./cmd/mito-shim
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mito-shim-linux-arm64 ./cmd/mito-shim

## demo: start a coordinator on examples/inventories/local.yaml, run a few tasks, show the results
demo: build
	bash scripts/demo.sh

## test: gofmt, go vet and every test (with -race) against a PostgreSQL it starts and stops
test:
	bash .ci/test.sh

## faults: the whole fault suite (shims killed and frozen, links cut, coordinator,
## PostgreSQL and Redis down, a host partitioned, a CPU hog) on SQLite and
## PostgreSQL; rewrites the table in docs/reliability.md. About an hour; needs root.
faults:
	bash .ci/faults.sh

## bench: end-to-end throughput and latency on SQLite and PostgreSQL; see docs/benchmarks.md
bench: build
	bash bench/run.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) .demo .ci/tmp
