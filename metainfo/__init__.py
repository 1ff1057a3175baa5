"""What a torrent is, read from its bytes or from a Gazelle site's JSON: no I/O, no store.

Shared by the coordinator (app/registry) and by what runs on a worker's
machine (worker/), so it imports nothing from either. What it refuses, it
raises as a ValueError of its own (metainfo.errors); the registry turns those
into the API's errors at its boundary (app/registry/parse.py).

- metainfo.torrent: .torrent files (info hash, files, piece hashes);
- metainfo.gazelle: a Gazelle `action=torrent` response;
- metainfo.names: info hashes, site torrent ids, file-path keys.
"""
