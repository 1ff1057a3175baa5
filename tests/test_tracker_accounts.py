"""The tracker's directory (tracked torrents, tracker users, whitelist) and record_activity,
against the real bundled server."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from factories import db_snapshot, event_ids

from app.cli.main import main as distleech
from app.errors import (
    InvalidInfoHashError,
    InvalidPasskeyError,
    InvalidPrefixError,
    InvalidTorrentIdError,
    InvalidUserIdError,
    PasskeyTakenError,
    TorrentAlreadyTrackedError,
    TorrentIdTakenError,
    TorrentNotTrackedError,
    TrackerUserExistsError,
    TrackerUserNotFoundError,
    WhitelistEntryExistsError,
    WhitelistEntryNotFoundError,
)
from app.store.events import read_events
from app.store.projections import rebuild_projections
from app.tracker import accounts, activity, members

IH1, IH2, IH3 = "a" * 40, "b" * 40, "c" * 40
PK1, PK2 = "0123456789abcdef0123456789abcdef", "PasskeyNumberTwo2222"


@pytest.fixture
def who(clock):
    return {"actor": "test", "now": clock()}


@pytest.fixture
def directory(db, who):
    """Two torrents and two users, as a site would register them."""
    accounts.register_torrent(db, IH1, 1, "One", **who)
    accounts.register_torrent(db, IH2, 2, "Two", **who)
    members.register_user(db, 7, name="alice", passkey=PK1, **who)
    members.register_user(db, 8, name="bob", passkey=PK2, can_leech=False, **who)


def tracked(db, info_hash):
    return db.get(accounts.tracked_doc_id(info_hash))


def user(db, user_id):
    return db.get(accounts.tracker_user_doc_id(user_id))


# ---------------------------------------------------------------- torrents


def test_a_torrent_is_registered_unregistered_and_registered_again(db, who):
    doc = accounts.register_torrent(db, IH1.upper(), 123, " Torrent.Name-GROUP ", **who)
    assert (doc["info_hash"], doc["torrent_id"], doc["name"]) == (IH1, 123, "Torrent.Name-GROUP")
    assert (doc["source"], doc["registered"], doc["snatches"]) == ("api", True, 0)
    assert accounts.get_tracked_torrent(db, IH1)["torrent_id"] == 123
    with pytest.raises(TorrentAlreadyTrackedError):
        accounts.register_torrent(db, IH1, 123, "again", **who)
    accounts.unregister_torrent(db, IH1, **who)
    assert tracked(db, IH1)["registered"] is False
    with pytest.raises(TorrentNotTrackedError):
        accounts.get_tracked_torrent(db, IH1)
    with pytest.raises(TorrentNotTrackedError):
        accounts.unregister_torrent(db, IH1, **who)
    # the id is free again, and the torrent may come back under another one
    accounts.register_torrent(db, IH2, 123, "Other", **who)
    accounts.register_torrent(db, IH1, 124, "Back", **who)
    assert accounts.list_tracked_torrents(db) == [
        {"info_hash": IH2, "torrent_id": 123, "snatches": 0},
        {"info_hash": IH1, "torrent_id": 124, "snatches": 0},
    ]


def test_a_torrent_id_belongs_to_one_registered_torrent(db, who):
    accounts.register_torrent(db, IH1, 5, "One", **who)
    before = db_snapshot(db)
    with pytest.raises(TorrentIdTakenError) as caught:
        accounts.register_torrent(db, IH2, 5, "Two", **who)
    assert caught.value.details["info_hash"] == IH1
    assert db_snapshot(db) == before


@pytest.mark.parametrize(
    ("info_hash", "torrent_id", "error"),
    [
        ("a" * 39, 1, InvalidInfoHashError),
        ("g" * 40, 1, InvalidInfoHashError),
        (None, 1, InvalidInfoHashError),
        (IH1, -1, InvalidTorrentIdError),
        (IH1, True, InvalidTorrentIdError),
        (IH1, 2**53, InvalidTorrentIdError),
        (IH1, "5", InvalidTorrentIdError),
    ],
)
def test_bad_torrents_are_refused(db, who, info_hash, torrent_id, error):
    before = db_snapshot(db)
    with pytest.raises(error):
        accounts.register_torrent(db, info_hash, torrent_id, "x", **who)
    assert db_snapshot(db) == before


def test_registry_ids_are_stable_and_safe_integers():
    assert accounts.registry_torrent_id("f" * 40) == 16**13 - 1 < 2**53
    assert accounts.registry_torrent_id("0123456789abc" + "0" * 27) == 0x0123456789ABC


def test_registry_registration_never_overrides_an_existing_aggregate(db, who):
    aggregate, decide = accounts.registry_decision(IH1, "From the registry")
    assert aggregate == accounts.tracked_doc_id(IH1)
    assert decide(None) == (
        "registered",
        {"torrent_id": accounts.registry_torrent_id(IH1), "name": "From the registry"}
        | {"source": "registry"},
    )
    assert decide({"registered": False}) is None  # an admin's DELETE sticks


# ---------------------------------------------------------------- users


def test_a_generated_passkey_is_returned_once_and_stored_only_hashed(db, who):
    doc, passkey = members.register_user(db, 7, name="alice", **who)
    assert len(passkey) == 32 and passkey.isalnum()
    assert doc["passkey_sha256"] == accounts.hash_passkey(passkey)
    assert (doc["user_id"], doc["name"], doc["can_leech"]) == (7, "alice", True)
    assert doc["active"] is True
    everything = db.server.get_json(f"{db.path}/_all_docs", include_docs=True)
    assert passkey not in json.dumps(everything)
    assert members.find_user_by_passkey(db, passkey)["user_id"] == 7
    assert members.find_user_by_passkey(db, "0" * 32) is None
    assert members.find_user_by_passkey(db, "not a passkey!") is None
    assert "passkey_sha256" not in members.public_user(doc)


def test_users_are_unique_by_id_and_by_passkey(db, who, directory):
    before = db_snapshot(db)
    with pytest.raises(TrackerUserExistsError):
        members.register_user(db, 7, name="alice again", **who)
    with pytest.raises(PasskeyTakenError):
        members.register_user(db, 9, name="carol", passkey=PK1, **who)
    with pytest.raises(PasskeyTakenError):
        members.update_user(db, 8, passkey=PK1, **who)
    assert db_snapshot(db) == before


@pytest.mark.parametrize(
    "passkey",
    ["short", "a" * 15, "a" * 65, "with space 0123456", "ünïcödé0123456789", "a-b_c" * 4, ""],
)
def test_malformed_passkeys_are_refused(db, who, passkey):
    with pytest.raises(InvalidPasskeyError):
        members.register_user(db, 1, name="x", passkey=passkey, **who)
    assert event_ids(db) == []


@pytest.mark.parametrize("user_id", [-1, "x", "1.5", 2**53, True, None, "１"])
def test_malformed_user_ids_are_refused(db, who, user_id):
    with pytest.raises(InvalidUserIdError):
        members.register_user(db, user_id, name="x", **who)


def test_update_records_only_what_changed(db, who, directory):
    before = event_ids(db)
    members.update_user(db, 7, name="alice", can_leech=True, **who)
    assert event_ids(db) == before  # nothing differed
    doc = members.update_user(db, 7, can_leech=False, passkey="NewPasskey0000000000", **who)
    assert (doc["name"], doc["can_leech"]) == ("alice", False)
    [event] = read_events(db, accounts.tracker_user_doc_id(7), after_version=1)
    assert event["name"] == "updated"
    assert event["data"] == {
        "can_leech": False,
        "passkey_sha256": accounts.hash_passkey("NewPasskey0000000000"),
    }
    assert members.find_user_by_passkey(db, PK1) is None
    assert members.find_user_by_passkey(db, "NewPasskey0000000000")["user_id"] == 7
    with pytest.raises(TrackerUserNotFoundError):
        members.update_user(db, 99, name="nobody", **who)


def test_a_deleted_user_loses_the_passkey_and_keeps_the_totals(db, who, directory, clock):
    activity.record_activity(db, {7: (100, 50)}, [], now=clock())
    members.delete_user(db, 7, **who)
    assert members.find_user_by_passkey(db, PK1) is None
    with pytest.raises(TrackerUserNotFoundError):
        members.get_tracker_user(db, 7)
    with pytest.raises(TrackerUserNotFoundError):
        members.delete_user(db, 7, **who)
    # a deleted user's passkey is free for someone else, and the user may come back
    members.register_user(db, 9, name="carol", passkey=PK1, **who)
    doc, _ = members.register_user(db, 7, name="alice", **who)
    assert (doc["active"], doc["uploaded"], doc["downloaded"]) == (True, 100, 50)


# ---------------------------------------------------------------- whitelist


def test_whitelist_entries_are_added_listed_and_removed(db, who):
    assert accounts.list_whitelist(db) == []
    accounts.add_whitelist_entry(db, "-qB", "qBittorrent", **who)
    accounts.add_whitelist_entry(db, "-DE", "Deluge", **who)
    with pytest.raises(WhitelistEntryExistsError):
        accounts.add_whitelist_entry(db, "-DE", "Deluge 2", **who)
    assert accounts.list_whitelist(db) == [
        {"prefix": "-DE", "client": "Deluge"},
        {"prefix": "-qB", "client": "qBittorrent"},
    ]
    accounts.remove_whitelist_entry(db, "-DE", **who)
    with pytest.raises(WhitelistEntryNotFoundError):
        accounts.remove_whitelist_entry(db, "-DE", **who)
    assert accounts.list_whitelist(db) == [{"prefix": "-qB", "client": "qBittorrent"}]
    accounts.add_whitelist_entry(db, "-DE", "Deluge", **who)  # listed again
    assert len(accounts.list_whitelist(db)) == 2


@pytest.mark.parametrize("prefix", ["", "a b", "a/b", "x" * 21, "é", None])
def test_malformed_prefixes_are_refused(db, who, prefix):
    with pytest.raises(InvalidPrefixError):
        accounts.add_whitelist_entry(db, prefix, "client", **who)
    assert event_ids(db) == []


# ---------------------------------------------------------------- the tracker's side


def test_record_activity_adds_traffic_and_counts_snatches(db, directory, clock):
    activity.record_activity(
        db,
        {7: (1000, 4000), 8: (4000, 0)},
        [(IH1, 7), (IH2, 7), (IH1, 7)],  # the same torrent completed twice: two snatches
        now=clock(),
    )
    alice, bob = user(db, 7), user(db, 8)
    assert (alice["uploaded"], alice["downloaded"], alice["snatches"]) == (1000, 4000, 3)
    assert (bob["uploaded"], bob["downloaded"], bob["snatches"]) == (4000, 0, 0)
    assert (tracked(db, IH1)["snatches"], tracked(db, IH2)["snatches"]) == (2, 1)
    # one event per aggregate
    [transferred] = read_events(db, accounts.tracker_user_doc_id(7), after_version=1)
    assert transferred["data"] == {"uploaded": 1000, "downloaded": 4000} | {
        "snatched": [IH1, IH2, IH1]
    }
    assert transferred["actor"] == "tracker"
    [snatched] = read_events(db, accounts.tracked_doc_id(IH1), after_version=1)
    assert snatched["data"] == {"users": [7, 7]}
    clock.advance(seconds=1)
    activity.record_activity(db, {7: (1, 2)}, [], now=clock())
    assert (user(db, 7)["uploaded"], user(db, 7)["downloaded"]) == (1001, 4002)
    assert members.list_snatched(db, 7) == [
        {"info_hash": IH1, "at": transferred["at"]},
        {"info_hash": IH2, "at": transferred["at"]},
    ]
    assert accounts.list_tracked_torrents(db)[0] == {"info_hash": IH1, "torrent_id": 1} | {
        "snatches": 2
    }
    assert rebuild_projections(db, check_only=True).differing == []


def test_record_activity_records_nothing_for_unknown_users_or_torrents(db, who, directory, clock):
    accounts.register_torrent(db, IH3, 3, "Three", **who)
    accounts.unregister_torrent(db, IH3, **who)
    members.delete_user(db, 8, **who)
    before = event_ids(db)
    activity.record_activity(
        db,
        {8: (5, 5), 99: (5, 5), 7: (0, 0)},  # deleted, unknown, no traffic
        [(IH3, 7), ("d" * 40, 7), (IH1, 99), (IH1, 8)],  # unregistered, unknown torrents/users
        now=clock(),
    )
    assert event_ids(db) == before
    # a known user's traffic is kept even when their snatch was of an unknown torrent
    activity.record_activity(db, {7: (3, 0)}, [("d" * 40, 7)], now=clock())
    alice = user(db, 7)
    assert (alice["uploaded"], alice["snatches"]) == (3, 0)


def test_negative_deltas_count_as_nothing(db, directory, clock):
    activity.record_activity(db, {7: (-5, 10)}, [], now=clock())
    assert (user(db, 7)["uploaded"], user(db, 7)["downloaded"]) == (0, 10)


def test_a_flush_retried_with_its_batch_id_is_recorded_once(db, directory, clock):
    facts = ({7: (100, 200), 8: (5, 0)}, [(IH1, 7)])
    activity.record_activity(db, *facts, now=clock(), batch="flush-1")
    events = event_ids(db)
    # the write-behind saw an error (its answer was lost) and retries the same flush
    activity.record_activity(db, *facts, now=clock(), batch="flush-1")
    assert event_ids(db) == events
    alice = user(db, 7)
    assert (alice["uploaded"], alice["downloaded"], alice["snatches"]) == (100, 200, 1)
    assert (user(db, 8)["uploaded"], tracked(db, IH1)["snatches"]) == (5, 1)
    # the next flush is new traffic
    activity.record_activity(db, *facts, now=clock(), batch="flush-2")
    assert (user(db, 7)["uploaded"], tracked(db, IH1)["snatches"]) == (200, 2)
    assert rebuild_projections(db, check_only=True).differing == []


def test_the_directory_filter_passes_projections_of_the_tracker_types_only(db, who, directory):
    accounts.add_whitelist_entry(db, "-lt", "libtorrent", **who)
    members.delete_user(db, 8, **who)
    feed = db.changes(filter=activity.DIRECTORY_FILTER, include_docs=True)
    ids = sorted(change["id"] for change in feed["results"])
    expected = [
        accounts.tracked_doc_id(IH1),
        accounts.tracked_doc_id(IH2),
        accounts.tracker_user_doc_id(7),
        accounts.tracker_user_doc_id(8),
        accounts.whitelist_doc_id("-lt"),
    ]
    assert ids == sorted(expected)
    loaded = {doc["_id"]: doc for doc in activity.iter_directory_docs(db)}
    assert sorted(loaded) == sorted(expected)
    assert loaded[accounts.tracker_user_doc_id(8)]["active"] is False  # deletions come too


def test_projections_equal_their_rebuild(db, who, directory, clock):
    members.update_user(db, 8, can_leech=True, **who)
    accounts.add_whitelist_entry(db, "-TR", "Transmission", **who)
    accounts.remove_whitelist_entry(db, "-TR", **who)
    accounts.unregister_torrent(db, IH2, **who)
    activity.record_activity(db, {7: (10, 20)}, [(IH1, 7)], now=clock())
    assert rebuild_projections(db, check_only=True).differing == []


# ---------------------------------------------------------------- CLI


def couch_env(db, tmp_path):
    return {
        "DISTLEECH_COUCHDB__URL": db.server_url,
        "DISTLEECH_COUCHDB__DATABASE": db.name,
        "DISTLEECH_CONFIG": str(tmp_path / "none.yaml"),
    }


def test_the_cli_manages_users_whitelist_and_torrents(db, tmp_path):
    env = couch_env(db, tmp_path)
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(distleech, ["tracker", *args], env=env)
        assert result.exit_code == code, result.output
        return result.output

    # a user gets a new passkey, printed once
    output = run("user", "add", "alice", "--user-id", "7", "--no-leech")
    passkey = output.splitlines()[0]
    found = members.find_user_by_passkey(db, passkey)
    assert (found["user_id"], found["name"], found["can_leech"]) == (7, "alice", False)
    # without --user-id the next id is taken
    run("user", "add", "bob")
    assert members.get_tracker_user(db, 8)["name"] == "bob"
    assert "tracker_user_exists" in run("user", "add", "x", "--user-id", "7", code=1)
    assert "uploaded: 0" in run("user", "show", "7")
    run("user", "delete", "8")
    run("whitelist", "add", "-qB", "qBittorrent")  # a leading "-" is no option here
    run("whitelist", "add", "-TR", "Transmission")
    run("whitelist", "remove", "-TR")
    assert run("whitelist", "list") == "-qB\tqBittorrent\n"
    assert "invalid_prefix" in run("whitelist", "add", "a b", "x", code=1)
    run("torrent", "add", IH1, "--name", "One", "--torrent-id", "12")
    run("torrent", "add", IH2.upper())
    assert [t["torrent_id"] for t in accounts.list_tracked_torrents(db)] == [
        12,
        accounts.registry_torrent_id(IH2),
    ]
    assert "torrent_id_taken" in run("torrent", "add", IH3, "--torrent-id", "12", code=1)
    run("torrent", "remove", IH1)
    assert "torrent_not_tracked" in run("torrent", "remove", IH1, code=1)
