"""The `distleech` command: main.py (the entry point and its commands), tracker.py
(`distleech tracker ...`), common.py (what every command shares). Nothing else in app
imports this package.
"""
