# The README's commands: `make up` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CLUSTER ?= demo
export PATH := $(BIN):$(PATH)

.PHONY: deps up down status lint unit store integration molecule test bench clean

deps:
	@bash scripts/install-deps.sh

up: deps
	$(BIN)/clusterctl up --cluster $(CLUSTER)

down:
	$(BIN)/clusterctl down --cluster $(CLUSTER)

status:
	$(BIN)/clusterctl status --cluster $(CLUSTER)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint roles playbooks
	BIN=$(BIN) bash scripts/check-collection.sh

unit: deps
	$(BIN)/pytest -q tests/unit

store: deps
	$(BIN)/pytest -q tests/store

integration: deps
	$(BIN)/pytest -q -x --durations=30 tests/integration

molecule: deps
	for s in default failover hpc vm; do start=$$(date +%s); $(BIN)/molecule test -s $$s || exit 1; echo "molecule $$s: $$(( $$(date +%s) - start )) s"; done

# The whole suite, as CI runs it. With CI=true a skipped test fails the run unless it is
# listed in tests/allowed-skips.txt.
test: lint unit store integration molecule
	@echo "skips allowed (tests/allowed-skips.txt):"; grep -v '^#' tests/allowed-skips.txt | sed 's/^/  /'

# The benchmarks behind README's figures (JSON + tables in bench/results); about 30 minutes.
bench: deps
	$(BIN)/clusterctl bench failover --trials 5
	$(BIN)/clusterctl bench lb
	$(BIN)/clusterctl bench up --trials 3
	$(BIN)/clusterctl bench fence --trials 5
	$(BIN)/clusterctl bench scale --agents 3 --agents 10 --agents 50 --agents 100 --agents 200
