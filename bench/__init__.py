"""Benchmarks of the foundation issue: import, lease and stats.

Speed is measured, not timed: every figure is printed as a ratio against the
raw CouchDB operation measured in the same run on the same server, so a slow
or busy machine moves both sides alike. Each benchmark starts its own bundled
server on a free port in a temporary directory and removes it afterwards.

Run all of them with `python -m bench`, one with `python -m bench import`
(or `lease`, `stats`); add `--quick` (or set BENCH_QUICK=1) for a small smoke
run. Figures are also written to bench/results/<name>.json (git-ignored).
"""
