"""Piece verification (worker/verify.py) and `ingest scan --verify`: real files and torrents."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest
from click.testing import CliRunner
from factories import PTH, db_snapshot, make_download_task
from torrent_factories import (
    PIECE,
    app,  # noqa: F401  (the app with the torrents blueprint)
    gazelle,
    info_hash_of,
    listing_of,
    make_torrent,
    server_url,  # noqa: F401
    sizes_of,
    upload_file,
    upload_gazelle,
    write_files,
)

from app.queues.downloads import task_doc_id
from app.registry.keys import torrent_doc_id
from metainfo.torrent import parse_torrent_file
from worker.scanner import ingest as ingest_group
from worker.verify import LayoutEntry, layout_for, verify_pieces

# File sizes that are not multiples of the piece size, so pieces span file boundaries.
ALBUM = {"01.flac": 40_000, "02.flac": 33_333, "CD2/03.flac": 20_001, "empty.txt": b""}


@pytest.fixture
def album(tmp_path):
    root = write_files(tmp_path / "Album", ALBUM)
    data = make_torrent(root, empty_files=("empty.txt",))
    return root, parse_torrent_file(data)


def check(root, parsed, **kwargs):
    layout = layout_for(parsed, root, "directory", [path for path, _ in sizes_of(root)])
    assert layout is not None
    return verify_pieces(layout, parsed.piece_length, parsed.pieces, **kwargs)


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_good_data_verifies(album):
    root, parsed = album
    seen = []
    result = check(root, parsed, progress=seen.append)
    assert result.status == "verified"
    assert result.pieces == parsed.piece_count == -(-93_334 // PIECE)
    assert result.bytes_read == sum(seen) == 93_334
    assert result.as_verification() == {"status": "verified", "pieces": result.pieces}


@pytest.mark.parametrize("chunk", [1000, PIECE, 1 << 20])
def test_one_flipped_byte_fails_at_its_piece(album, chunk):
    root, parsed = album
    offset_in_file = 5_000
    flip_byte(root / "02.flac", offset_in_file)
    result = check(root, parsed, chunk_bytes=chunk)
    stream_offset = 40_000 + offset_in_file  # the files are read in torrent order
    assert result.status == "failed"
    assert result.piece == stream_offset // PIECE == 2
    assert result.files == ["01.flac", "02.flac"]  # piece 2 starts in 01.flac
    assert result.as_verification() == {"status": "failed", "pieces": 6, "piece": 2}


def test_a_flipped_byte_in_the_last_short_piece(album):
    root, parsed = album
    flip_byte(root / "CD2" / "03.flac", 20_000)  # the very last byte
    result = check(root, parsed)
    assert (result.status, result.piece) == ("failed", parsed.piece_count - 1)


def test_a_file_shorter_than_the_torrent_says(album):
    root, parsed = album
    layout = layout_for(parsed, root, "directory", [p for p, _ in sizes_of(root)])
    (root / "CD2" / "03.flac").write_bytes(b"x" * 100)
    result = verify_pieces(layout, parsed.piece_length, parsed.pieces)
    assert result.status == "failed"
    assert result.piece == (40_000 + 33_333) // PIECE
    assert "shorter" in result.reason
    (root / "CD2" / "03.flac").unlink()
    missing = verify_pieces(layout, parsed.piece_length, parsed.pieces)
    assert missing.status == "failed" and "cannot be read" in missing.reason


def test_padding_is_read_as_zeros(tmp_path):
    data = bytes(range(256)) * 100  # 25,600 bytes, then 7,168 bytes of padding
    (tmp_path / "a.bin").write_bytes(data)
    stream = data + bytes(PIECE * 2 - len(data)) + b"tail"
    pieces = b"".join(
        hashlib.sha1(stream[i : i + PIECE]).digest() for i in range(0, len(stream), PIECE)
    )
    layout = [
        LayoutEntry("a.bin", tmp_path / "a.bin", len(data)),
        LayoutEntry(".pad/7168", None, PIECE * 2 - len(data)),
        LayoutEntry("b.bin", tmp_path / "b.bin", 4),
    ]
    (tmp_path / "b.bin").write_bytes(b"tail")
    assert verify_pieces(layout, PIECE, pieces).status == "verified"


def test_hashes_that_do_not_fit_are_not_verifiable(album):
    root, parsed = album
    layout = layout_for(parsed, root, "directory", [p for p, _ in sizes_of(root)])
    result = verify_pieces(layout, parsed.piece_length, parsed.pieces[:-20])
    assert result.status == "not_verifiable"


def test_memory_stays_constant(tmp_path):
    big = tmp_path / "Big"
    big.mkdir()
    with (big / "big.bin").open("wb") as fh:
        fh.truncate(48 << 20)  # 48 MiB of zeros (sparse: quick to make)
    parsed = parse_torrent_file(make_torrent(big))
    layout = layout_for(parsed, big, "directory", ["big.bin"])
    tracemalloc.start()
    try:
        result = verify_pieces(layout, parsed.piece_length, parsed.pieces)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "verified"
    assert peak < 3 << 20  # the 1 MiB buffer and small change, not the 48 MiB read


# ---------------------------------------------------------------- recorded through the API


def send(client, headers, listing):
    response = client.post("/api/ingest", json=listing, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_failed_verification_is_recorded_once_and_is_no_match(client, db, worker, clock, album):
    root, parsed = album
    make_download_task(db, 37, now=clock())
    upload_file(
        client, worker, make_torrent(root, empty_files=("empty.txt",)), site=PTH, torrent_id=37
    )
    failed = {parsed.info_hash: {"status": "failed", "piece": 2, "pieces": 6}}
    report = send(client, worker, listing_of(root, verified=failed))
    assert report["outcome"] == "no_match"
    assert report["rejected"][0]["reasons"] == [
        {"problem": "verification_failed", "status": "failed", "piece": 2, "pieces": 6}
    ]
    torrent = db.get(torrent_doc_id(parsed.info_hash))
    assert torrent["last_failed_verification"]["piece"] == 2
    assert torrent["location"] is None
    assert db.get(task_doc_id(PTH, 37))["state"] == "ready"
    before = db_snapshot(db)
    send(client, worker, listing_of(root, verified=failed))
    assert db_snapshot(db) == before
    # repaired data verifies: now it is located, verified
    good = {parsed.info_hash: {"status": "verified", "pieces": 6}}
    assert send(client, worker, listing_of(root, verified=good))["outcome"] == "matched"
    location = db.get(torrent_doc_id(parsed.info_hash))["location"]
    assert location["verified"] == {"status": "verified", "pieces": 6}
    # an unverified rescan keeps the verification; a later failure there shows on the location
    before = db_snapshot(db)
    send(client, worker, listing_of(root))
    assert db_snapshot(db) == before
    send(client, worker, listing_of(root, verified=failed))
    location = db.get(torrent_doc_id(parsed.info_hash))["location"]
    assert location["verified"] == {"status": "failed", "piece": 2}


# ---------------------------------------------------------------- the scanner


def resized(layout, delta):
    """The same names with other sizes: a layout no other torrent of the test shares."""
    return {name: size + delta if isinstance(size, int) else size for name, size in layout.items()}


def run_scan(url, token, *args):
    return CliRunner().invoke(
        ingest_group, ["scan", *map(str, args), "--server", url, "--token", token]
    )


def test_scan_verify_records_verified_failed_and_unverifiable(
    client,
    db,
    worker,
    worker_token,
    clock,
    server_url,  # noqa: F811
    tmp_path,
):
    volume = tmp_path / "ingest"
    good = write_files(volume / "Good", ALBUM, seed=1)
    bad = write_files(volume / "Bad", resized(ALBUM, 1), seed=2)
    loose = write_files(volume / "Loose", resized(ALBUM, 2), seed=3)
    hashes = {}
    for torrent_id, root in ((1, good), (2, bad)):
        make_download_task(db, torrent_id, now=clock())
        data = make_torrent(root, empty_files=("empty.txt",))
        assert upload_file(client, worker, data, site=PTH, torrent_id=torrent_id).status_code == 201
        hashes[root.name] = info_hash_of(data)
    make_download_task(db, 3, now=clock())
    no_file = gazelle(3, sizes_of(loose), top="Loose", info_hash="cc" * 20)
    assert upload_gazelle(client, worker, PTH, no_file).status_code == 201
    flip_byte(bad / "CD2" / "03.flac", 100)
    result = run_scan(server_url, worker_token, volume, "--verify")
    assert result.exit_code == 0, result.output
    assert "failed at piece 4" in result.output
    located = db.get(torrent_doc_id(hashes["Good"]))["location"]
    assert located["path"] == str(good)
    assert located["verified"] == {"status": "verified", "pieces": 6}
    assert db.get(task_doc_id(PTH, 1))["state"] == "done"
    bad_doc = db.get(torrent_doc_id(hashes["Bad"]))
    assert bad_doc["location"] is None
    assert bad_doc["last_failed_verification"]["piece"] == 4
    assert db.get(task_doc_id(PTH, 2))["state"] == "ready"
    loose_doc = db.get(torrent_doc_id("cc" * 20))
    assert loose_doc["location"]["verified"]["status"] == "not_verifiable"
    assert db.get(task_doc_id(PTH, 3))["state"] == "done"
    # verifying again records nothing new
    before = db_snapshot(db)
    assert run_scan(server_url, worker_token, volume, "--verify").exit_code == 0
    assert db_snapshot(db) == before
