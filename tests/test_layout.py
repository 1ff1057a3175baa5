"""The layout's promises: what runs on a worker's machine never imports the coordinator."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import metainfo
import worker
from app.ids import MAX_SAFE_INT
from app.ingest.parse import MAX_BATCH_LISTINGS
from metainfo import names
from worker import scanner

ROOT = Path(__file__).resolve().parent.parent


def _modules(package: object) -> list[str]:
    name = package.__name__  # type: ignore[attr-defined]
    paths = package.__path__  # type: ignore[attr-defined]
    return [name] + [m.name for m in pkgutil.walk_packages(paths, prefix=name + ".")]


def test_worker_and_metainfo_never_import_app() -> None:
    modules = _modules(worker) + _modules(metainfo)
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'app' or m.startswith('app.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []
    assert "worker.scanner" in modules and "metainfo.torrent" in modules


def test_scanner_batch_size_is_the_coordinators_limit() -> None:
    assert scanner.MAX_BATCH_LISTINGS == MAX_BATCH_LISTINGS


def test_metainfo_safe_integer_is_the_apps() -> None:
    assert names.MAX_SAFE_INT == MAX_SAFE_INT
