"""The torrent registry: what workers learned about torrents, merged into one aggregate each.

A torrent is `torrent:<info hash, lower-case hex>`. Workers upload a site's
Gazelle `action=torrent` response (group + torrent) and/or the `.torrent` file
itself; every upload of the same torrent (same info hash, or the same site and
torrent id) merges into the one aggregate, and an upload that teaches nothing
new records nothing. The `.torrent` is kept apart, as an immutable
content-addressed document `torrentfile:<info hash>`: its piece hashes are
only needed to verify data, and they would make every view read heavy.

Keys that views emit are computed here, in Python, and stored in the
projection (`files[].key`, `match_dir`, `search_tokens`), so that matching
never depends on JavaScript's idea of case folding, and every server sees
the same keys. They are only ever looked up exactly (never ranged), because
the bundled server collates by code point and CouchDB by ICU.

- keys.py: document ids, states, info hashes, site refs, search tokens;
- parse.py: metainfo's parsers, their errors translated into the API's;
- aggregate.py: uploads, the decisions they lead to, and the projectors;
- register.py: registering uploads, marking torrents unavailable;
- queries.py: reads (a torrent, by site, reseed, search, the stored .torrent).
"""
