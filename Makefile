# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_USERS ?= 10000

.PHONY: install demo demo-build serve test lint bench bench-features bench-sequential bench-gateway bench-ctr bench-basket system-deps bench-deps clean

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel (the machine's pip config finds it locally).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Binaries the tests need that pip cannot provide: redis-server (tests start a private one) and
# Debian's docker-compose (validates docker-compose.yml without an engine).
# The benchmarks also need wrk (closed-loop throughput; a Python client tops out near 250 req/s here).
# Each binary's Debian package has the binary's name.
SYSTEM_BINS := redis-server docker-compose
BENCH_BINS := $(SYSTEM_BINS) wrk
system-deps bench-deps: BINS = $(if $(filter bench-deps,$@),$(BENCH_BINS),$(SYSTEM_BINS))
system-deps bench-deps:
	@missing=""; for b in $(BINS); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing:$$missing; run 'sudo apt-get install$$missing'"; exit 1; fi; fi

demo-build: $(STAMP)
	$(BIN)/recsys demo build --users $(DEMO_USERS)

demo: demo-build
	$(BIN)/recsys demo serve --host $(HOST) --port $(PORT)

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

bench-features: $(STAMP) system-deps
	$(BIN)/python -m loadtests.bench_features

bench-sequential: $(STAMP)
	$(BIN)/python -m loadtests.bench_sequential

bench-gateway: $(STAMP) bench-deps
	$(BIN)/python -m loadtests.bench_gateway

bench-ctr: $(STAMP)
	$(BIN)/python -m loadtests.bench_ctr

bench-basket: $(STAMP)
	$(BIN)/python -m loadtests.bench_basket

bench: bench-features bench-sequential bench-gateway bench-ctr bench-basket

clean:
	rm -rf var .pytest_cache .ruff_cache
