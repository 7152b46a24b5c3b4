# The README's two commands: `make serve` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo serve test lint fmt deps conformance bench bench-health clean

# setup.py builds gslb.server.transport._fastpath (C) when a compiler is there: a change to it rebuilds
$(STAMP): pyproject.toml setup.py gslb/server/transport/_fastpath.c octodns_gslb/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q -e ./octodns_gslb   # the octoDNS provider, its own package (and octodns)
	touch $(STAMP)

# Debian packages the tests and the conformance run use (it installs only what is missing)
deps:
	@.ci/system-deps

demo: $(STAMP)
	$(BIN)/gslb demo

serve: $(STAMP)
	$(BIN)/gslb serve --zones zones --listen 127.0.0.1:5353

lint: $(STAMP)
	$(BIN)/ruff check gslb tests bench octodns_gslb
	$(BIN)/ruff format --check gslb tests bench octodns_gslb
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format gslb tests bench octodns_gslb
	$(BIN)/ruff check --fix gslb tests bench octodns_gslb

test: deps $(STAMP) lint
	$(BIN)/pytest -q

# ../shared/conformance against the real server, Knot DNS as the reference
conformance: $(STAMP) deps
	.ci/conformance

bench: $(STAMP)
	$(BIN)/python bench/compare.py --install

bench-health: $(STAMP)
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/prober_scale.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
