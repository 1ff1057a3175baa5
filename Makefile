# distleech: `make run` starts everything, `make test` runs the whole suite.
# Both install what they need first (idempotent: stamps skip work already done).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install debs run test lint fmt bench clean

# Debian packages the tests drive (real BitTorrent clients). Installed only when
# missing and only as root (CI); elsewhere the tests that need them say so and skip.
DEBS := aria2 transmission-daemon
DEB_BINARIES := aria2c transmission-daemon

install: $(VENV)/.installed node_modules/.installed

debs:
	@missing=0; for b in $(DEB_BINARIES); do command -v $$b >/dev/null || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages: $(DEBS)"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS) >/dev/null; \
	  else \
	    echo "note: $(DEBS) missing and not root: the tests that need them will skip"; \
	  fi; \
	fi

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

test: install debs
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
