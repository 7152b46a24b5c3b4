"""Counters the serving path keeps, and their Prometheus exposition.

The DNS hot path only increments plain dict counters (``QueryStats``); names,
labels and types are produced at scrape time by :func:`render`, with
prometheus-client's exposition format. Naming follows Prometheus
conventions: ``gslb_`` prefix, ``_total`` for counters, base units (seconds).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from gslb.answer.state import ServingState, StatsKey
from gslb.dns import names
from gslb.dns.consts import rcode_name, type_name
from gslb.dns.wire import question_end
from gslb.health.view import check_key, member_key

XFR_OUTCOMES = (
    "axfr", "ixfr", "ixfr_current", "ixfr_as_axfr", "refused", "badkey", "badsig", "badtime", "formerr",
)  # fmt: skip


@dataclass(slots=True)
class QueryStats:
    """Per-query counters, incremented by the transports from the reply bytes."""

    # (zone origin or b"", qtype, rcode, transport): see gslb.answer.respond.stats_key
    queries: collections.Counter[StatsKey] = field(default_factory=collections.Counter)
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    balanced: collections.Counter[tuple[bytes, str, str]] = field(default_factory=collections.Counter)
    rrl: collections.Counter[str] = field(default_factory=collections.Counter)  # dropped / slipped
    tcp_accepted: int = 0
    tcp_refused: int = 0
    # the worker processes' DNSSEC signer counters, (zone origin, made|hit|miss): the
    # primary's own are read from its signers at scrape time (signer_counts)
    signing: collections.Counter[tuple[bytes, str]] = field(default_factory=collections.Counter)
    # DNS cookies seen: valid, fresh (a client cookie, or a server cookie not ours),
    # malformed, badcookie (BADCOOKIE sent in place of a rate-limited answer)
    cookies: collections.Counter[str] = field(default_factory=collections.Counter)
    # TSIG-signed queries (other than transfers): valid, badkey, badsig, badtime
    tsig: collections.Counter[str] = field(default_factory=collections.Counter)
    # AXFR/IXFR requests by outcome: axfr, ixfr, ixfr_current, ixfr_as_axfr, refused,
    # badkey, badsig, badtime, formerr
    transfers: collections.Counter[str] = field(default_factory=collections.Counter)

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data (what a worker process reports to the primary)."""
        return {
            "queries": dict(self.queries),
            "dropped": dict(self.dropped),
            "balanced": dict(self.balanced),
            "rrl": dict(self.rrl),
            "cookies": dict(self.cookies),
            "tsig": dict(self.tsig),
            "transfers": dict(self.transfers),
            "tcp_accepted": self.tcp_accepted,
            "tcp_refused": self.tcp_refused,
        }

    def merged(self, snapshots: Iterable[dict[str, Any]]) -> QueryStats:
        """These counters plus the workers' last snapshots: the whole server's."""
        out = QueryStats(
            collections.Counter(self.queries),
            collections.Counter(self.dropped),
            collections.Counter(self.balanced),
            collections.Counter(self.rrl),
            self.tcp_accepted,
            self.tcp_refused,
            collections.Counter(self.signing),
            collections.Counter(self.cookies),
            collections.Counter(self.tsig),
            collections.Counter(self.transfers),
        )
        for snap in snapshots:
            out.queries.update(snap["queries"])
            out.dropped.update(snap["dropped"])
            out.balanced.update(snap["balanced"])
            out.rrl.update(snap["rrl"])
            out.tcp_accepted += snap["tcp_accepted"]
            out.tcp_refused += snap["tcp_refused"]
            out.signing.update(snap.get("signing", {}))
            out.cookies.update(snap.get("cookies", {}))
            out.tsig.update(snap.get("tsig", {}))
            out.transfers.update(snap.get("transfers", {}))
        return out


def signer_counts(state: ServingState) -> dict[tuple[bytes, str], int]:
    """The state's DNSSEC signer counters: (zone origin, made|hit|miss) -> count."""
    out: dict[tuple[bytes, str], int] = {}
    for origin, s in state.signers.items():
        out[(origin, "made")], out[(origin, "hit")], out[(origin, "miss")] = (
            s.stats.made,
            s.stats.hits,
            s.stats.misses,
        )
    return out


