# distleech: `make run` starts everything, `make test` runs the whole suite.
# Both install what they need first (idempotent: stamps skip work already done).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install debs bench-debs apt run test lint fmt bench clean

# Debian packages the tests drive (real BitTorrent clients, chromium for the browser
# tests: Playwright launches it by path, never downloads a browser) and `ip` for the
# test network namespace. Installed only when missing and only as root (CI); elsewhere
# the tests that need them say so and skip.
# (opentracker: the client tests' control run, and the benchmark's native ceiling;
# rabbitmq-server: the AMQP bridge's tests, tests/rabbitmq.py.)
DEBS := aria2 transmission-daemon transmission-cli qbittorrent-nox rtorrent opentracker \
	chromium iproute2 rabbitmq-server
DEB_BINARIES := aria2c transmission-daemon transmission-remote qbittorrent-nox rtorrent \
	opentracker chromium ip rabbitmq-server
# `make bench` also measures the npm tracker and opentracker under wrk.
BENCH_DEBS := wrk opentracker
BENCH_BINARIES := wrk opentracker

# The suite runs in a network namespace that has only loopback, so the real
# BitTorrent clients (and anything else) cannot reach or be reached from outside:
# no DHT, LSD or UPnP traffic leaves the machine. Needs root (CI) or user
# namespaces; without either, the client tests skip and say why.
NETNS := $(shell unshare --net true 2>/dev/null && echo unshare --net -- sh -c \''ip link set lo up && exec "$$@"'\' netns)

install: $(VENV)/.installed node_modules/.installed

debs:
	@$(MAKE) --no-print-directory apt PKGS="$(DEBS)" BINARIES="$(DEB_BINARIES)"

bench-debs:
	@$(MAKE) --no-print-directory apt PKGS="$(BENCH_DEBS)" BINARIES="$(BENCH_BINARIES)"

apt:
	@missing=0; for b in $(BINARIES); do PATH=$$PATH:/usr/sbin:/sbin command -v $$b >/dev/null || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages: $(PKGS)"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PKGS) >/dev/null; \
	    : "a systemd host would start Debian's opentracker service on 6969, our tracker's port"; \
	    systemctl disable --now opentracker >/dev/null 2>&1 || true; \
	    : "and Debian's rabbitmq-server on 5672 (the AMQP tests start their own broker)"; \
	    systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true; \
	    : "without systemd, its init script may have started it: stop that too"; \
	    service rabbitmq-server stop >/dev/null 2>&1 || true; \
	  else \
	    echo "note: $(PKGS) missing and not root: what needs them will skip"; \
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
	$(NETNS) $(BIN)/pytest

lint: install
	$(BIN)/ruff check app scheduler tests bench metainfo worker
	$(BIN)/ruff format --check app scheduler tests bench metainfo worker
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format app scheduler tests bench metainfo worker
	$(BIN)/ruff check --fix app scheduler tests bench metainfo worker

bench: install bench-debs
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache
