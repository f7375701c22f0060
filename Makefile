# respawn — build, run and test. `make run` and `make test` are all a fresh
# clone needs (Go 1.26 on the PATH).
GO      ?= go
BIN     := bin
CONFIG  ?= configs/world.yaml
# Each fuzz target runs this long in `make test` (plus ~6 s to build and
# replay its corpus): 14 targets, and `make test` must stay under 10 minutes
# on 2 cores. Fuzz longer by hand: make fuzz FUZZTIME=5m.
FUZZTIME ?= 2s
# The build version every binary reports (`respawn status`, `BIN version`).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/respawn-dev/respawn/internal/version.build=$(VERSION)

.PHONY: build run test test-unit fuzz bench vet fmt clean screenshots

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

run: build
	$(BIN)/respawn up --config $(CONFIG)

# Unit and integration tests (the integration tests build and start the real
# binaries themselves), then every fuzz target briefly.
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) fuzz

fuzz:
	@set -e; grep -rHoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+' internal | sed 's/:func / /' | sort -u | \
	while read -r file target; do \
		pkg=./$$(dirname $$file); \
		echo "fuzz $$target in $$pkg for $(FUZZTIME)"; \
		if ! out=$$($(GO) test -run='^$$' -fuzz="^$$target$$" -fuzztime=$(FUZZTIME) -parallel=1 $$pkg 2>&1); then \
			echo "$$out"; \
			echo "$$out" | grep -q 'context deadline exceeded' || exit 1; \
			echo "retry $$target: the fuzzer timed out a worker, not an input (a failing input would be saved and fail again)"; \
			$(GO) test -run='^$$' -fuzz="^$$target$$" -fuzztime=$(FUZZTIME) -parallel=1 $$pkg; \
		else echo "$$out" | tail -2; fi; \
	done

# Every benchmark of the project, then docs/BENCHMARKS.md written from
# scratch (cmd/benchreport; notes in docs/benchmarks-notes.md). About 3
# minutes on 2 cores; it prints how long it took. BENCH_FLAGS passes flags,
# e.g. BENCH_FLAGS='-suites micro,replica' for the quick part alone.
bench: build
	$(GO) run ./cmd/benchreport $(BENCH_FLAGS)

# The browser test, saving its screenshots into docs/screenshots/ (linked
# from the README); needs Debian's chromium.
screenshots:
	RESPAWN_SCREENSHOTS=1 $(GO) test -count=1 -run 'TestBrowser' ./internal/e2e

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
