"""Storage status (Patchwork's storage statistics): what the records say is on each content
root and ingest volume, free space, and what a check found missing on disk."""
