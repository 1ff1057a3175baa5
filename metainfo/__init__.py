"""What a torrent is (read from its bytes or a Gazelle site's JSON), and safe paths: no I/O.

Shared by the coordinator (app/registry) and by what runs on a worker's
machine (worker/), so it imports nothing from either. What it refuses, it
raises as a ValueError of its own (metainfo.errors); the registry turns those
into the API's errors at its boundary (app/registry/parse.py).

- metainfo.torrent: .torrent files (info hash, files, piece hashes);
- metainfo.gazelle: a Gazelle `action=torrent` response;
- metainfo.names: info hashes, site torrent ids, file-path keys;
- metainfo.paths: the rule for relative paths inside a content root (sources'
  content paths and file names), shared by the coordinator and the sync worker.
"""
