"""tracker: announces/s and p99 of our tracker against npm bittorrent-tracker (and opentracker).

Three trackers on this machine, in the same run, under the same wrk load
(bench/tracker_load.lua): 2,000 registered torrents, 20,000 peers of 100 users,
each request a random peer's announce for its torrent (percent-encoded raw
info_hash and peer_id, compact=1, numwant=50, its passkey; 10 % started, 5 %
stopped; seeders left=0, leechers left>0 and now and then a finished download).

- ours: `distleech tracker serve`, one process, on a scratch bundled
  pouchdb-server where the torrents, users and a client whitelist are registered
  first (private: every announce carries a passkey);
- npm bittorrent-tracker's HTTP tracker (bench/npm_tracker.mjs), in memory;
- opentracker, the native ceiling, where installed (its whitelist: the same
  torrents); skipped otherwise.

Every tracker is sampled with a few Python requests before the run and checked
by the warm-up (wrk counts only non-2xx, and a failure reason comes back as
200): each response must be a bencoded dictionary with `interval` and no
`failure reason`. Then each tracker is measured for the same time with the same
wrk threads and connections, round-robin: three 10 s rounds of keep-alive
(one 5 s round with --quick) and, in a full run, one round where every
request closes its connection (libtorrent sends `Connection: close`).

Headline: ours / npm announces/s (keep-alive), target >= 1.0; also ours /
opentracker and every p99. Needs wrk (Debian package); opentracker is optional.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from app.processes import bundled
from bench.harness import (
    ROOT,
    app_env,
    distleech_command,
    load_average,
    say,
    verdict,
    write_results,
)

NAME = "tracker"
DATABASE = "bench_tracker"
HERE = Path(__file__).resolve().parent
LUA = HERE / "tracker_load.lua"
NPM_SCRIPT = HERE / "npm_tracker.mjs"

TORRENTS = 2_000
PEERS = 20_000
USERS = 100
USER_ID_BASE = 1000
WRK_THREADS = 1  # 2 cores: one for wrk, one for the tracker under test
WRK_CONNECTIONS = 64
WRK_TIMEOUT = "10s"  # a slow answer is a latency, not a timeout
MEASURE_SECONDS = {"full": 10, "quick": 5}
WARMUP_SECONDS = {"full": 4, "quick": 2}
KEEPALIVE_ROUNDS = {"full": 3, "quick": 1}
CLOSE_ROUNDS = {"full": 1, "quick": 0}
SAMPLES = 20
TARGET = 1.0
START_TIMEOUT = 60.0
SETTLE_SECONDS = 10.0  # after a run, wait at most this long for the tracker's CPU to go idle

# Whitelisted client prefixes; every peer of the load has one of them.
CLIENTS = (
    (b"-qB4520-", "qBittorrent 4.5.2"),
    (b"-LT2110-", "libtorrent 2.1.1"),
    (b"-TR3000-", "Transmission 3.00"),
    (b"A2-1-36-0-", "aria2 1.36"),
    (b"-lt0D80-", "rtorrent 0.9.8"),
)
UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~*(!")


# ---------------------------------------------------------------- the load


def percent_encode(raw: bytes, rng: random.Random) -> str:
    """As clients do it: some unreserved bytes left as they are, hex in either case."""
    upper = rng.random() < 0.5
    keep = rng.random() < 0.7  # libtorrent-style; the others escape every byte
    out = []
    for byte in raw:
        if keep and byte in UNRESERVED:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}" if upper else f"%{byte:02x}")
    return "".join(out)


@dataclass(frozen=True)
class Peer:
    peer_id: str  # percent-encoded
    torrent: int
    passkey: str
    seeder: bool
    port: int


@dataclass
class Load:
    info_hashes: list[bytes]
    encoded_hashes: list[str]
    passkeys: list[str]  # user USER_ID_BASE + i has passkeys[i]
    peers: list[Peer]

    def write(self, path: Path) -> Path:
        lines = [f"T {h}" for h in self.encoded_hashes]
        lines += [
            f"P {p.peer_id} {p.torrent} {p.passkey} {int(p.seeder)} {p.port}" for p in self.peers
        ]
        path.write_text("\n".join(lines) + "\n", encoding="ascii")
        return path

    def announce_path(self, peer: Peer, rng: random.Random, *, event: str = "") -> str:
        """One request as the Lua script builds it."""
        left = 0 if peer.seeder else rng.randint(1, 734_003_200)
        query = (
            f"passkey={peer.passkey}&info_hash={self.encoded_hashes[peer.torrent]}"
            f"&peer_id={peer.peer_id}&port={peer.port}&uploaded={rng.randint(0, 10**9)}"
            f"&downloaded={rng.randint(0, 10**9)}&left={left}&corrupt=0"
            f"&key={rng.randint(0, 0x7FFFFFFF):08X}{'&event=' + event if event else ''}"
            "&numwant=50&compact=1&no_peer_id=1"
        )
        return f"/announce?{query}"


def make_load(seed: int = 4) -> Load:
    rng = random.Random(seed)
    info_hashes = [rng.randbytes(20) for _ in range(TORRENTS)]
    passkeys = [
        "".join(rng.choices("0123456789abcdefghijklmnopqrstuvwxyz", k=32)) for _ in range(USERS)
    ]
    peers = []
    for i in range(PEERS):
        prefix = CLIENTS[i % len(CLIENTS)][0]
        raw_id = prefix + rng.randbytes(20 - len(prefix))
        # Skewed popularity: torrent 0 has about 450 peers, the median one a few.
        torrent = int(TORRENTS * rng.random() ** 2)
        peers.append(
            Peer(
                peer_id=percent_encode(raw_id, rng),
                torrent=torrent,
                passkey=passkeys[i % USERS],
                seeder=rng.random() < 0.3,
                port=rng.randint(1025, 65535),
            )
        )
    return Load(info_hashes, [percent_encode(h, rng) for h in info_hashes], passkeys, peers)


# ---------------------------------------------------------------- checking answers


def bdecode(data: bytes) -> Any:
    import bencode2

    return bencode2.bdecode(data)


def check_answer(status: int, body: bytes) -> str | None:
    """None for a successful announce answer, else what is wrong with it."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    try:
        answer = bdecode(body)
    except Exception as exc:  # any decoding error is a wrong answer
        return f"not bencode ({exc}): {body[:200]!r}"
    if not isinstance(answer, dict):
        return f"not a dictionary: {body[:200]!r}"
    if b"failure reason" in answer:
        return f"failure reason: {answer[b'failure reason']!r}"
    if b"interval" not in answer or not isinstance(answer.get(b"peers"), bytes):
        return f"no interval or no compact peers: {body[:200]!r}"
    return None


