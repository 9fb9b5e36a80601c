# Ecliptic: `make run` sets everything up and starts it; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TUNNELD := $(BIN)/ecliptic-tunneld

.PHONY: run test setup lint typecheck unit bench lock clean

run: setup
	$(BIN)/ecliptic serve

setup: $(STAMP)
	@scripts/setup-system.sh run
	@$(MAKE) -s $(TUNNELD)

# The gateway's SSH endpoint (Go, built from Debian's packages; see tunneld/main.go).
$(TUNNELD): tunneld/main.go scripts/build-tunneld.sh
	scripts/build-tunneld.sh $@

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

test: $(STAMP)
	@scripts/setup-system.sh test
	scripts/build-tunneld.sh $(TUNNELD) check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -x

bench: setup
	$(BIN)/python -m bench.servers

# Re-resolve the locked dependency set from pyproject.toml (needs the package index).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^ecliptic' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cache
