"""Ingest: what the scanner found on disk, matched against the registry and recorded.

parse.py checks listings and batches, match.py finds the torrents each listing holds,
record.py records the matches, report.py says what happened to each listing.
"""
