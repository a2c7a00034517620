# LGSP Hub — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

# The pinned dependencies, then the lookup service's hot modules compiled (hub/speedups.py; rebuilt
# when their sources change, skipped when a fresh build is there).
setup: $(STAMP)
	@$(BIN)/python -P hub/speedups.py ensure

# Install the project and its pinned dependencies into a local virtual environment.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/hub demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/sandbox.py --scale 1

clean:
	-$(BIN)/python -P hub/speedups.py clean
	rm -rf $(VENV) .hub .pytest_cache build
