# distleech: `make run` starts everything, `make test` runs the whole suite.
# Both install what they need first (idempotent: stamps skip work already done).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint fmt bench clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "distleech needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

run: install
	$(BIN)/distleech run

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check app scheduler tests bench
	$(BIN)/ruff format --check app scheduler tests bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format app scheduler tests bench
	$(BIN)/ruff check --fix app scheduler tests bench

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache
