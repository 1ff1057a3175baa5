"""Small factories with keyword overrides."""

from __future__ import annotations

from app.albums import import_albums


def make_albums(db, count=3, *, now, artist="Cockburn, Bruce", title="Album {i}", start_line=2):
    """Import `count` albums; return their public ids in import order."""
    rows = [(start_line + i, artist, title.format(i=i)) for i in range(count)]
    import_albums(db, rows, actor="test", now=now)
    from app.ids import normalize_key, stable_int_id

    return [stable_int_id(normalize_key(a) + "\x1f" + normalize_key(t)) for _, a, t in rows]