def sample_answers(base: str, load: Load, *, samples: int = SAMPLES, seed: int = 9) -> list[str]:
    """Send a few announces from the load's peers (started, plain, stopped); the problems."""
    rng = random.Random(seed)
    session = requests.Session()
    problems = []
    for i in range(samples):
        peer = load.peers[rng.randrange(len(load.peers))]
        event = ("started", "", "", "stopped")[i % 4]
        response = session.get(base + load.announce_path(peer, rng, event=event), timeout=10)
        problem = check_answer(response.status_code, response.content)
        if problem:
            problems.append(problem)
    return problems


def failure_reason(base: str, path: str) -> str:
    """The failure reason a tracker gives for this request ("" if none)."""
    response = requests.get(base + path, timeout=10)
    with contextlib.suppress(Exception):
        answer = bdecode(response.content)
        return str(answer.get(b"failure reason", b"").decode("utf-8", "replace"))
    return f"HTTP {response.status_code}, not bencode"


# ---------------------------------------------------------------- processes


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"{what} exited with {process.returncode} at start-up:\n{tail}")
        if _port_open(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def _spawn(
    cmd: list[str], log: Path, what: str, *, env: dict[str, str] | None = None, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as fh:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_port(port, process, log, what)
        yield process
    finally:
        _stop(process)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Tracker:
    name: str
    base: str
    pid: int
    helper_pids: list[int] = field(default_factory=list)  # e.g. our pouchdb-server
    couch_url: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- wrk


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    base: str, load_file: Path, seconds: int, *, check: bool = False, close: bool = False
) -> dict[str, Any]:
    cmd = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT}",
        "--latency",
        "-s",
        str(LUA),
    ]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd += [base, "--", str(load_file), str(WRK_THREADS)]
    env = dict(os.environ, BENCH_CHECK="1" if check else "0")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            figures: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            figures["rate"] = figures["requests"] / figures["seconds"]
            return figures
    raise RuntimeError(
        f"wrk printed no figures (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    )


def settle(tracker: Tracker) -> float:
    """Seconds until the tracker and its helpers stop using CPU (write-behind catching up)."""
    started = time.perf_counter()
    pids = [tracker.pid, *tracker.helper_pids]
    while time.perf_counter() - started < SETTLE_SECONDS:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(0.5)
        if sum(cpu_seconds(p) for p in pids) - before < 0.05:  # under 10 % of a core
            break
    return time.perf_counter() - started


def measure(tracker: Tracker, load_file: Path, seconds: int, *, close: bool) -> dict[str, Any]:
    pids = [tracker.pid, *tracker.helper_pids]
    cpu_before = [cpu_seconds(p) for p in pids]
    figures = run_wrk(tracker.base, load_file, seconds, close=close)
    cpu_after = [cpu_seconds(p) for p in pids]
    figures["cpu_seconds"] = cpu_after[0] - cpu_before[0]
    figures["helper_cpu_seconds"] = sum(cpu_after[1:]) - sum(cpu_before[1:])
    figures["settle_seconds"] = settle(tracker)
    figures["rss_bytes"] = rss_bytes(tracker.pid)
    figures["mode"] = "close" if close else "keep-alive"
    return figures


# ---------------------------------------------------------------- the three trackers


@contextlib.contextmanager
def npm_tracker(work: Path) -> Iterator[Tracker]:
    port = bundled.free_port()
    cmd = ["node", str(NPM_SCRIPT), str(port)]
    with _spawn(cmd, work / "npm-tracker.log", "npm bittorrent-tracker", port=port) as process:
        yield Tracker("npm", f"http://127.0.0.1:{port}", process.pid)


@contextlib.contextmanager
def opentracker(work: Path, load: Load) -> Iterator[Tracker]:
    """opentracker with the load's torrents on its whitelist (Debian builds it with one)."""
    port = bundled.free_port()
    root = work / "opentracker"
    root.mkdir()
    root.chmod(0o755)
    work.chmod(0o755)  # it drops to `nobody`, who must still read its whitelist
    (root / "whitelist.txt").write_text("".join(h.hex() + "\n" for h in load.info_hashes))
    cmd = ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-d", str(root)]
    cmd += ["-w", "whitelist.txt"]  # read after its chroot into root
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    with _spawn(cmd, work / "opentracker.log", "opentracker", port=port) as process:
        yield Tracker("opentracker", f"http://127.0.0.1:{port}", process.pid)


def register(url: str, load: Load) -> dict[str, float]:
    """Register the load's client whitelist, users and torrents in the main database.

    Users and whitelist entries one by one, as the management API does; the
    2,000 torrents in commits of 500, as distleech's own registry registers
    its torrents (app.tracker.accounts.registry_decision).
    """
    from app.projectors import register_projectors
    from app.store.commit import check_none_lost, commit
    from app.store.couch import CouchServer
    from app.store.setup import init_database
    from app.timeutil import utcnow
    from app.tracker import accounts, members

    register_projectors()

    db = CouchServer(url).database(DATABASE)
    init_database(db, warm=False)
    started = time.perf_counter()
    now = utcnow()
    for prefix, client in CLIENTS:
        accounts.add_whitelist_entry(db, prefix.decode(), client, actor="bench", now=now)
    for i, passkey in enumerate(load.passkeys):
        members.register_user(
            db, USER_ID_BASE + i, name=f"bench{i}", passkey=passkey, actor="bench", now=now
        )
    decisions = [
        accounts.registry_decision(info_hash.hex(), f"bench torrent {i}")
        for i, info_hash in enumerate(load.info_hashes)
    ]
    for first in range(0, len(decisions), 500):
        check_none_lost(commit(db, decisions[first : first + 500], actor="bench", now=now))
    return {"register_seconds": time.perf_counter() - started}


@contextlib.contextmanager
def our_tracker(work: Path, load: Load, prepared: dict[str, Any]) -> Iterator[Tracker]:
    """`distleech tracker serve` on a scratch pouchdb-server, the load registered."""
    with bundled.running(work / "couch") as url:
        couch_pid = _listening_pid(url)
        prepared.update(register(url, load))
        port = bundled.free_port()
        env = app_env(url, DATABASE, work)
        env.update(DISTLEECH_TRACKER__PORT=str(port), DISTLEECH_TRACKER__HOST="127.0.0.1")
        # The load gives each of its 100 users up to ~15 clients in the busiest swarm;
        # the per-account cap (a dict lookup either way) must not refuse them.
        env.update(DISTLEECH_TRACKER__MAX_PEERS_PER_USER="1000")
        cmd = distleech_command("tracker", "serve", "--host", "127.0.0.1", "--port", str(port))
        with _spawn(
            cmd, work / "our-tracker.log", "distleech tracker serve", env=env, port=port
        ) as process:
            base = f"http://127.0.0.1:{port}"
            _wait_for_registrations(base, load)
            yield Tracker("ours", base, process.pid, [couch_pid] if couch_pid else [], url)


def _listening_pid(url: str) -> int | None:
    """The pid of the process listening on url's port (pouchdb-server), via ss."""
    port = urllib.parse.urlsplit(url).port
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
        marker = "pid="
        if marker in out:
            return int(out.split(marker, 1)[1].split(",", 1)[0])
    return None


def _wait_for_registrations(base: str, load: Load) -> None:
    """Until the tracker knows the last torrent and user registered (it follows _changes)."""
    rng = random.Random(1)
    last_user = load.passkeys[-1]
    peer = next(p for p in reversed(load.peers) if p.passkey == last_user)
    probe = Peer(peer.peer_id, TORRENTS - 1, last_user, True, peer.port)
    deadline = time.monotonic() + START_TIMEOUT
    problem: str | None = "not asked yet"
    while time.monotonic() < deadline:
        response = requests.get(base + load.announce_path(probe, rng, event="stopped"), timeout=10)
        problem = check_answer(response.status_code, response.content)
        if problem is None:
            return
        time.sleep(0.25)
    raise RuntimeError(f"our tracker still refuses the load after {START_TIMEOUT:.0f} s: {problem}")


# ---------------------------------------------------------------- the run


def _summary(tracker: Tracker, mode: str) -> dict[str, Any]:
    rounds = [r for r in tracker.rounds if r["mode"] == mode]
    if not rounds:
        return {}
    requests_ = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    cpu = sum(r["cpu_seconds"] for r in rounds)
    helper_cpu = sum(r["helper_cpu_seconds"] for r in rounds)
    errors: dict[str, int] = {}
    for r in rounds:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "rate": requests_ / seconds,
        "requests": requests_,
        "p50_ms": max(r["latency_us"]["p50"] for r in rounds) / 1000,  # the worst round's
        "p99_ms": max(r["latency_us"]["p99"] for r in rounds) / 1000,
        "max_ms": max(r["latency_us"]["max"] for r in rounds) / 1000,
        "errors": errors,
        "cpu_per_1k": 1000 * cpu / requests_,
        "helper_cpu_per_1k": 1000 * helper_cpu / requests_,
        # announces per second of CPU: less sensitive to what else the machine runs
        "per_cpu_second": requests_ / cpu if cpu else float("nan"),
        "per_cpu_second_with_database": requests_ / (cpu + helper_cpu) if cpu else float("nan"),
        "busy": cpu / seconds,  # share of one core the tracker used while measured
        "settle_seconds": max(r["settle_seconds"] for r in rounds),
        "rss_mb": rounds[-1]["rss_bytes"] / 2**20,
    }


