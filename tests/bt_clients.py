"""Real BitTorrent clients for the tracker's end-to-end tests, driven on loopback.

Each driver starts one client bound to its own loopback address (127.0.0.2,
127.0.0.3, ...: some clients drop a second peer from the same IP), with DHT,
LSD, PEX, UPnP and NAT-PMP off, and exposes what the tests need: add a
torrent (seeding from a directory or downloading into one), wait until it is
complete, the client's own account of tracker errors, and a clean stop (so
the client sends `stopped` with its final byte counts). See
../shared/BITTORRENT.md for the per-client pitfalls these settings avoid.

- libtorrent (PyPI): an in-process session, alerts collected as they come.
- aria2: `aria2c` on the command line (one process per download), its log
  holds the tracker's failure reason.
- Transmission: `transmission-daemon -f -g CFG`, driven by `transmission-remote`.
- qBittorrent: `qbittorrent-nox` and its WebUI API (localhost needs no login).
- rtorrent: a daemon configured by an rc file, watched through its log and
  a marker file its `event.download.finished` hook touches.
- opentracker: the reference tracker for the drivers' own control test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

SEEDER_IP = "127.0.0.2"
LEECHER_IP = "127.0.0.3"
NETNS_REASON = "run via make test: real clients need a loopback-only network namespace"


# ---------------------------------------------------------------- environment


def in_loopback_only_netns() -> bool:
    """True when this process's network namespace has only `lo`, and it is up.

    `socket.if_nameindex()` asks the kernel about the current namespace
    (/sys/class/net does not: sysfs is not remounted by `unshare --net`).
    """
    names = {name for _, name in socket.if_nameindex()}
    if names != {"lo"}:
        return False
    try:
        with socket.socket() as sock:
            sock.bind((LEECHER_IP, 0))  # lo is up: all of 127.0.0.0/8 is ours
    except OSError:
        return False
    return True


def missing_binaries(*names: str) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, *, step: float = 0.1
) -> Any:
    """Poll predicate until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the test process dies (a crash skips teardown)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- content and torrents


def write_content(root: Path, files: dict[str, int], seed: int = 0) -> Path:
    """Deterministic pseudo-random files under root (a directory torrent's content)."""
    for index, (name, size) in enumerate(sorted(files.items())):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        block = hashlib.sha256(f"{seed}:{index}".encode()).digest()
        data = bytearray()
        counter = 0
        while len(data) < size:
            data += hashlib.sha256(block + counter.to_bytes(8, "big")).digest()
            counter += 1
        path.write_bytes(bytes(data[:size]))
    return root


def sha256_tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@dataclasses.dataclass
class PrivateTorrent:
    """A private torrent made with torf over a content directory."""

    content: Path  # the directory the torrent describes (its name is the torrent's name)
    torrent: Any  # torf.Torrent
    info_hash: str  # 40 lower-case hex
    size: int

    @property
    def name(self) -> str:
        return str(self.torrent.name)

    def metainfo(self, announce: str) -> bytes:
        """The .torrent bytes with this announce URL (the info dict, hence the hash, is fixed)."""
        import torf

        copy = torf.Torrent.read_stream(self.torrent.dump())
        copy.trackers = [announce]
        data: bytes = copy.dump()
        return data

    def write(self, path: Path, announce: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.metainfo(announce))
        return path

    def expected_hashes(self) -> dict[str, str]:
        return sha256_tree(self.content)


def make_private_torrent(
    content: Path, announce: str, piece_size: int = 64 * 1024
) -> PrivateTorrent:
    import torf

    torrent = torf.Torrent(
        path=content, trackers=[announce], private=True, piece_size=piece_size,
        created_by="distleech tests", creation_date=None,
    )  # fmt: skip
    torrent.generate()
    return PrivateTorrent(content, torrent, str(torrent.infohash).lower(), int(torrent.size))


def downloaded_ok(download_dir: Path, torrent: PrivateTorrent) -> bool:
    """Every file of the torrent is under download_dir/<name> with the right sha256."""
    target = download_dir / torrent.name
    if not target.is_dir():
        return False
    return sha256_tree(target) == torrent.expected_hashes()


