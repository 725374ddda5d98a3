# Build, test and lint entry points. CI runs .ci/run, which calls these.
#
#   make build        the featurestore binary into bin/
#   make test         start Redis, Kafka, S3, GCS, Azure (.ci/services.sh), go test -race ./..., stop them
#   make test-unit    go test -short ./..., no services (integration tests skip, even with CI=true)
#   make lint         gofmt check, go vet, staticcheck
#   make proto        regenerate protobuf code (protos/generate.sh)
#   make run          the embedded dev environment (in-process Kafka and Redis)
#   make bench        benchmarks against the real services into $(BENCH_OUT)
#   make bench-ingest the ingest benchmarks at the issue's size (1M events)
#   make services-up / services-down   keep the services running between test runs
#   make tidy-check   fail if `go mod tidy` would change go.mod or go.sum
#
# `make test KEEP_SERVICES=1` leaves the services running afterwards;
# `make test PKGS=./ingest/...` tests part of the tree.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
PKGS ?= ./...
# CI gives a whole run 90 minutes; the tests get at most 40 of them.
TEST_TIMEOUT ?= 40m
TEST_FLAGS ?=
BENCH_TIMEOUT ?= 60m
BENCH_OUT ?= bin/bench.txt
LOADBENCH_FLAGS ?=
KEEP_SERVICES ?= 0
STATICCHECK_VERSION := v0.8.2
SERVICES := .ci/services.sh

# with_services runs $(1) with the services up and their variables exported,
# stops them afterwards whatever happened (unless KEEP_SERVICES=1), and exits
# with $(1)'s status.
define with_services
	if [ "$(KEEP_SERVICES)" != 1 ]; then trap '$(SERVICES) down || true' EXIT; fi; \
	$(SERVICES) up; \
	set -a; eval "$$($(SERVICES) env)"; set +a; \
	export FEATURESTORE_REQUIRE_SERVICES=1; \
	$(SERVICES) env | sed 's/^/  /'; \
	$(1)
endef

.PHONY: all build test test-unit lint fmt-check vet staticcheck proto run bench bench-ingest \
	services-up services-down services-env tidy-check

all: build

build:
	$(GO) build -o bin/featurestore .

test:
	@$(call with_services,$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(PKGS))

# Without the services' variables and outside CI mode, integration tests skip.
test-unit:
	env -u CI -u FEATURESTORE_REQUIRE_SERVICES -u FEATURESTORE_TEST_REDIS_ADDR -u FEATURESTORE_TEST_KAFKA_BROKERS -u FEATURESTORE_TEST_KAFKA_LIBS -u FEATURESTORE_TEST_PYTHON \
		-u FEATURESTORE_TEST_S3_ENDPOINT -u FEATURESTORE_TEST_GCS_ENDPOINT -u FEATURESTORE_TEST_AZURE_ENDPOINT \
		$(GO) test -short -count=1 $(TEST_FLAGS) $(PKGS)

lint: fmt-check vet staticcheck

fmt-check:
	@files=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); if [ -n "$$files" ]; then echo "gofmt needed: $$files" >&2; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

proto:
	bash protos/generate.sh

run:
	$(GO) run . dev

# bench also runs the serving load benchmark (docs/benchmarks.md): the
# binary serving 1M entities in Redis under closed-loop gRPC load, about 8
# minutes (plus 1-2 to write the entities, unless written in the last hour);
# FEATURESTORE_BENCH_LOAD_ENTITIES, _DURATION and _RUNS scale it down.
# The export benchmark against DuckDB (featurestore/export,
# BenchmarkExportVsDuckDB) runs at 5% of the issue's size by default;
# FEATURESTORE_BENCH_EXPORT_SCALE=1 runs the full size (10M events, 1M rows:
# about a minute a run on 2 CPUs, after half a minute to generate the data
# once into ~/.cache/featurestore/bench).
bench: build
	@mkdir -p $(dir $(BENCH_OUT)); \
	$(call with_services,$(GO) test -run '^$$' -bench . -benchmem -count 5 -timeout $(BENCH_TIMEOUT) $(PKGS) | tee $(BENCH_OUT); \
		$(GO) run ./serving/internal/loadbench -binary bin/featurestore $(LOADBENCH_FLAGS) | tee -a $(BENCH_OUT)); \
	echo "benchmark results in $(BENCH_OUT) (compare runs with benchstat)"

# bench-ingest takes the ingest figures (ingest/bench_test.go): a topic of
# 1,000,000 events instead of make bench's 200,000, five runs of each ingest
# benchmark, about 15 minutes on a quiet 2-core machine. Rates and CPU per
# event suffer from anything else running: compare runs of one session.
bench-ingest:
	@mkdir -p $(dir $(BENCH_OUT)); \
	$(call with_services,FEATURESTORE_BENCH_EVENTS=1000000 $(GO) test -run '^$$' -bench '^BenchmarkIngest' -benchtime 1x -benchmem -count 5 -timeout $(BENCH_TIMEOUT) ./ingest/ | tee $(BENCH_OUT)); \
	echo "benchmark results in $(BENCH_OUT) (compare runs with benchstat)"

services-up:
	@$(SERVICES) up
	@$(SERVICES) env

services-down:
	@$(SERVICES) down

services-env:
	@$(SERVICES) env

tidy-check:
	@$(GO) mod tidy -diff || { echo "go mod tidy would change go.mod/go.sum (diff above); run it and commit the result" >&2; exit 1; }
