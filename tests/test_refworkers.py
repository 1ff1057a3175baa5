"""The reference workers against the app over real HTTP, a stand-in Gazelle site, and real
BitTorrent clients (aria2, Transmission) on loopback."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from factories import album_id_for, make_download_task
from gazelle_stub import (
    ARIA2_MISSING,
    TRANSMISSION_MISSING,
    GazelleStub,
    aria2_downloads,
    free_port,
    running_aria2,
    running_transmission,
    serving,
    transmission_torrents,
    with_worker_endpoints,
    write_release,
)

from app.queues.albums import album_doc_id, import_albums
from app.queues.downloads import task_doc_id
from app.timeutil import iso
from worker import cli
from worker.btclients import AddResult, make_client
from worker.cli import LoopOptions, run_loop
from worker.coordinator import MISSING, Coordinator, CoordinatorError
from worker.download import DownloadWorker
from worker.gazelle import (
    GazelleAuthError,
    GazelleClient,
    GazelleError,
    GazelleFailureError,
    GazelleRateLimitedError,
    RateLimiter,
    SiteCredentials,
)
from worker.metadata import (
    BatchReport,
    Candidate,
    MetadataWorker,
    artist_matches,
    artist_names,
    normalise_title,
    preference_tier,
    rank_candidates,
)

# The stub and the workers share a short window so that tests do not wait long;
# the workers' default stays Gazelle's 5 requests per 10 s (see test_default_rate_limit).
WINDOW = 0.4
HOST = "127.0.0.1"  # the stub's host, as the coordinator names its queue
UNTIL_EMPTY = LoopOptions(once=False, forever=False, idle_sleep=0)


@pytest.fixture
def stub():
    return GazelleStub(rate_requests=5, rate_window=WINDOW)


@pytest.fixture
def site(stub):
    with serving(stub) as url:
        yield url


@pytest.fixture
def server(app):
    with serving(with_worker_endpoints(app)) as url:
        yield url


@pytest.fixture
def coordinator(server, worker_token):
    client = Coordinator(server, worker_token)
    yield client
    client.close()


def gazelle_client(site, stub, style="auto", **credentials):
    creds = SiteCredentials(**credentials) if credentials else SiteCredentials(api_key=stub.api_key)
    return GazelleClient(site, creds, limiter=RateLimiter(5, WINDOW), download_style=style)


@pytest.fixture
def gazelle(site, stub):
    client = gazelle_client(site, stub)
    yield client
    client.close()


def release(tmp_path, name, seed, files=None):
    """Real files of one release in the site's (the uploader's) directory."""
    files = files or {"01 - Opening.flac": 30_000, "02 - Closing.flac": 20_000, "folder.jpg": 3_000}
    return write_release(tmp_path / "site" / name, files, seed)


def import_inventory(db, clock, rows):
    import_albums(db, [(i + 2, a, t) for i, (a, t) in enumerate(rows)], actor="test", now=clock())
    return [album_id_for(a, t) for a, t in rows]


# ---------------------------------------------------------------- matching and preference


@pytest.mark.parametrize(
    ("inventory", "site_title"),
    [
        ("You've Never Seen Everything", "You&#39;ve Never Seen Everything"),
        ("You've Never Seen Everything", "You’ve never seen everything"),
        ("Rock & Roll Hits", "Rock &amp; Roll Hits"),
        ("Rock and Roll Hits", "Rock &amp; Roll Hits"),
        ("Café  Tacvba", "CAFÉ TACVBA"),
        ("Life Short - Call Now", "Life Short – Call Now"),
    ],
)
def test_titles_match_across_escaping_case_and_punctuation(inventory, site_title):
    assert normalise_title(inventory) == normalise_title(site_title)


@pytest.mark.parametrize(
    ("inventory", "site_title"),
    [("Life Short Call Now", "Life Short Call Now (Live)"), ("Speechless", "Speechless II")],
)
def test_different_titles_do_not_match(inventory, site_title):
    assert normalise_title(inventory) != normalise_title(site_title)


def test_sort_artist_is_flipped_first_and_tried_as_given():
    assert artist_names("Cockburn, Bruce") == ["Bruce Cockburn", "Cockburn, Bruce"]
    assert artist_names("Beatles, The") == ["The Beatles", "Beatles, The"]
    assert artist_names("Madonna") == ["Madonna"]
    assert artist_names("  ") == []


def test_artist_credit_matches_alone_or_among_others():
    assert artist_matches("The Beatles", ["Beatles, The", "The Beatles"])
    assert artist_matches("Bruce Cockburn &amp; Jane Siberry", ["Bruce Cockburn"])
    assert not artist_matches("Bruce Springsteen", ["Bruce Cockburn"])


def candidate(torrent_id, **fields):
    return Candidate(torrent_id=torrent_id, group_id=1, group_name="x", artist="a", **fields)


@pytest.mark.parametrize(
    ("fields", "tier"),
    [
        ({"format": "FLAC", "encoding": "24bit Lossless", "media": "WEB"}, 0),
        ({"format": "FLAC", "encoding": "24bit Lossless", "media": "Vinyl"}, 0),
        ({"format": "FLAC", "encoding": "Lossless", "media": "CD", "has_log": True,
          "log_score": 100, "has_cue": True}, 1),
        ({"format": "FLAC", "encoding": "Lossless", "media": "CD", "has_log": True,
          "log_score": 99, "has_cue": True}, 2),
        ({"format": "FLAC", "encoding": "Lossless", "media": "CD", "has_log": True,
          "log_score": 100, "has_cue": False}, 2),
        ({"format": "FLAC", "encoding": "24bit Lossless", "media": "CD"}, 2),
        ({"format": "FLAC", "encoding": "Lossless", "media": "WEB"}, 2),
        ({"format": "MP3", "encoding": "V0 (VBR)", "media": "WEB"}, None),
        ({"format": "AAC", "encoding": "256", "media": "WEB"}, None),
    ],
)  # fmt: skip
def test_preference_tiers(fields, tier):
    assert preference_tier(candidate(1, **fields)) == tier


def test_ranking_is_tier_then_seeders_then_oldest():
    ranked = rank_candidates(
        [
            candidate(1, format="MP3", encoding="320", media="WEB", seeders=99),
            candidate(2, format="FLAC", encoding="Lossless", media="CD", seeders=50),
            candidate(3, format="FLAC", encoding="Lossless", media="CD", has_log=True,
                      log_score=100, has_cue=True, seeders=1),
            candidate(4, format="FLAC", encoding="24bit Lossless", media="WEB", seeders=2),
            candidate(5, format="FLAC", encoding="24bit Lossless", media="Vinyl", seeders=2),
        ]
    )  # fmt: skip
    assert [c.torrent_id for c in ranked] == [4, 5, 3, 2]


# ---------------------------------------------------------------- the site's rate limit


def test_default_rate_limit_is_gazelles():
    limiter = RateLimiter()
    assert (limiter.requests, limiter.window) == (5, 10.0)
    options = {p.name: p.default for p in cli.metadata.params}
    assert (options["rate_requests"], options["rate_window"]) == (5, 10.0)


def test_clients_sharing_a_limiter_never_exceed_the_sites_limit(site, stub, tmp_path):
    stub.add_group("Bruce Cockburn", "Life Short Call Now")
    limiter = RateLimiter(5, WINDOW)
    clients = [
        GazelleClient(site, SiteCredentials(api_key=stub.api_key), limiter=limiter)
        for _ in range(3)
    ]
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda c=c: [c.artist("Bruce Cockburn") for _ in range(4)])
        for c in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()
    assert len(stub.arrivals) == 12
    assert stub.refused == 0
    assert stub.max_in_window() == 5
    assert elapsed >= 2 * WINDOW  # 12 requests at 5 per window: the limiter did wait


def test_the_stub_refuses_a_client_that_is_too_fast(site, stub):
    """The control for the test above: the stand-in site really enforces the limit."""
    stub.add_group("Bruce Cockburn", "Life Short Call Now")
    greedy = GazelleClient(
        site,
        SiteCredentials(api_key=stub.api_key),
        limiter=RateLimiter(100, WINDOW),
        rate_limit_retries=0,
    )
    with pytest.raises(GazelleRateLimitedError):
        for _ in range(6):
            greedy.artist("Bruce Cockburn")
    greedy.close()
    assert stub.refused == 1


def test_a_rate_limited_answer_is_retried_after_a_window(site, stub):
    stub.add_group("Bruce Cockburn", "Life Short Call Now")
    client = GazelleClient(
        site, SiteCredentials(api_key=stub.api_key), limiter=RateLimiter(100, WINDOW)
    )
    answers = [client.artist("Bruce Cockburn") for _ in range(7)]
    client.close()
    assert stub.refused >= 1
    assert all(a["name"] == "Bruce Cockburn" for a in answers)


# ---------------------------------------------------------------- .torrent downloads


@pytest.fixture
def one_torrent(stub, tmp_path):
    group = stub.add_group("Bruce Cockburn", "Life Short Call Now")
    return stub.add_torrent(group, release(tmp_path, "Life Short Call Now", 1))


def test_ajax_download_with_an_api_token(site, stub, one_torrent):
    client = gazelle_client(site, stub)
    assert client.download_torrent(one_torrent.id) == one_torrent.data
    client.close()
    assert stub.log[-1] == ("/ajax.php", {"action": "download", "id": str(one_torrent.id)})


def test_classic_download_with_authkey_and_torrent_pass(site, stub, one_torrent):
    client = gazelle_client(site, stub, authkey=stub.authkey, torrent_pass=stub.passkey)
    assert client.download_torrent(one_torrent.id) == one_torrent.data
    client.close()
    path, query = stub.log[-1]
    assert path == "/torrents.php"
    assert query == {
        "action": "download",
        "id": str(one_torrent.id),
        "authkey": stub.authkey,
        "torrent_pass": stub.passkey,
    }


def test_classic_download_looks_its_keys_up_with_a_session_cookie(site, stub, one_torrent):
    client = gazelle_client(site, stub, session=stub.session)
    assert client.download_torrent(one_torrent.id) == one_torrent.data
    assert client.download_torrent(one_torrent.id) == one_torrent.data
    client.close()
    assert stub.count("index") == 1  # looked up once, then remembered
    assert [p for p, _ in stub.log] == ["/ajax.php", "/torrents.php", "/torrents.php"]


def test_forced_classic_style_with_an_api_token_only(site, stub, one_torrent):
    client = gazelle_client(site, stub, "classic", api_key=stub.api_key)
    assert client.download_torrent(one_torrent.id) == one_torrent.data
    client.close()
    assert stub.log[-1][0] == "/torrents.php"


@pytest.mark.parametrize(
    "credentials",
    [
        {"api_key": "wrong"},
        {"authkey": "wrong", "torrent_pass": "wrong"},
        {},  # nothing at all: classic, with no way to learn the keys
    ],
)
def test_download_with_wrong_credentials_is_an_auth_error(site, stub, one_torrent, credentials):
    client = GazelleClient(site, SiteCredentials(**credentials), limiter=RateLimiter(5, WINDOW))
    with pytest.raises(GazelleAuthError):
        client.download_torrent(one_torrent.id)
    client.close()


def test_unknown_torrent_is_a_failure_not_a_file(site, stub, one_torrent):
    client = gazelle_client(site, stub)
    with pytest.raises(GazelleFailureError):
        client.download_torrent(999_999)
    with pytest.raises(GazelleFailureError, match="bad id"):
        client.torrent(999_999)
    client.close()


def test_errors_do_not_show_credentials():
    """requests quotes the URL in its errors, and a classic download URL holds two secrets."""
    secrets = SiteCredentials(authkey="s3cret+key/1", torrent_pass="pass&word")
    client = GazelleClient(f"http://127.0.0.1:{free_port()}/", secrets, limiter=RateLimiter())
    with pytest.raises(GazelleError) as caught:
        client.download_torrent(5)
    client.close()
    assert "torrents.php" in str(caught.value)
    for text in ("s3cret", "s3cret%2Bkey", "pass&word", "pass%26word"):
        assert text not in str(caught.value)


def test_credentials_come_from_the_environment():
    env = {
        "DISTLEECH_SITE_API_KEY": "k",
        "DISTLEECH_SITE_SESSION": "s",
        "DISTLEECH_SITE_AUTHKEY": "a",
        "DISTLEECH_SITE_TORRENT_PASS": "p",
    }
    assert SiteCredentials.from_env(env) == SiteCredentials("k", "s", "a", "p")


# ---------------------------------------------------------------- the artist cache endpoint


def test_cache_endpoint_stores_reads_and_expires(coordinator, clock):
    assert coordinator.get_cached("artist", "https://pth.example/", "Bruce Cockburn") is MISSING
    coordinator.put_cached("artist", "https://pth.example/", "Bruce Cockburn", {"id": 1}, 3600)
    # the key is normalised: the same artist however it is typed
    assert coordinator.get_cached("artist", "pth.example", "bruce  COCKBURN") == {"id": 1}
    coordinator.put_cached("artist", "pth.example", "Nobody", None, 3600)  # "no such artist"
    assert coordinator.get_cached("artist", "pth.example", "Nobody") is None
    clock.advance(seconds=3600)
    assert coordinator.get_cached("artist", "pth.example", "Bruce Cockburn") is MISSING
    assert coordinator.cache_enabled


def test_cache_document_has_its_type_and_id_prefix(coordinator, db, clock):
    coordinator.put_cached("artist", "https://pth.example/", "Bruce Cockburn", {"id": 1}, 7 * 86400)
    doc = db.get("cache:pth.example:artist:bruce cockburn")
    assert doc["type"] == "cache"
    assert doc["expires_at"] == iso(clock() + timedelta(days=7))


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("Artist!", {"site": "pth.example", "key": "x", "value": 1}, "kind"),
        ("artist", {"site": "%%%", "key": "x", "value": 1}, "site"),
        ("artist", {"site": "pth.example", "key": "  ", "value": 1}, "key"),
        ("artist", {"site": "pth.example", "key": "x", "value": 1, "ttlSeconds": 0}, "ttlSeconds"),
        (
            "artist",
            {"site": "pth.example", "key": "x", "value": 1, "ttlSeconds": 1e9},
            "ttlSeconds",
        ),
    ],
)
def test_cache_endpoint_refuses_bad_input(client, worker, db, kind, body, field):
    with_worker_endpoints(client.application)
    response = client.put(f"/api/cache/{kind}", json=body, headers=worker)
    assert response.status_code == 400
    assert response.get_json()["error"] == "validation_failed"
    assert response.get_json()["details"]["field"] == field


def test_cache_endpoint_needs_a_worker_token(client):
    with_worker_endpoints(client.application)
    response = client.get("/api/cache/artist?site=pth.example&key=x")
    assert response.status_code == 401
    assert response.get_json()["error"] == "authentication_required"


# ---------------------------------------------------------------- the metadata worker


@pytest.fixture
def catalogue(stub, tmp_path):
    """A site with the torrents the inventory below is looked up against."""

    def add(group, name, seed, **fields):
        return stub.add_torrent(group, release(tmp_path, f"{name} {seed}", seed), **fields)

    life = stub.add_group("Bruce Cockburn", "Life Short Call Now")
    add(life, "LSCN", 1, format="MP3", encoding="320", media="WEB", seeders=90)
    add(life, "LSCN", 2, media="CD", seeders=40)
    add(life, "LSCN", 3, media="CD", has_log=True, log_score=100, has_cue=True, seeders=30)
    add(life, "LSCN", 4, encoding="24bit Lossless", media="WEB", seeders=2)
    vinyl = add(life, "LSCN", 5, encoding="24bit Lossless", media="Vinyl", seeders=9)
    never = stub.add_group("Bruce Cockburn", "You’ve Never Seen Everything")
    log100 = add(never, "YNSE", 6, media="CD", has_log=True, log_score=100, has_cue=True, seeders=1)
    add(never, "YNSE", 7, media="CD", has_log=True, log_score=99, has_cue=True, seeders=50)
    daylight = stub.add_group("Crosby, Stills & Nash", "Daylight Again")
    csn = add(daylight, "DA", 8, media="WEB")
    hits = stub.add_group("Various Artists", "Rock & Roll Hits")
    various = add(hits, "RRH", 9, media="CD")
    only_mp3 = stub.add_group("Bruce Cockburn", "Speechless")
    add(only_mp3, "SPL", 10, format="MP3", encoding="V0 (VBR)", media="CD")
    return {"vinyl": vinyl, "log100": log100, "csn": csn, "various": various}


INVENTORY = [
    ("Cockburn, Bruce", "Life Short Call Now"),
    ("Cockburn, Bruce", "You've Never Seen Everything"),
    ("Cockburn, Bruce", "Not On The Site"),
    ("Cockburn, Bruce", "Speechless"),
    ("Crosby, Stills & Nash", "Daylight Again"),  # no sort form: found under the name as given
    ("Various", "Rock & Roll Hits"),  # no such artist page: found by browse
]


def test_metadata_worker_finds_submits_and_uploads(
    db, clock, stub, site, server, coordinator, gazelle, catalogue
):
    ids = import_inventory(db, clock, INVENTORY)
    worker = MetadataWorker(coordinator, gazelle, site=site, batch_size=4)

    reports = run_loop(worker.run_batch, UNTIL_EMPTY)

    assert [r.leased for r in reports] == [4, 2]
    assert sum(r.found for r in reports) == 4
    assert sum(r.not_found for r in reports) == 2
    assert sum(r.failed for r in reports) == 0
    expected = {
        ids[0]: catalogue["vinyl"],  # 24-bit Vinyl over 24-bit WEB (more seeders), CD, MP3
        ids[1]: catalogue["log100"],  # CD with a 100% log and cue over a 99% log
        ids[4]: catalogue["csn"],
        ids[5]: catalogue["various"],
    }
    for album_id, torrent in expected.items():
        album = db.get(album_doc_id(album_id))
        assert album["state"] == "found"
        assert album["torrents"] == [{"site": HOST, "torrentId": torrent.id}]
        assert db.get(task_doc_id(HOST, torrent.id))["state"] == "ready"
    for album_id in (ids[2], ids[3]):  # not on the site; on it only as MP3
        album = db.get(album_doc_id(album_id))
        assert (album["state"], album["not_found"]) == ("ready", 1)
    # the registry got each chosen torrent's action=torrent metadata, linked to its task
    assert stub.count("torrent") == 4
    for torrent in expected.values():
        entry = registry_entry(coordinator, torrent.info_hash)
        assert (entry["files_from"], entry["has_torrent_file"]) == ("gazelle", False)
        assert sorted((f["path"], f["size"]) for f in entry["files"]) == sorted(torrent.files)
        assert [(s["site"], s["torrentId"]) for s in entry["sites"]] == [(HOST, torrent.id)]
        assert db.get(task_doc_id(HOST, torrent.id))["info_hash"] == torrent.info_hash.lower()
    # one artist page served four albums; the site never saw more than its limit
    artist_lookups = [q["artistname"] for p, q in stub.log if q.get("action") == "artist"]
    assert artist_lookups.count("Bruce Cockburn") == 1
    assert stub.refused == 0
    assert stub.max_in_window() <= 5
    assert len(stub.arrivals) > 5  # enough requests that the limiter had to act


def registry_entry(coordinator, info_hash):
    """What the reseed lookup (GET /api/torrents/<info hash>) says of a torrent."""
    return coordinator.request("GET", f"api/torrents/{info_hash}")


def test_artist_pages_are_cached_for_seven_days(
    db, clock, stub, site, server, coordinator, gazelle, catalogue
):
    worker = MetadataWorker(coordinator, gazelle, site=site)
    lookups = lambda: stub.count("artist")  # noqa: E731

    import_inventory(db, clock, INVENTORY[:1])
    run_loop(worker.run_batch, UNTIL_EMPTY)
    assert lookups() == 1
    doc = db.get("cache:127.0.0.1:artist:bruce cockburn")
    assert (doc["type"], doc["expires_at"]) == ("cache", iso(clock() + timedelta(days=7)))

    clock.advance(days=6)
    import_inventory(db, clock, INVENTORY[1:2])
    run_loop(worker.run_batch, UNTIL_EMPTY)
    assert lookups() == 1  # still fresh

    clock.advance(days=1, seconds=1)
    import_inventory(db, clock, INVENTORY[3:4])
    run_loop(worker.run_batch, UNTIL_EMPTY)
    # expired: fetched again
    assert [q["artistname"] for _, q in stub.log if q.get("action") == "artist"] == [
        "Bruce Cockburn",
        "Bruce Cockburn",
    ]


def test_metadata_worker_leaves_albums_it_could_not_search(
    db, clock, stub, site, server, coordinator, catalogue
):
    """A site that refuses the search (here: too fast, no retries) fails the album, which
    keeps its lease and comes back when it expires; nothing is submitted for it."""
    ids = import_inventory(db, clock, INVENTORY[:1])
    greedy = GazelleClient(
        site,
        SiteCredentials(api_key=stub.api_key),
        limiter=RateLimiter(100, WINDOW),
        rate_limit_retries=0,
    )
    for _ in range(5):  # use up the site's window
        greedy.torrentgroup(101)
    report = MetadataWorker(coordinator, greedy, site=site).run_batch()
    greedy.close()
    assert (report.leased, report.failed, report.found, report.not_found) == (1, 1, 0, 0)
    assert db.get(album_doc_id(ids[0]))["state"] == "leased"


# ---------------------------------------------------------------- the download worker


@pytest.fixture
def bt_client(request, tmp_path):
    """A real aria2 or Transmission, started for the test on loopback."""
    kind = request.param
    if kind == "aria2":
        if shutil.which("aria2c") is None:
            pytest.skip(ARIA2_MISSING)
        with running_aria2(tmp_path / "aria2") as running:
            yield running
    else:
        if shutil.which("transmission-daemon") is None:
            pytest.skip(TRANSMISSION_MISSING)
        with running_transmission(tmp_path / "transmission") as running:
            yield running


def held_by(running):
    """{info hash: download dir} of what the client holds, asked over its own RPC."""
    if running.kind == "aria2":
        return {d["infoHash"]: d["dir"] for d in aria2_downloads(running)}
    return {t["hashString"]: t["downloadDir"] for t in transmission_torrents(running)}


@pytest.fixture
def two_torrents(stub, tmp_path):
    group = stub.add_group("Bruce Cockburn", "Life Short Call Now")
    album = stub.add_torrent(group, release(tmp_path, "Bruce Cockburn - Life Short Call Now", 1))
    single = write_release(tmp_path / "site", {"Bruce Cockburn - Bonus Track.flac": 25_000}, 2)
    loose = stub.add_torrent(group, single / "Bruce Cockburn - Bonus Track.flac", media="WEB")
    return [album, loose]


@pytest.mark.parametrize("bt_client", ["aria2", "transmission"], indirect=True)
@pytest.mark.parametrize("style", ["ajax", "classic"])
def test_download_worker_hands_torrents_to_the_client(
    db, clock, stub, site, server, coordinator, two_torrents, bt_client, style, tmp_path
):
    for torrent in two_torrents:
        make_download_task(db, torrent.id, now=clock(), host=HOST)
    credentials = (
        {"api_key": stub.api_key}
        if style == "ajax"
        else {"authkey": stub.authkey, "torrent_pass": stub.passkey}
    )
    gazelle = gazelle_client(site, stub, **credentials)
    client = make_client(
        bt_client.kind,
        bt_client.rpc_url,
        secret=bt_client.secret,
        username=bt_client.username,
        password=bt_client.password,
    )
    download_dir = tmp_path / "downloads"
    worker = DownloadWorker(coordinator, gazelle, client, site=site, download_dir=str(download_dir))

    reports = run_loop(worker.run_batch, UNTIL_EMPTY)

    assert [(r.leased, r.added, r.failed) for r in reports] == [(2, 2, 0)]
    wanted = {t.info_hash.lower(): str(download_dir) for t in two_torrents}
    assert held_by(bt_client) == wanted
    paths = {p for p, q in stub.log if q.get("action") == "download"}
    assert paths == {"/ajax.php" if style == "ajax" else "/torrents.php"}
    for torrent in two_torrents:  # the .torrent itself reached the registry
        entry = registry_entry(coordinator, torrent.info_hash)
        assert (entry["files_from"], entry["has_torrent_file"]) == ("torrent", True)
        assert db.get(task_doc_id(HOST, torrent.id))["info_hash"] == torrent.info_hash.lower()
    # a second hand-over of the same task adds nothing
    task = {"id": 1, "siteTorrentId": two_torrents[0].id}
    assert worker.process(task).added is False
    assert held_by(bt_client) == wanted
    gazelle.close()


def test_a_torrent_gone_from_the_site_cancels_its_task(
    db, clock, stub, site, server, coordinator, gazelle, two_torrents
):
    gone, kept = two_torrents
    for torrent in two_torrents:
        make_download_task(db, torrent.id, now=clock(), host=HOST)
    stub.delete_torrent(gone)
    added = []

    class Recorder:  # the client's side is covered above; here only what reaches it matters
        name = "recorder"

        def add_torrent(self, data, info_hash, *, download_dir=None):
            added.append(info_hash)
            return AddResult(info_hash, True)

    worker = DownloadWorker(coordinator, gazelle, Recorder(), site=site)
    [report] = run_loop(worker.run_batch, UNTIL_EMPTY)

    assert (report.leased, report.added, report.unavailable, report.failed) == (2, 1, 1, 0)
    assert added == [kept.info_hash.lower()]
    assert db.get(task_doc_id(HOST, gone.id))["state"] == "cancelled"
    assert db.get(task_doc_id(HOST, kept.id))["state"] == "leased"


def test_a_failed_download_of_a_listed_torrent_cancels_nothing(
    db, clock, stub, site, server, coordinator, two_torrents
):
    """The download answers a failure, but action=torrent still lists the torrent: the task
    keeps its lease and comes back later, and nothing is cancelled."""
    make_download_task(db, two_torrents[0].id, now=clock(), host=HOST)
    stub.torrents[two_torrents[0].id].data = b'{"status": "failure", "error": "try later"}'
    gazelle = gazelle_client(site, stub)
    worker = DownloadWorker(
        coordinator, gazelle, make_client("aria2", "http://127.0.0.1:9/"), site=site
    )
    report = worker.run_batch()
    gazelle.close()
    assert (report.leased, report.failed, report.unavailable) == (1, 1, 0)
    assert stub.count("torrent") == 1  # it asked before deciding
    assert db.get(task_doc_id(HOST, two_torrents[0].id))["state"] == "leased"


# ---------------------------------------------------------------- the command line


def test_cli_metadata_once(db, clock, stub, site, server, worker_token, catalogue):
    import_inventory(db, clock, INVENTORY[:2])
    env = {"DISTLEECH_TOKEN": worker_token, "DISTLEECH_SITE_API_KEY": stub.api_key}
    args = ["metadata", "--server", server, "--site", site, "--batch", "1", "--once"]
    result = CliRunner().invoke(cli.worker, [*args, "--rate-window", str(WINDOW)], env=env)
    assert result.exit_code == 0, result.output
    assert "albums: leased 1, found 1, not found 0, failed 0" in result.output
    states = sorted(db.get(album_doc_id(album_id_for(*row)))["state"] for row in INVENTORY[:2])
    assert states == ["found", "ready"]  # --once: one batch of one


def test_cli_download_with_aria2(db, clock, stub, site, server, worker_token, tmp_path):
    if shutil.which("aria2c") is None:
        pytest.skip(ARIA2_MISSING)
    group = stub.add_group("Bruce Cockburn", "Life Short Call Now")
    torrent = stub.add_torrent(group, release(tmp_path, "LSCN", 1))
    make_download_task(db, torrent.id, now=clock(), host=HOST)
    with running_aria2(tmp_path / "aria2") as aria2:
        env = {
            "DISTLEECH_TOKEN": worker_token,
            "DISTLEECH_SITE_AUTHKEY": stub.authkey,
            "DISTLEECH_SITE_TORRENT_PASS": stub.passkey,
            "DISTLEECH_RPC_SECRET": aria2.secret,
        }
        args = ["download", "--server", server, "--site", site, "--client", "aria2"]
        args += ["--rpc", aria2.rpc_url, "--download-dir", str(tmp_path / "dl")]
        result = CliRunner().invoke(cli.worker, [*args, "--rate-window", str(WINDOW)], env=env)
        assert result.exit_code == 0, result.output
        assert (
            "torrents: leased 1, added 1, already in client 0, unavailable 0, failed 0"
            in result.output
        )
        assert [d["infoHash"] for d in aria2_downloads(aria2)] == [torrent.info_hash.lower()]


def test_forever_waits_out_an_unreachable_coordinator():
    calls = []

    def batch():
        calls.append(1)
        if len(calls) == 1:
            raise CoordinatorError(0, "unreachable", "connection refused")
        if len(calls) == 2:
            return BatchReport(leased=1, found=1)
        raise KeyboardInterrupt  # how --forever ends

    with pytest.raises(KeyboardInterrupt):
        run_loop(batch, LoopOptions(once=False, forever=True, idle_sleep=0))
    assert len(calls) == 3
    with pytest.raises(CoordinatorError):  # without --forever it ends the worker
        calls.clear()
        run_loop(batch, UNTIL_EMPTY)


def test_a_batch_that_failed_whole_stops_the_default_loop():
    reports = iter([BatchReport(leased=2, failed=2), BatchReport(leased=2, found=2)])
    assert run_loop(lambda: next(reports), UNTIL_EMPTY) == [BatchReport(leased=2, failed=2)]


def test_cli_needs_a_worker_token(site, server):
    result = CliRunner().invoke(
        cli.worker, ["metadata", "--server", server, "--site", site], env={}
    )
    assert result.exit_code == 2
    assert "DISTLEECH_TOKEN" in result.output


def test_cli_stops_on_an_unreachable_client(site, server, worker_token, db, clock, stub, tmp_path):
    env = {"DISTLEECH_TOKEN": worker_token, "DISTLEECH_RPC_SECRET": "x"}
    args = ["download", "--server", server, "--site", site, "--client", "aria2"]
    args += ["--rpc", "http://127.0.0.1:9/jsonrpc"]
    group = stub.add_group("Bruce Cockburn", "Life Short Call Now")
    torrent = stub.add_torrent(group, release(tmp_path, "LSCN", 1))
    make_download_task(db, torrent.id, now=clock(), host=HOST)
    result = CliRunner().invoke(
        cli.worker, args, env={**env, "DISTLEECH_SITE_API_KEY": stub.api_key}
    )
    assert result.exit_code == 1
    assert "aria2 at http://127.0.0.1:9/jsonrpc" in result.output
