"""A model of sites leasing apart, for lags and work times a bench run cannot wait for.

The real simulation (bench/sites_sim.py) runs three bundled servers with
fifty workers for a few minutes; real archiving runs for days, with workers
that spend minutes on a batch (a Gazelle site allows a few requests per ten
seconds). This model replays the leasing policy of app/queues/leasing.py —
own share first, oldest first; then the other shares from the far end, the
next site's share first — with each site learning of the others' leases
only through its periodic pulls: a pull that starts every `lag + round`
seconds (the replicator sleeps `lag` after a round that takes `round`) and
brings every lease written before it started. `round` is measured by the
real simulation, which also runs the model with its own parameters so the
two can be compared.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import zlib

SITE_NAMES = ("alpha", "beta", "gamma")


@dataclasses.dataclass(frozen=True)
class Scenario:
    albums: int
    sites: int
    workers: int  # in all, spread over the sites
    rows: int  # albums per lease call
    work_seconds: tuple[float, float]  # a batch takes this long, uniformly
    lag: float  # seconds a replicator sleeps between rounds
    round_seconds: float  # how long one round (pull from every site, project) takes
    shares: bool


class ModelSite:
    """What one site hands out and what it knows of the others' leases."""

    def __init__(self, index: int, scenario: Scenario, rng: random.Random) -> None:
        self.index = index
        count = scenario.sites if scenario.shares else 1
        own = index if scenario.shares else 0
        ranked: list[list[int]] = [[] for _ in range(count)]
        for album in range(scenario.albums):
            share = zlib.adler32(f"album:{album}".encode()) % count
            ranked[(share - own) % count].append(album)
        # own share oldest first; the others from their far end (work stealing)
        self.order = ranked[0] + [a for rank in ranked[1:] for a in reversed(rank)]
        self.cursor = 0  # everything before it is leased, as far as this site knows
        self.round = scenario.round_seconds
        self.period = scenario.lag + scenario.round_seconds
        self.offset = rng.uniform(0, self.period)  # replicators do not start in step

    def last_pull_start(self, now: float) -> float:
        """When the last pull that has finished by `now` started (-inf: none yet).
        Pull k starts at offset + k × period and ends `round` later."""
        k = (now - self.round - self.offset) // self.period
        return self.offset + k * self.period if k >= 0 else float("-inf")


def simulate(scenario: Scenario, seed: int = 1) -> dict[str, float]:
    """Double leases per 1,000 leases, and how many leases were handed out."""
    rng = random.Random(seed)
    sites = [ModelSite(i, scenario, rng) for i in range(scenario.sites)]
    leased_at: dict[int, dict[int, float]] = {}  # album -> {site: first lease time}
    wakeups = [(0.0, n, n % scenario.sites) for n in range(scenario.workers)]
    heapq.heapify(wakeups)
    leases = doubles = 0
    while wakeups:
        now, worker, index = heapq.heappop(wakeups)
        site = sites[index]
        known_before = site.last_pull_start(now)
        taken: list[int] = []
        while site.cursor < len(site.order) and len(taken) < scenario.rows:
            album = site.order[site.cursor]
            holders = leased_at.get(album, {})
            if not any(t <= known_before for t in holders.values()):
                taken.append(album)  # as far as this site knows, nobody holds it
            site.cursor += 1
        if not taken:
            continue  # this worker finds nothing: it stops
        for album in taken:
            holders = leased_at.setdefault(album, {})
            doubles += bool(holders)
            holders.setdefault(index, now)
        leases += len(taken)
        heapq.heappush(wakeups, (now + rng.uniform(*scenario.work_seconds), worker, index))
    return {"leases": leases, "double_leases": doubles, "double_per_1000": 1000 * doubles / leases}
