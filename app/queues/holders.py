"""The lease life cycle every queued aggregate shares, and who holds a leased item:
one holder, or, after two sites leased it while apart, several.

A projection's `lease` is `{holder, leased_at, expires_at}` as it always was.
When another site's lease of the same item arrives, the item keeps both:
`also_held_by` lists the others (each `{holder, leased_at, expires_at}`),
`holder_expires_at` keeps the first holder's own expiry, and `expires_at`
becomes the latest of all, so the reaper returns the item only when every
lease has run out. A holder whose lease ends (it expired, it was released,
its worker reported the item not found) leaves; the item is ready again only
when nobody holds it. A holder still at work may renew its own lease
(`lease_renewed` {holder, expires_at}), so long work is not reaped and
handed to a second worker while the first still runs.
"""

from __future__ import annotations

from typing import Any

Lease = dict[str, Any]
Doc = dict[str, Any]
LEASED = "leased"
READY = "ready"


def holders_of(lease: Lease | None) -> list[Lease]:
    """Every holder of a lease, the first one first."""
    if not lease:
        return []
    first = {
        "holder": lease["holder"],
        "leased_at": lease["leased_at"],
        "expires_at": lease.get("holder_expires_at", lease["expires_at"]),
    }
    return [first, *lease.get("also_held_by", [])]


def lease_of(holders: list[Lease]) -> Lease | None:
    """The projection's `lease` for these holders (None when nobody holds it)."""
    if not holders:
        return None
    first, *others = holders
    lease = dict(first)
    if others:
        lease["also_held_by"] = others
        lease["holder_expires_at"] = first["expires_at"]
        lease["expires_at"] = max(h["expires_at"] for h in holders)
    return lease


def with_holder(lease: Lease | None, new: Lease) -> Lease | None:
    """The lease with another holder added (one that holds it already is not added twice)."""
    holders = holders_of(lease)
    if any(h["holder"] == new["holder"] and h["leased_at"] == new["leased_at"] for h in holders):
        return lease
    return lease_of([*holders, new])


def with_renewed_holder(lease: Lease | None, holder: str, expires_at: str) -> Lease | None:
    """The lease with `holder`'s own expiry moved on to `expires_at` (never back); others
    keep theirs. A lease this holder is not part of is returned unchanged."""
    holders = [
        {**h, "expires_at": max(h["expires_at"], expires_at)} if h["holder"] == holder else h
        for h in holders_of(lease)
    ]
    return lease_of(holders) if holders else lease


def without_holders(lease: Lease | None, names: list[str] | None) -> Lease | None:
    """The lease once these holders left; `names` None (an event that does not say
    whose lease ended) means all of them."""
    if names is None:
        return None
    return lease_of([h for h in holders_of(lease) if h["holder"] not in names])


def expired_holders(lease: Lease | None, now_iso: str) -> list[str]:
    """The holders whose own lease has run out by `now_iso`."""
    return [h["holder"] for h in holders_of(lease) if h["expires_at"] <= now_iso]


def apply_lease_event(state: Doc, event: Doc) -> bool:
    """Apply the lease life-cycle events every queued aggregate shares; True if handled.

    A lease is decided on ready work. One that meets work already leased in
    the fold (another site leased it while apart) adds a holder; one that
    meets work no longer in the queue (another site's result filled it) is
    kept only in the log. On one site neither happens: the decision saw the
    state the fold sees.
    """
    name, data = event["name"], event["data"]
    if name == "leased":
        lease = {"holder": data["holder"], "leased_at": event["at"]}
        lease["expires_at"] = data["expires_at"]
        state["leases"] = state.get("leases", 0) + 1
        if state.get("state") == LEASED:
            state["lease"] = with_holder(state.get("lease"), lease)
        elif state.get("state") == READY:
            state["state"] = LEASED
            state["lease"] = lease
    elif name == "lease_renewed":  # a holder still at work extends its own lease
        if state.get("state") == LEASED:
            state["lease"] = with_renewed_holder(
                state.get("lease"), data["holder"], data["expires_at"]
            )
    elif name in ("lease_expired", "released"):
        names = data.get("holders") or ([data["holder"]] if data.get("holder") else None)
        end_lease(state, names, event["at"])
    else:
        return False
    return True


def end_lease(state: Doc, names: list[str] | None, at: str) -> None:
    """These holders' leases ended (None: whoever held it); ready again once nobody holds it."""
    if state.get("state") != LEASED:
        state["lease"] = None
        return
    state["lease"] = without_holders(state.get("lease"), names)
    if state["lease"] is None:
        state["state"] = READY
        state["available_at"] = at
