"""The HTTP API (aiohttp), on its own listen address (default 127.0.0.1:8053).

  GET  /healthz                       the process is alive
  GET  /readyz                        zones loaded and the first health round complete
  GET  /metrics                       Prometheus text format
  GET  /v1/status                     zones, members with state, last results, overrides
  GET  /v1/explain?name=&type=&client=&ecs=    how a name is answered, and why
  GET  /v1/history                    samples every 2 s: queries answered, members in rotation
  GET  /                              the status page (self-refreshing, no build step)
  GET|PUT|DELETE /v1/zones, /v1/zones/{zone}   zones as data (gslb.server.zone_api)
  POST /v1/members/{zone}/{pool}/{member}/{action}   drain | down | up | clear
       body (optional JSON): {"for": seconds} or {"until": unix_time}; in a cluster also
       "revision" (replace the override of that revision; without it, an existing override
       is a 409 conflict) and "local": true (this node only; needed while the store is
       unreachable, else 503)
       needs "Authorization: Bearer <token>"; without a valid one: 401, nothing changes

Admin requests are logged; overrides persist in the state directory.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from gslb.answer.explain import explain
from gslb.answer.state import ServingState
from gslb.cluster.node import Cluster, Conflict, Unreachable
from gslb.dns import names
from gslb.health.overrides import ACTIONS, Override, Overrides
from gslb.health.process import ProberProcess
from gslb.health.view import NOT_RESOLVED, alias_key, check_key, member_key
from gslb.secondaries.notify import Notifier
from gslb.secondaries.xfr import Transfers
from gslb.server.alerts import Alerts
from gslb.server.metrics import QueryStats, RuntimeFacts, render
from gslb.server.options import ServeOptions
from gslb.server.zone_api import Synced
from gslb.server.zone_api import add_routes as add_zone_routes
from gslb.zones.directory import ZoneSet
from gslb.zones.model import Zone

admin_log = logging.getLogger("gslb.admin")  # every admin action and refusal (docs/api.md)

MAX_BODY = 4096
SAMPLE_INTERVAL = 2.0
STATUS_PAGE = (Path(__file__).parent / "static" / "status.html").read_text(encoding="utf-8")


NOTIFY_WAITS = (1.0, 2.0, 3.0)  # gslb notify: four tries, within the CLI's patience


class ServerView(Protocol):
    state: ServingState
    transfers: Transfers
    notifier: Notifier
    stats: QueryStats
    facts: RuntimeFacts
    prober: ProberProcess
    overrides: Overrides
    cluster: Cluster | None
    alerts: Alerts
    api_token: str | None
    history: collections.deque[dict[str, float]]
    opts: ServeOptions
    zoneset: ZoneSet

    @property
    def zone_sync(self) -> Synced | None: ...

    async def reload(self) -> bool: ...
    def zones(self) -> list[Zone]: ...
    def overrides_changed(self) -> None: ...
    def tcp_open(self) -> int: ...
    def all_stats(self) -> QueryStats: ...
    def worker_status(self) -> list[dict[str, object]]: ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=1, default=str), status=status, content_type="application/json"
    )


def make_app(server: ServerView) -> web.Application:
    # the zone API's PUT reads its body itself, up to api_zone_max_bytes; others: MAX_BODY
    app = web.Application(client_max_size=max(MAX_BODY, server.opts.api_zone_max_bytes + 1))
    routes = web.RouteTableDef()
    add_zone_routes(routes, server, _refuse)

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        why = []
        if not server.state.zones:
            why.append("no zone loaded")
        if server.prober.targets and not server.prober.first_round:
            why.append("first health round not complete")
        if why:
            return _json({"ready": False, "why": why}, 503)
        return _json({"ready": True})

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        # promptly, also while the prober is stalled: then its last counters, with their age
        got, age = await server.prober.cached("stats")
        if got:
            server.facts.prober = got
        server.facts.prober_stats_age = age or 0.0
        server.facts.prober_stalled = server.prober.stalled
        server.facts.prober_restarts = server.prober.restarts
        server.facts.tcp_open = server.tcp_open()
        server.facts.override_write_errors = server.overrides.write_errors
        geo = server.state.geo
        server.facts.geoip_reload_errors = getattr(geo, "reload_errors", 0)
        if server.cluster is not None:
            server.facts.cluster = server.cluster.status()
            server.facts.cluster_errors = server.cluster.errors
            server.facts.cluster_reconnects = server.cluster.reconnects
        server.facts.alerts = server.alerts.status()
        body = render(server.all_stats(), server.state, server.facts)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    @routes.get("/v1/status")
    async def status(request: web.Request) -> web.Response:
        got, age = await server.prober.cached("status")
        doc = status_doc(server, got.get("targets", {}))
        doc["transitions"] = got.get("transitions", [])
        doc["alerts"] = server.alerts.status()
        doc["prober"]["status_age"] = age  # None: fresh from the prober; else seconds old
        return _json(doc)

    @routes.get("/v1/history")
    async def history(request: web.Request) -> web.Response:
        return _json({"interval": SAMPLE_INTERVAL, "samples": list(server.history)})

    @routes.get("/")
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=STATUS_PAGE, content_type="text/html")

    @routes.get("/v1/explain")
    async def explain_(request: web.Request) -> web.Response:
        q = request.query
        if "name" not in q:
            return _json({"error": "name= is required"}, 400)
        try:
            out = explain(
                server.state,
                q["name"],
                q.get("type", "A"),
                q.get("client") or request.remote or "",
                q.get("ecs"),
            )
        except (ValueError, KeyError) as e:
            return _json({"error": str(e)}, 400)
        return _json(out)

    @routes.post("/v1/members/{zone}/{pool}/{member}/{action}")
    async def admin(request: web.Request) -> web.Response:
        refused = _refuse(request, server.api_token)
        if refused is not None:
            return refused
        action = request.match_info["action"]
        if action not in (*ACTIONS, "clear"):
            return _json({"error": f"action must be one of {', '.join((*ACTIONS, 'clear'))}"}, 404)
        found = _find_member(server.zones(), **{k: request.match_info[k] for k in ("zone", "pool", "member")})
        if isinstance(found, str):
            return _json({"error": found}, 404)
        key = found
        expires = None
        if request.can_read_body:
            if (request.content_length or 0) > MAX_BODY:
                return _json({"error": f"the body is over {MAX_BODY} bytes"}, 413)
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return _json(
                    {"error": 'the body must be JSON: {} or {"for": seconds} or {"until": unix_time}'}, 400
                )
            if not isinstance(body, dict) or set(body) - {"for", "until", "revision", "local"}:
                return _json(
                    {"error": "only 'for' (seconds), 'until' (Unix time), 'revision', 'local' are allowed"},
                    400,
                )
            try:
                if "for" in body:
                    expires = time.time() + float(body["for"])
                elif "until" in body:
                    expires = float(body["until"])
            except (TypeError, ValueError):
                return _json({"error": "'for' and 'until' are numbers"}, 400)
        else:
            body = {}
        who = f"api {request.remote}"
        cluster = server.cluster
        if cluster is not None and body.get("local") is not True:
            return await _cluster_admin(server, cluster, key, action, expires, who, body.get("revision"))
        if action == "clear":
            changed = server.overrides.clear(key, who)
        else:
            server.overrides.set(Override(*key, action, time.time(), expires, who))  # type: ignore[arg-type]
            changed = True
        if changed:
            server.overrides_changed()
        scope = "this node only" if cluster is not None else ""
        return _json(
            {
                "member": "/".join(key),
                "action": action,
                "expires": expires,
                "changed": changed,
                "scope": scope,
            }
        )

    @routes.post("/v1/zones/{zone}/notify")
    async def notify(request: web.Request) -> web.Response:
        refused = _refuse(request, server.api_token)
        if refused is not None:
            return refused
        text = request.match_info["zone"]
        try:
            origin = names.from_text(text if text.endswith(".") else text + ".").lower()
        except ValueError as e:
            return _json({"error": f"bad zone name: {e}"}, 400)
        zone = server.state.zones.get(origin)
        if zone is None:
            return _json({"error": f"no zone {names.to_text(origin)} is served here"}, 404)
        targets = server.transfers.notify_targets(origin)
        if not targets:
            return _json(
                {"error": f"zone {names.to_text(origin)} has no notify targets (transfers: notify)"}, 404
            )
        admin_log.info(
            "admin: NOTIFY %s serial %d (by api %s)", names.to_text(origin), zone.serial, request.remote
        )
        results = await asyncio.gather(*server.notifier.start(zone, NOTIFY_WAITS), return_exceptions=True)
        return _json(
            {
                "zone": names.to_text(origin),
                "serial": zone.serial,
                "targets": [
                    {"target": str(t), "result": r if isinstance(r, str) else f"failed: {r!r}"}
                    for t, r in zip(targets, results, strict=True)
                ],
            }
        )

    app.add_routes(routes)
    return app


async def _cluster_admin(
    server: ServerView,
    cluster: Cluster,
    key: tuple[str, str, str],
    action: str,
    expires: float | None,
    who: str,
    revision: object,
) -> web.Response:
    """An override for every node, through the store, compare-and-swap."""
    if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int)):
        return _json({"error": "'revision' is the override's revision, a whole number"}, 400)
    member = "/".join(key)
    try:
        if action == "clear":
            changed = await cluster.clear_override(key, revision)
            rev = 0
        else:
            o = Override(*key, action, time.time(), expires, f"{who} via {cluster.node}")  # type: ignore[arg-type]
            rev = await cluster.set_override(o, revision)
            changed = True
    except Conflict as c:
        cur = c.current
        what = f"{cur.action} by {cur.by}" if cur is not None else "none"
        admin_log.warning(
            "admin: refused %s %s (by %s): conflict, the override is now %s", action, member, who, what
        )
        return _json(
            {
                "error": f"conflict: the override of {member} is now {what} (revision {c.revision}); "
                f'repeat with "revision": {c.revision} (gslb {action} --replace) to replace it',
                "current": None if cur is None else asdict(cur),
                "revision": c.revision,
            },
            409,
        )
    except Unreachable as e:
        admin_log.warning("admin: refused %s %s (by %s): %s", action, member, who, e)
        return _json(
            {
                "error": f"{e}: the override was not set anywhere. To set it on this node only, "
                'send {"local": true} (gslb ' + action + " --local)"
            },
            503,
        )
    admin_log.warning("admin: %s %s on every node (by %s, revision %d)", action, member, who, rev)
    server.overrides_changed()
    return _json(
        {"member": member, "action": action, "expires": expires, "changed": changed, "scope": "cluster",
         "revision": rev}
    )  # fmt: skip


def _refuse(request: web.Request, token: str | None) -> web.Response | None:
    """The 401 for an admin request without the token (logged), or None when it has it."""
    if _authorized(request, token):
        return None
    admin_log.warning(
        "admin: refused %s %s from %s (bad or missing token)", request.method, request.path, request.remote
    )
    return _json({"error": "a valid bearer token is required"}, 401)


def _authorized(request: web.Request, token: str | None) -> bool:
    if not token:
        return False
    got = request.headers.get("Authorization", "")
    if not got.startswith("Bearer "):
        return False
    return hmac.compare_digest(got[7:].strip().encode(), token.encode())


def _find_member(zones: list[Zone], zone: str, pool: str, member: str) -> tuple[str, str, str] | str:
    zname = zone if zone.endswith(".") else zone + "."
    for z in zones:
        if names.to_text(z.origin) != zname.lower():
            continue
        for p in z.pools:
            if p.name != pool:
                continue
            for m in p.members:
                if member in (m.name, m.ident, m.ident.rstrip(".")):
                    return member_key(z, p.name, m)
            return f"no member {member!r} in pool {pool!r} of {zname}"
        return f"no pool {pool!r} in {zname}"
    return f"no zone {zname}"


def sample(server: ServerView) -> dict[str, float]:
    """One point of /v1/history: time, queries answered so far, members in rotation."""
    state = server.state
    total = members = 0
    for cz in state.zones.values():
        for p in cz.zone.pools:
            for m in p.members:
                members += 1
                total += state.health.is_up(member_key(cz.zone, p.name, m), m)
    return {"t": time.time(), "queries": float(sum(server.all_stats().queries.values())),
            "in_rotation": float(total), "members": float(members)}  # fmt: skip


def status_doc(server: ServerView, targets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    state = server.state
    cluster = server.cluster
    # the override each member is under, and where it lives: this node's own ones win
    overrides: dict[tuple[str, str, str], tuple[Override, int, str]] = {}
    if cluster is not None:
        now = time.time()
        for k, (co, rev) in cluster.overrides.items():
            if co.expires is None or co.expires > now:
                overrides[k] = (co, rev, "cluster")
    for k, lo in server.overrides.items.items():
        overrides[k] = (lo, 0, "this node only" if cluster is not None else "")
    votes = state.health.votes
    by_member: dict[str, dict[str, Any]] = {}
    for ident, t in targets.items():
        for label in t.get("members", []):
            by_member[label] = {**t, "target": ident}
    zones_out, members = [], []
    for cz in state.zones.values():
        z = cz.zone
        zones_out.append({"zone": names.to_text(z.origin), "file": z.path, "serial": cz.serial})
        checks = {c.name: c for c in z.checks}
        for p in z.pools:
            for m in p.members:
                k = member_key(z, p.name, m)
                label = f"{k[0]}/{p.name}/{m.name}"
                t = by_member.get(label, {})
                ov = overrides.get(k)
                t_votes = votes.get(k)
                st = state.health.state_of(k, m)  # the state the answers use, and why
                members.append(
                    {
                        "zone": k[0],
                        "pool": p.name,
                        "name": m.name,
                        "address": k[2],
                        "weight": m.weight,
                        "in_rotation": st.in_rotation,
                        "state": st.state,
                        "why": st.why,
                        "status": m.status,
                        "check": p.check,
                        "check_state": None if not t else ("up" if t["up"] else "down"),
                        "since": t.get("since"),
                        "last": t.get("last"),
                        "last_error": t.get("last_error"),
                        "load": t.get("load"),
                        "override": None
                        if ov is None
                        else {
                            "action": ov[0].action,
                            "expires": ov[0].expires,
                            "by": ov[0].by,
                            "set_at": ov[0].set_at,
                            "revision": ov[1] or None,
                            "scope": ov[2],
                        },
                        "votes": None
                        if t_votes is None
                        else [
                            {"node": n, "up": o.up, "reason": o.reason, "since": o.since, "rtt": o.rtt}
                            for n, o in t_votes.votes
                        ],
                        "interval": checks[p.check_names[0]].interval if p.check_names else None,
                    }
                )
                if p.checks:  # calculated: each child check's word, and what they make together
                    kids = [check_key(z, p.name, m, c) for c in p.checks]
                    up = state.health.combined_up(k, m, tuple(kids), p.checks_needed)
                    n_up = sum(ck not in state.health.down for ck in kids)
                    members[-1]["checks"] = [
                        {
                            "check": c,
                            "state": state.health.state_of(ck, m).state,
                            "last_error": by_member.get(f"{label} check:{c}", {}).get("last_error"),
                        }
                        for c, ck in zip(p.checks, kids, strict=True)
                    ]
                    if m.status == "obey" and k not in state.health.forced:
                        members[-1].update(
                            in_rotation=up,
                            state="up" if up else "down",
                            why=f"calculated: {n_up} of {len(kids)} checks up, {p.checks_needed} needed",
                        )
                if m.alias is not None:  # its name's addresses now, each with its probe's word
                    r = state.aliases.get(m.alias, NOT_RESOLVED)
                    members[-1]["alias"] = {
                        "resolved": r.why,
                        "stale": r.stale,
                        "gone": r.gone,
                        "addresses": [
                            {
                                "address": a,
                                "down": alias_key(z, p.name, m, a) in state.health.down,
                                "last_error": by_member.get(f"{label} {a}", {}).get("last_error"),
                            }
                            for a in (*r.v4, *r.v6)
                        ],
                    }
                    if r.gone and st.in_rotation:
                        members[-1].update(in_rotation=False, state="down", why=f"alias: {r.why}")
    return {
        "zones": zones_out,
        "members": members,
        "prober": {
            "targets": server.prober.targets,
            "first_round": server.prober.first_round,
            "stalled": server.prober.stalled,
            "restarts": server.prober.restarts,
        },
        "workers": server.worker_status(),
        "cluster": None if cluster is None else cluster.status(),
    }