# ---------------------------------------------------------------- reference tracker


@contextlib.contextmanager
def running_opentracker(workdir: Path, info_hashes: list[str]) -> Iterator[str]:
    """opentracker on loopback, `/announce`; yields its announce URL.

    Debian builds it with an access list: only the listed info hashes are tracked.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    (workdir / "whitelist").write_text("".join(f"{h}\n" for h in info_hashes))
    port = free_port()
    log = workdir / "opentracker.log"
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    command = ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port), *user,
               "-d", str(workdir), "-w", "whitelist"]  # read after its chroot  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, preexec_fn=die_with_parent
        )
    try:
        wait_until(lambda: accepts("127.0.0.1", port), 10, "opentracker to listen")
        yield f"http://127.0.0.1:{port}/announce"
    finally:
        _stop(process)


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- libtorrent


class Libtorrent:
    """One in-process libtorrent session on `ip`; its tracker alerts are kept in `alerts`."""

    name = "libtorrent"

    def __init__(self, ip: str, **extra: Any) -> None:
        import libtorrent as lt

        self.lt = lt
        self.ip = ip
        self.port = free_port(ip)
        settings = {
            "listen_interfaces": f"{ip}:{self.port}",
            "outgoing_interfaces": ip,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_utp": False,
            "allow_multiple_connections_per_ip": True,
            "min_announce_interval": 1,  # its default (300 s) would override the tracker's
            "announce_to_all_trackers": True,
            "alert_mask": lt.alert_category.error
            | lt.alert_category.status
            | lt.alert_category.tracker
            | lt.alert_category.storage,
            **extra,
        }
        # flags=0: no default plugins, hence no ut_pex (and no ut_metadata, not needed here)
        self.session = lt.session(settings, 0)
        self.alerts: list[tuple[str, str]] = []  # (error|reply|announce, text or event)
        self.handles: dict[str, Any] = {}

    def add(self, metainfo: bytes, save_path: Path) -> str:
        """Add a torrent saving to (or seeding from) save_path; returns its info hash."""
        lt = self.lt
        info = lt.torrent_info(lt.bdecode(metainfo))
        params = lt.add_torrent_params()
        params.ti = info
        params.save_path = str(save_path)
        save_path.mkdir(parents=True, exist_ok=True)
        handle = self.session.add_torrent(params)
        info_hash = str(info.info_hashes().v1).lower()
        self.handles[info_hash] = handle
        return info_hash

    def poll(self) -> None:
        """Copy what we need out of new alerts: an alert is freed by the next pop_alerts."""
        lt = self.lt
        for alert in self.session.pop_alerts():
            if isinstance(alert, lt.tracker_error_alert):
                reason = alert.failure_reason() or alert.error_message()
                self.alerts.append(("error", f"{reason} | {alert.message()}"))
            elif isinstance(alert, lt.tracker_reply_alert):
                self.alerts.append(("reply", alert.message()))
            elif isinstance(alert, lt.tracker_announce_alert):
                self.alerts.append(("announce", str(alert.event)))

    def status(self, info_hash: str) -> Any:
        self.poll()
        return self.handles[info_hash].status()

    def is_seeding(self, info_hash: str) -> bool:
        return bool(self.status(info_hash).is_seeding)

    def tracker_errors(self) -> list[str]:
        """The failure reasons (or other errors) the tracker gave, as libtorrent reports them."""
        self.poll()
        return [text for kind, text in self.alerts if kind == "error"]

    def tracker_replies(self) -> int:
        self.poll()
        return sum(kind == "reply" for kind, _ in self.alerts)

    def replies_after_completed(self) -> int:
        """Tracker replies since libtorrent sent its `completed` announce (that reply included)."""
        self.poll()
        completed = ("announce", str(self.lt.event_t.completed))
        if completed not in self.alerts:
            return 0
        return sum(kind == "reply" for kind, _ in self.alerts[self.alerts.index(completed) :])

    def remove(self, info_hash: str, timeout: float = 10) -> None:
        """Remove the torrent once its `stopped` announce has gone out."""
        handle = self.handles.pop(info_hash)
        before = len(self.alerts)
        self.session.remove_torrent(handle)
        stopped = ("announce", str(self.lt.event_t.stopped))

        def stopped_announce_sent() -> bool:
            self.poll()
            return stopped in self.alerts[before:]

        wait_until(stopped_announce_sent, timeout, "libtorrent's `stopped` announce")
        time.sleep(0.2)  # sent, not necessarily answered: the tracker gets a moment

    def close(self) -> None:
        """Pause the session (sends `stopped` for every torrent) and drop it."""
        self.session.pause()
        time.sleep(0.3)
        del self.session


@contextlib.contextmanager
def running_libtorrent(ip: str, **extra: Any) -> Iterator[Libtorrent]:
    client = Libtorrent(ip, **extra)
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------- aria2


class Aria2:
    """One `aria2c` process for one torrent: a leecher exits once complete, a seeder seeds on."""

    name = "aria2"

    def __init__(
        self, torrent_file: Path, download_dir: Path, ip: str, log: Path, *, seed: bool = False
    ) -> None:
        download_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        command = [
            "aria2c",
            "--no-conf=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--disable-ipv6=true",
            f"--interface={ip}",
            f"--listen-port={free_port(ip)}",
            f"--dir={download_dir}",
            *(
                ["--check-integrity=true", "--seed-ratio=0.0"]  # verify, then seed forever
                if seed
                else ["--seed-time=0"]  # exit once complete (after the `completed` announce)
            ),
            "--bt-stop-timeout=60",
            "--summary-interval=0",
            "--file-allocation=none",
            "--console-log-level=notice",
            f"--log={log}.debug",
            "--log-level=info",
            str(torrent_file),
        ]
        self.out = log.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )

    def output(self) -> str:
        text = self.log.read_text(errors="replace")
        debug = Path(f"{self.log}.debug")
        if debug.exists():
            text += debug.read_text(errors="replace")
        return text

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"aria2c did not finish in {timeout:.0f} s; its log:\n{self.output()[-3000:]}"
            ) from None

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # SIGINT: aria2 announces `stopped`
        self.out.close()


@contextlib.contextmanager
def running_aria2(
    torrent_file: Path, download_dir: Path, ip: str, log: Path, *, seed: bool = False
) -> Iterator[Aria2]:
    download = Aria2(torrent_file, download_dir, ip, log, seed=seed)
    try:
        yield download
    finally:
        download.stop()


# ---------------------------------------------------------------- Transmission


class Transmission:
    """transmission-daemon on `ip`, driven with transmission-remote."""

    name = "transmission"

    def __init__(self, workdir: Path, ip: str) -> None:
        self.workdir = workdir
        config = workdir / "config"
        config.mkdir(parents=True, exist_ok=True)
        self.rpc_port = free_port()
        settings = {
            "dht-enabled": False,
            "lpd-enabled": False,
            "pex-enabled": False,
            "utp-enabled": False,
            "port-forwarding-enabled": False,
            "bind-address-ipv4": ip,  # also the source of its tracker requests
            "bind-address-ipv6": "::1",
            "peer-port": free_port(ip),
            "peer-port-random-on-start": False,
            "rpc-enabled": True,
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": self.rpc_port,
            "rpc-whitelist-enabled": False,
            "rpc-host-whitelist-enabled": False,
            "rpc-authentication-required": False,
            "download-dir": str(workdir / "downloads"),
            "incomplete-dir-enabled": False,
            "watch-dir-enabled": False,
            "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False,
            "message-level": 2,
        }
        (config / "settings.json").write_text(json.dumps(settings, indent=1))
        self.log = workdir / "transmission.log"
        self.out = self.log.open("wb")
        self.process = subprocess.Popen(
            ["transmission-daemon", "-f", "-g", str(config), "--log-info"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        wait_until(lambda: self._up(), 15, "transmission-daemon's RPC")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"transmission-daemon exited: {self.log.read_text()[-2000:]}")
        return accepts("127.0.0.1", self.rpc_port)

    def remote(self, *args: str) -> str:
        """Run transmission-remote against this daemon; returns its output."""
        result = subprocess.run(
            ["transmission-remote", f"127.0.0.1:{self.rpc_port}", *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"transmission-remote {args}: {result.stdout}{result.stderr}")
        return result.stdout

    def add(self, torrent_file: Path, download_dir: Path) -> None:
        download_dir.mkdir(parents=True, exist_ok=True)
        out = self.remote("--add", str(torrent_file), "--download-dir", str(download_dir))
        assert "success" in out, out

    def info(self) -> str:
        return self.remote("--torrent", "all", "--info")

    def trackers(self) -> str:
        return self.remote("--torrent", "all", "--info-trackers")

    def percent_done(self) -> int:
        match = re.search(r"Percent Done:\s*([\d.]+)%", self.info())
        return int(float(match.group(1))) if match else 0

    def stop_all(self) -> None:
        """Stop every torrent (Transmission announces `stopped`)."""
        self.remote("--torrent", "all", "--stop")

    def close(self) -> None:
        _stop(self.process, signal.SIGTERM, wait=15)
        self.out.close()


@contextlib.contextmanager
def running_transmission(workdir: Path, ip: str) -> Iterator[Transmission]:
    client = Transmission(workdir, ip)
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------- qBittorrent


class QBittorrent:
    """qbittorrent-nox on `ip`, driven through its WebUI API (no login from localhost)."""

    name = "qbittorrent"

    def __init__(self, workdir: Path, ip: str) -> None:
        self.workdir = workdir
        self.webui_port = free_port()
        peer_port = free_port(ip)
        config = workdir / "qBittorrent" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "qBittorrent.conf").write_text(
            "\n".join(
                [
                    "[LegalNotice]",
                    "Accepted=true",
                    "",
                    "[BitTorrent]",
                    "Session\\DHTEnabled=false",
                    "Session\\LSDEnabled=false",
                    "Session\\PeXEnabled=false",
                    f"Session\\Port={peer_port}",
                    "Session\\Interface=lo",
                    "Session\\InterfaceName=lo",
                    f"Session\\InterfaceAddress={ip}",
                    "Session\\MultiConnectionsPerIp=true",
                    "Session\\SSRFMitigation=true",
                    "Session\\AnonymousModeEnabled=false",
                    "Session\\GlobalMaxSeedingMinutes=-1",
                    "Session\\QueueingSystemEnabled=false",
                    f"Session\\DefaultSavePath={workdir / 'downloads'}",
                    "",
                    "[Network]",
                    "PortForwardingEnabled=false",
                    "",
                    "[Preferences]",
                    "Connection\\UPnP=false",
                    f"Connection\\PortRangeMin={peer_port}",
                    "General\\Locale=en",
                    "WebUI\\Address=127.0.0.1",
                    f"WebUI\\Port={self.webui_port}",
                    "WebUI\\LocalHostAuth=false",
                    "WebUI\\HostHeaderValidation=false",
                    "WebUI\\CSRFProtection=false",
                    "WebUI\\UseUPnP=false",
                    "",
                ]
            )
        )
        self.url = f"http://127.0.0.1:{self.webui_port}"
        self.http = requests.Session()
        self.log = workdir / "qbittorrent.log"
        self.out = self.log.open("wb")
        self.process = subprocess.Popen(
            ["qbittorrent-nox", f"--profile={workdir}", f"--webui-port={self.webui_port}"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            env={**os.environ, "HOME": str(workdir), "QT_QPA_PLATFORM": "offscreen"},
        )
        wait_until(self._up, 20, "qBittorrent's WebUI")
        preferences = self.api("GET", "app/preferences")
        switched_off = {k: preferences[k] for k in ("dht", "lsd", "pex", "upnp")}
        assert switched_off == dict.fromkeys(switched_off, False), switched_off  # upnp: + NAT-PMP
        assert preferences["current_interface_address"] == ip, preferences

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"qbittorrent-nox exited: {self.log.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            return self.http.get(f"{self.url}/api/v2/app/version", timeout=2).ok
        return False

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.url}/api/v2/{path}", timeout=10, **kwargs)
        assert response.ok, f"qBittorrent {path}: {response.status_code} {response.text}"
        return (
            response.json() if "json" in response.headers.get("content-type", "") else response.text
        )

    def add(self, metainfo: bytes, save_path: Path) -> None:
        save_path.mkdir(parents=True, exist_ok=True)
        reply = self.api(
            "POST", "torrents/add",
            files={"torrents": ("t.torrent", metainfo, "application/x-bittorrent")},
            data={"savepath": str(save_path), "autoTMM": "false"},
        )  # fmt: skip
        assert reply.strip() == "Ok.", reply

    def torrent(self, info_hash: str) -> dict[str, Any] | None:
        found = self.api("GET", "torrents/info", params={"hashes": info_hash})
        return found[0] if found else None

    def trackers(self, info_hash: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "GET", "torrents/trackers", params={"hash": info_hash}
        )
        return [t for t in found if t["url"].startswith("http")]

    def progress(self, info_hash: str) -> float:
        torrent = self.torrent(info_hash)
        return float(torrent["progress"]) if torrent else 0.0

    def pause_all(self) -> None:
        self.api("POST", "torrents/pause", data={"hashes": "all"})

    def close(self) -> None:
        self.http.close()
        _stop(self.process, signal.SIGTERM, wait=15)
        self.out.close()


@contextlib.contextmanager
def running_qbittorrent(workdir: Path, ip: str) -> Iterator[QBittorrent]:
    client = QBittorrent(workdir, ip)
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------- rtorrent


class RTorrent:
    """rtorrent as a daemon (no terminal UI) loading one .torrent given in its rc file.

    It is watched from the outside: the files on disk, its log. rtorrent never
    sends `completed`, which is why a snatch must be seen as left going to 0.
    """

    name = "rtorrent"

    def __init__(self, torrent_file: Path, download_dir: Path, ip: str, workdir: Path) -> None:
        session = workdir / "session"
        session.mkdir(parents=True, exist_ok=True)
        download_dir.mkdir(parents=True, exist_ok=True)
        port = free_port(ip)
        self.log = workdir / "rtorrent.log"
        self.finished_marker = workdir / "finished"
        rc = workdir / "rtorrent.rc"
        rc.write_text(
            "\n".join(
                [
                    f"directory.default.set = {download_dir}",
                    f"session.path.set = {session}",
                    f"network.port_range.set = {port}-{port}",
                    "network.port_random.set = no",
                    f"network.bind_address.set = {ip}",
                    "dht.mode.set = disable",
                    "protocol.pex.set = no",
                    "trackers.use_udp.set = no",
                    "protocol.encryption.set = allow_incoming,try_outgoing,enable_retry",
                    "system.daemon.set = true",
                    f'log.open_file = "main", "{self.log}"',
                    'log.add_output = "info", "main"',
                    'log.add_output = "tracker_info", "main"',
                    # a marker file once rtorrent itself holds the download complete
                    "method.set_key = event.download.finished, distleech_mark,"
                    f' "execute.nothrow = touch, {self.finished_marker}"',
                    f"load.start_verbose = {torrent_file}",
                    "",
                ]
            )
        )
        self.out = (workdir / "rtorrent.out").open("wb")
        self.process = subprocess.Popen(
            ["rtorrent", "-n", "-o", f"import={rc}"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(workdir), "TERM": "dumb"},
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def finished(self) -> bool:
        """rtorrent's own event.download.finished has fired."""
        return self.finished_marker.exists()

    def close(self) -> None:
        _stop(self.process, signal.SIGINT, wait=15)  # rtorrent announces `stopped` on exit
        self.out.close()


@contextlib.contextmanager
def running_rtorrent(
    torrent_file: Path, download_dir: Path, ip: str, workdir: Path
) -> Iterator[RTorrent]:
    client = RTorrent(torrent_file, download_dir, ip, workdir)
    try:
        yield client
    finally:
        client.close()