def _line(name: str, s: dict[str, Any]) -> str:
    errors = ", ".join(f"{k} {v:,}" for k, v in s["errors"].items() if v) or "none"
    if name == "opentracker" and set(k for k, v in s["errors"].items() if v) <= {"read"}:
        errors = "none (wrk counts its closes as read errors: one answer per connection)"
    database = (
        f" + database {s['helper_cpu_per_1k']:.3f} = {s['per_cpu_second_with_database']:,.0f}/CPU-s"
        if s["helper_cpu_per_1k"]
        else ""
    )
    return (
        f"  {name:<12} {s['rate']:>7,.0f} announces/s, p50 {s['p50_ms']:5.1f} ms, "
        f"p99 {s['p99_ms']:5.1f} ms, max {s['max_ms']:4.0f} ms; "
        f"busy {s['busy']:.0%} of a core, CPU {s['cpu_per_1k']:.3f} s/1k = "
        f"{s['per_cpu_second']:,.0f}/CPU-s{database}; "
        f"RSS {s['rss_mb']:.0f} MB; idle {s['settle_seconds']:.1f} s after; errors: {errors}"
    )


def run(quick: bool = False) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    if not wrk_available():
        say(NAME, "SKIPPED: wrk is not installed (Debian: apt-get install wrk)")
        return {"passed": None}
    have_opentracker = shutil.which("opentracker") is not None
    seconds = MEASURE_SECONDS[mode]
    say(
        NAME,
        f"{TORRENTS:,} torrents, {PEERS:,} peers, {USERS} users; wrk -t{WRK_THREADS} "
        f"-c{WRK_CONNECTIONS}, {seconds} s per tracker per round after {WARMUP_SECONDS[mode]} s "
        f"warm-up; load average {load_average():.1f} at start"
        + ("" if have_opentracker else "; opentracker not installed: no native ceiling"),
    )
    load = make_load()
    prepared: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    extra: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="distleech-bench-tracker-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        load_file = load.write(work / "load.txt")
        trackers = [stack.enter_context(npm_tracker(work))]
        if have_opentracker:
            trackers.append(stack.enter_context(opentracker(work, load)))
        ours = stack.enter_context(our_tracker(work, load, prepared))
        trackers.insert(0, ours)
        say(NAME, f"  registered in {prepared['register_seconds']:.1f} s")

        bad_peer = load.peers[0]
        extra["bad_passkey_reason"] = failure_reason(
            ours.base,
            load.announce_path(
                Peer(bad_peer.peer_id, bad_peer.torrent, "0" * 32, False, 6881),
                random.Random(2),
            ),
        )
        for tracker in trackers:
            problems[tracker.name] = sample_answers(tracker.base, load)
            check = run_wrk(tracker.base, load_file, WARMUP_SECONDS[mode], check=True)
            if check["failures"] or check["checked"] == 0:
                problems[tracker.name].append(
                    f"warm-up: {check['failures']} of {check['checked']} answers wrong, "
                    f"first: {check['first_failure']}"
                )
            say(
                NAME,
                f"  {tracker.name}: {SAMPLES} sampled answers and {check['checked']:,} warm-up "
                f"answers checked, {len(problems[tracker.name])} problem(s)",
            )
        plan = [False] * KEEPALIVE_ROUNDS[mode] + [True] * CLOSE_ROUNDS[mode]
        for round_, close in enumerate(plan):
            order = trackers[round_ % len(trackers) :] + trackers[: round_ % len(trackers)]
            for tracker in order:
                figures = measure(tracker, load_file, seconds, close=close)
                tracker.rounds.append(figures)
                say(
                    NAME,
                    f"  round {round_ + 1} ({figures['mode']}) {tracker.name}: "
                    f"{figures['rate']:,.0f}/s, p99 {figures['latency_us']['p99'] / 1000:.1f} ms",
                )
        for tracker in trackers:  # still answering right after the load?
            problems[tracker.name] += [
                f"after the run: {p}" for p in sample_answers(tracker.base, load, seed=11)
            ]
        extra.update(_after_run(ours, load))

    extra["load_average_at_end"] = round(load_average(), 1)
    summaries = {t.name: {m: _summary(t, m) for m in ("keep-alive", "close")} for t in trackers}
    ka = {name: s["keep-alive"] for name, s in summaries.items()}
    ratio = ka["ours"]["rate"] / ka["npm"]["rate"]
    ratio_native = ka["ours"]["rate"] / ka["opentracker"]["rate"] if have_opentracker else None
    errors = {name: sum(s["errors"].values()) for name, s in ka.items()}
    correct = (
        not any(problems.values())
        and errors["ours"] == 0
        and "passkey" in extra.get("bad_passkey_reason", "")
    )
    speed_ok = ratio >= TARGET
    for m in ("keep-alive", "close"):
        if summaries["ours"][m]:
            say(NAME, f"{m}:")
            for name, s in summaries.items():
                say(NAME, _line(name, s[m]))
    say(
        NAME,
        f"ours / npm bittorrent-tracker = {ratio:.2f} (keep-alive announces/s); "
        f"target >= {TARGET:.1f}: {verdict(speed_ok)}",
    )
    if ratio_native is not None:
        say(NAME, f"ours / opentracker (native ceiling) = {ratio_native:.2f}")
    efficiency = ka["ours"]["per_cpu_second"] / ka["npm"]["per_cpu_second"]
    efficiency_db = ka["ours"]["per_cpu_second_with_database"] / ka["npm"]["per_cpu_second"]
    say(
        NAME,
        f"announces per CPU second, ours / npm = {efficiency:.2f} "
        f"({efficiency_db:.2f} counting the CPU our CouchDB server spent on the write-behind)",
    )
    if summaries["ours"]["close"]:
        c = {name: s["close"]["rate"] for name, s in summaries.items()}
        say(NAME, f"closing connections: ours / npm = {c['ours'] / c['npm']:.2f}")
    say(
        NAME,
        f"answers: every sampled and warm-up answer a success, no wrk errors for ours, a bad "
        f"passkey refused ({extra.get('bad_passkey_reason')!r}): {verdict(correct)}",
    )
    for name, found in problems.items():
        for problem in found[:5]:
            say(NAME, f"  {name}: {problem}")
    for key, value in extra.items():
        if key != "bad_passkey_reason":
            say(NAME, f"  {key}: {value}")
    figures = {
        "passed": speed_ok and correct,
        "torrents": TORRENTS,
        "peers": PEERS,
        "users": USERS,
        "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS, "seconds": seconds},
        "ratio": ratio,
        "ratio_to_opentracker": ratio_native,
        "cpu_efficiency_ratio": efficiency,
        "cpu_efficiency_ratio_with_database": efficiency_db,
        "target": TARGET,
        "speed_passed": speed_ok,
        "correct": correct,
        "summaries": summaries,
        "rounds": {t.name: t.rounds for t in trackers},
        "problems": problems,
        **prepared,
        **extra,
    }
    write_results(NAME, figures, quick=quick)
    return figures


def _after_run(ours: Tracker, load: Load) -> dict[str, Any]:
    """What our write-behind left in the databases once the tracker went idle."""
    from app.store.couch import CouchServer

    server = CouchServer(ours.couch_url)
    found: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        swarms = list(server.database(f"{DATABASE}_peers").iter_prefix("swarm:"))
        found["swarm_docs"] = len(swarms)
        found["peers_stored"] = sum(len(doc.get("peers") or {}) for doc in swarms)
    with contextlib.suppress(Exception):
        db = server.database(DATABASE)
        users = list(db.iter_prefix("trackeruser:"))
        found["users_with_totals"] = sum(
            1 for u in users if u.get("uploaded") or u.get("downloaded")
        )
        found["snatches_by_users"] = sum(int(u.get("snatches") or 0) for u in users)
        found["snatches_by_torrents"] = sum(
            int(t.get("snatches") or 0) for t in db.iter_prefix("tracked:")
        )
    return found