@dataclass(slots=True)
class RuntimeFacts:
    """What the runtime knows at scrape time, besides the serving state."""

    reloads_ok: int = 0
    reloads_failed: int = 0
    last_good_load: float = 0.0
    tcp_open: int = 0
    geoip_reload_errors: int = 0
    override_write_errors: int = 0
    prober: dict[str, Any] = field(default_factory=dict)  # from ProberProcess.stats()
    prober_stats_age: float = 0.0  # seconds since the prober gave those counters (0: fresh)
    prober_stalled: bool = False
    prober_restarts: int = 0
    cluster: dict[str, Any] | None = None  # Cluster.status() in cluster mode
    cluster_errors: int = 0
    cluster_reconnects: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)  # Alerts.status(), one per webhook
    # alias name -> [resolutions that succeeded, that failed] (gslb.server.aliases.AliasStats)
    alias_resolutions: dict[str, list[int]] = field(default_factory=dict)


class _Collector(Collector):
    def __init__(self, stats: QueryStats, state: ServingState, facts: RuntimeFacts) -> None:
        self.stats, self.state, self.facts = stats, state, facts

    def _cluster(self) -> Iterable[Metric]:
        yield from _cluster_metrics(self.facts)
        if self.state.signers:  # this process's signers plus the workers' (QueryStats.signing)
            counts = collections.Counter(signer_counts(self.state))
            counts.update(self.stats.signing)
            made = CounterMetricFamily("gslb_dnssec_signatures", "RRSIGs computed, by zone", labels=["zone"])
            hits = CounterMetricFamily(
                "gslb_dnssec_signature_cache",
                "Signature cache lookups, by zone and result",
                labels=["zone", "result"],
            )
            for origin in self.state.signers:
                z = names.to_text(origin)
                made.add_metric([z], counts[(origin, "made")])
                hits.add_metric([z, "hit"], counts[(origin, "hit")])
                hits.add_metric([z, "miss"], counts[(origin, "miss")])
            yield made
            yield hits

    def _alerts(self) -> Iterable[Metric]:
        hooks = self.facts.alerts
        if not hooks:
            return
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "delivered": CounterMetricFamily(
                "gslb_alert_deliveries", "Alert events delivered", labels=["webhook"]
            ),
            "failures": CounterMetricFamily(
                "gslb_alert_delivery_failures", "Failed alert posts (each retry counts)", labels=["webhook"]
            ),
            "rejected": CounterMetricFamily(
                "gslb_alert_rejected",
                "Alert events a receiver refused with a 4xx (not retried)",
                labels=["webhook"],
            ),
            "dropped": CounterMetricFamily(
                "gslb_alert_dropped", "Alert events pushed out of a full queue", labels=["webhook"]
            ),
            "queued": GaugeMetricFamily(
                "gslb_alert_queued", "Alert events waiting for delivery", labels=["webhook"]
            ),
        }
        for h in hooks:
            for key, fam in fams.items():
                fam.add_metric([h["webhook"]], h[key])
        yield from fams.values()

    def collect(self) -> Iterable[Metric]:
        yield from self._queries()
        yield from self._alerts()
        yield from self._balanced()
        yield from self._members()
        yield from self._zones()
        yield from self._prober()
        yield from self._aliases()
        yield from self._cluster()
        f = self.facts
        reloads = CounterMetricFamily("gslb_zone_reloads", "Zone file loads, by result", labels=["result"])
        reloads.add_metric(["success"], f.reloads_ok)
        reloads.add_metric(["failure"], f.reloads_failed)
        yield reloads
        yield GaugeMetricFamily(
            "gslb_zone_last_good_load_timestamp_seconds",
            "Unix time of the last successful zone load",
            value=f.last_good_load,
        )
        yield GaugeMetricFamily("gslb_tcp_connections", "Open DNS-over-TCP connections", value=f.tcp_open)
        yield CounterMetricFamily(
            "gslb_geoip_reload_errors",
            "GeoIP database changes that could not be read (the last good one serves)",
            value=f.geoip_reload_errors,
        )
        w = CounterMetricFamily(
            "gslb_state_write_errors", "Failed writes to the state directory, by file", labels=["file"]
        )
        w.add_metric(["health.json"], f.prober.get("state_write_errors", 0))
        w.add_metric(["overrides.json"], f.override_write_errors)
        yield w
        tcp = CounterMetricFamily(
            "gslb_tcp_connections_accepted", "DNS-over-TCP connections, by outcome", labels=["outcome"]
        )
        tcp.add_metric(["accepted"], self.stats.tcp_accepted)
        tcp.add_metric(["refused_over_limit"], self.stats.tcp_refused)
        yield tcp

    def _queries(self) -> Iterator[Metric]:
        q = CounterMetricFamily(
            "gslb_queries",
            "DNS queries answered, by zone, type, rcode and transport",
            labels=["zone", "qtype", "rcode", "transport"],
        )
        by_zone: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        for (origin, qtype, rcode, transport), n in list(self.stats.queries.items()):
            ztext = names.to_text(origin) if origin else "none"
            tname = type_name(qtype)
            by_zone[(ztext, tname, rcode_name(rcode), transport)] += n
        for labels, n in by_zone.items():
            q.add_metric(list(labels), n)
        yield q
        d = CounterMetricFamily("gslb_packets_dropped", "Packets not answered, by reason", labels=["reason"])
        for reason, n in self.stats.dropped.items():
            d.add_metric([reason], n)
        yield d
        r = CounterMetricFamily(
            "gslb_rrl_responses",
            "UDP answers over the rate limit: dropped, or slipped (sent truncated)",
            labels=["action"],
        )
        for action in ("dropped", "slipped"):
            r.add_metric([action], self.stats.rrl[action])
        yield r
        c = CounterMetricFamily(
            "gslb_cookies",
            "Queries with a DNS cookie, by what it was: valid (a server cookie of ours: not "
            "rate limited), fresh (a client cookie, or a server cookie not ours: a new one "
            "sent), malformed (FORMERR), badcookie (BADCOOKIE sent instead of a rate-limited answer)",
            labels=["result"],
        )
        for result in ("valid", "fresh", "malformed", "badcookie"):
            c.add_metric([result], self.stats.cookies[result])
        yield c
        t = CounterMetricFamily(
            "gslb_tsig_queries",
            "Queries signed with TSIG (zone transfers aside), by verdict: valid, badkey, badsig, badtime",
            labels=["result"],
        )
        for result in ("valid", "badkey", "badsig", "badtime"):
            t.add_metric([result], self.stats.tsig[result])
        yield t
        x = CounterMetricFamily(
            "gslb_zone_transfers",
            "AXFR/IXFR requests by outcome: axfr, ixfr (from the journal), ixfr_current (up to "
            "date: the SOA alone), ixfr_as_axfr (the journal did not reach back), refused, "
            "badkey, badsig, badtime, formerr",
            labels=["outcome"],
        )
        for outcome in XFR_OUTCOMES:
            x.add_metric([outcome], self.stats.transfers[outcome])
        yield x

    def _balanced(self) -> Iterator[Metric]:
        b = CounterMetricFamily(
            "gslb_balanced_answers",
            "Balanced answers, by record, pool and outcome (answer, serve_all, nodata, servfail, refuse)",
            labels=["record", "pool", "outcome"],
        )
        for (rec, pool, outcome), n in list(self.stats.balanced.items()):
            b.add_metric([names.to_text(rec), pool, outcome], n)
        yield b

    def _members(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "gslb_member_up",
            "1 when a pool member is in rotation (health, overrides, status)",
            labels=["zone", "pool", "member", "address"],
        )
        health = self.state.health
        for cz in self.state.zones.values():
            for pool in cz.zone.pools:
                for m in pool.members:
                    k = member_key(cz.zone, pool.name, m)
                    if pool.checks:  # calculated health: enough of its child checks
                        kids = tuple(check_key(cz.zone, pool.name, m, c) for c in pool.checks)
                        up = health.combined_up(k, m, kids, pool.checks_needed)
                    else:
                        up = health.is_up(k, m)
                    g.add_metric([k[0], pool.name, m.name, k[2]], 1.0 if up else 0.0)
        yield g

    def _aliases(self) -> Iterator[Metric]:
        view = self.state.aliases
        if not view and not self.facts.alias_resolutions:
            return
        stale = GaugeMetricFamily(
            "gslb_alias_stale",
            "1 while an alias name's addresses are answered past their TTL (EDE 3), 2 once they are "
            "dropped (stale too long, or the name has none)",
            labels=["alias"],
        )
        addrs = GaugeMetricFamily(
            "gslb_alias_addresses", "Addresses an alias name answers with", labels=["alias"]
        )
        for name, r in view.items():
            text = names.to_text(name)
            stale.add_metric([text], 2.0 if r.gone else 1.0 if r.stale else 0.0)
            addrs.add_metric([text], 0 if r.gone else len(r.v4) + len(r.v6))
        yield stale
        yield addrs
        res = CounterMetricFamily(
            "gslb_alias_resolutions", "Resolutions of alias names, by result", labels=["alias", "result"]
        )
        for text, (ok, failed) in self.facts.alias_resolutions.items():
            res.add_metric([text, "ok"], ok)
            res.add_metric([text, "failed"], failed)
        yield res

    def _zones(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("gslb_zone_serial", "SOA serial of each zone served", labels=["zone"])
        for cz in self.state.zones.values():
            g.add_metric([names.to_text(cz.origin)], cz.serial)
        yield g

    def _prober(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "gslb_health_prober_stalled",
            "1 while the health prober makes no progress (answers keep the last health state)",
            value=int(self.facts.prober_stalled),
        )
        yield CounterMetricFamily(
            "gslb_health_prober_restarts",
            "Health prober processes restarted",
            value=self.facts.prober_restarts,
        )
        yield GaugeMetricFamily(
            "gslb_health_prober_stats_age_seconds",
            "Age of the prober counters below (0: fresh; more while it is stalled or restarting)",
            value=self.facts.prober_stats_age,
        )
        p = self.facts.prober
        if not p:
            return
        c = CounterMetricFamily("gslb_health_probes", "Health probes run", value=p.get("probes", 0))
        yield c
        f = CounterMetricFamily(
            "gslb_health_probe_failures", "Failed health probes, by reason", labels=["reason"]
        )
        for reason, n in p.get("failures_by_reason", {}).items():
            f.add_metric([reason], n)
        yield f
        t = CounterMetricFamily(
            "gslb_health_transitions", "Health state transitions, by direction", labels=["to"]
        )
        t.add_metric(["up"], p.get("transitions_up", 0))
        t.add_metric(["down"], p.get("transitions_down", 0))
        yield t
        h = HistogramMetricFamily("gslb_health_probe_duration_seconds", "Health probe duration")
        buckets = [(str(le) if le != float("inf") else "+Inf", n) for le, n in p.get("duration_buckets", [])]
        if buckets:
            h.add_metric([], buckets, sum_value=p.get("duration_sum", 0.0))
            yield h
        yield GaugeMetricFamily("gslb_health_targets", "Health probe targets", value=p.get("targets", 0))


_qlog = logging.getLogger("gslb.query")


def log_query(client: str, transport: str, reply: bytes) -> None:
    """One line of the sampled query log: client, name, type, rcode, transport, answer count."""
    n = len(reply)
    if reply[5] != 1 or n < 17:
        return
    pos = question_end(reply)
    qname = names.to_text(reply[12 : pos + 1]) if pos < n else "?"
    qtype = (reply[pos + 1] << 8 | reply[pos + 2]) if pos + 2 < n else 0
    rcode = rcode_name(reply[3] & 0xF)
    _qlog.info(
        "query client=%s name=%s type=%s rcode=%s transport=%s answers=%d tc=%d",
        client,
        qname,
        type_name(qtype),
        rcode,
        transport,
        reply[7],
        (reply[2] >> 1) & 1,
    )


def _cluster_metrics(f: RuntimeFacts) -> Iterable[Metric]:
    c = f.cluster
    if c is None:
        return
    yield GaugeMetricFamily(
        "gslb_cluster_connected",
        "1 while this node reaches the cluster store (etcd)",
        value=int(c["connected"]),
    )
    yield GaugeMetricFamily(
        "gslb_cluster_last_sync_seconds",
        "Seconds since the last successful request to the cluster store (reply, watch event, keep-alive)",
        value=c["last_sync_seconds"],
    )
    yield GaugeMetricFamily(
        "gslb_cluster_alone",
        "1 when the store has been out of reach longer than cluster_stale_after: own observations only",
        value=int(c["alone"]),
    )
    yield GaugeMetricFamily(
        "gslb_cluster_nodes",
        "Live gslb nodes this node counts votes from, itself included",
        value=len(c["nodes"]),
    )
    yield GaugeMetricFamily(
        "gslb_cluster_serial_mismatch_zones",
        "Zones whose SOA serial differs between live nodes",
        value=len(c["serial_mismatch"]),
    )
    yield CounterMetricFamily(
        "gslb_cluster_store_errors", "Requests to the cluster store that failed", value=f.cluster_errors
    )
    yield CounterMetricFamily(
        "gslb_cluster_reconnects",
        "Times the connection to the cluster store was lost",
        value=f.cluster_reconnects,
    )


def render(stats: QueryStats, state: ServingState, facts: RuntimeFacts) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(stats, state, facts))
    return generate_latest(reg)
