"""The zone model: frozen, validated data. If an object exists, it is valid.

``gslb.zones.load`` builds these from YAML and reports positioned errors first;
the constructors re-check their own invariants so no other code path can make
an invalid one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from gslb.dns import names
from gslb.dns.consts import FAMILY_OF_TYPE, T_CNAME
from gslb.zones.errors import Problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TTL_MAX = 2147483647
WEIGHT_MAX = 100

CheckType = Literal["tcp", "http", "https"]
MemberStatus = Literal["up", "down", "obey"]
WhenAllDown = Literal["serve_all", "nodata", "servfail", "refuse"]


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class StatusRange:
    low: int
    high: int

    def __post_init__(self) -> None:
        _require(100 <= self.low <= self.high <= 599, f"bad status range {self.low}-{self.high}")

    def __contains__(self, status: int) -> bool:
        return self.low <= status <= self.high


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    type: CheckType
    port: int
    interval: float = 5.0
    timeout: float = 2.0
    fall: int = 3
    rise: int = 2
    path: str = "/"
    host: str | None = None
    method: Literal["GET", "HEAD"] = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: tuple[StatusRange, ...] = (StatusRange(200, 399),)
    expect_body: str | None = None
    expect_body_regex: str | None = None
    tls_verify: bool = True
    ca_file: str | None = None
    send: bytes | None = None
    load_header: str | None = None  # least_loaded: the load is this response header's number ...
    load_json: str | None = None  # ... or this (dotted) field of a JSON body
    quorum: str | None = None  # cluster mode: down votes that take a member out (None: the zone's)

    def __post_init__(self) -> None:
        _require(1 <= self.port <= 65535, "port must be 1..65535")
        _require(not (self.load_header and self.load_json), "one load source")
        _require(0 < self.timeout < self.interval, "timeout must be > 0 and < interval")
        _require(1 <= self.fall <= 100 and 1 <= self.rise <= 100, "fall and rise must be 1..100")

    @property
    def identity(self) -> tuple[object, ...]:
        """What the probe asks: every key but the schedule (``CHECK_SCHEDULE_KEYS``).

        Two checks with the same identity ask the same question, so a reload that
        changes only the schedule (or the name) keeps a target's state and its
        rise/fall counters (docs/health.md, "Editing checks")."""
        return tuple(getattr(self, k) for k in _CHECK_IDENTITY_KEYS)


# keys of a check that only say when and how often to ask (its name, and how the cluster
# counts the answers), not what
CHECK_SCHEDULE_KEYS = ("name", "interval", "timeout", "fall", "rise", "quorum")
_CHECK_IDENTITY_KEYS = tuple(k for k in Check.__dataclass_fields__ if k not in CHECK_SCHEDULE_KEYS)


@dataclass(frozen=True, slots=True)
class Member:
    """A pool member: an address (A/AAAA answers), a target host name (``target``: a
    CNAME pool's member, answered as a CNAME to it; docs/routing.md, "Pools of names"),
    or a host name whose current addresses answer for it (``alias``: flattening, in an
    address pool; docs/routing.md, "Alias members")."""

    address: IPAddress | None
    name: str
    weight: int = 1
    status: MemberStatus = "obey"
    check_address: IPAddress | None = None
    check_port: int | None = None
    target: bytes | None = None  # wire form, lower case
    alias: bytes | None = None  # wire form, lower case
    slow_start: float | None = None  # seconds (None: the pool's)

    def __post_init__(self) -> None:
        _require(0 <= self.weight <= WEIGHT_MAX, f"weight must be 0..{WEIGHT_MAX}")
        given = sum(x is not None for x in (self.address, self.target, self.alias))
        _require(given == 1, "a member has an address, a target or an alias")
        _require(self.alias is None or self.check_address is None, "an alias is probed at its addresses")

    @property
    def family(self) -> int:
        """4 or 6 for an address member, 0 for a target or an alias (its addresses have
        their own)."""
        return self.address.version if self.address is not None else 0

    @property
    def ident(self) -> str:
        """What tells the member from the pool's others: its address, or its target name
        (``www.cdn.example.net.``); the member's part of its health key."""
        if self.address is not None:
            return str(self.address)
        name = self.target or self.alias
        assert name is not None
        return names.to_text(name)

    @property
    def rdata(self) -> bytes:
        """The member's answer rdata: the packed address, or the target name (CNAME)."""
        if self.address is not None:
            return self.address.packed
        assert self.target is not None
        return self.target


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float

    def __post_init__(self) -> None:
        _require(-90 <= self.lat <= 90 and -180 <= self.lon <= 180, "location out of range")


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    members: tuple[Member, ...]
    check: str | None = None
    min_healthy: int = 1  # absolute count ...
    min_healthy_percent: float | None = None  # ... or a share of the members
    location: Location | None = None
    slow_start: float = 0.0  # seconds a recovered member's weight takes to reach its full value
    # calculated health: a member is up while ``checks_needed`` of these checks pass for it
    # (all, any, or at least N); ``check`` is None then
    checks: tuple[str, ...] = ()
    checks_needed: int = 0
    requires: tuple[str, ...] = ()  # pools that must be up for this one to count as up

    def __post_init__(self) -> None:
        _require(len(self.members) > 0, "a pool needs members")
        idents = [m.ident for m in self.members]
        _require(len(set(idents)) == len(idents), "duplicate member")
        _require(len({m.target is None for m in self.members}) == 1, "a pool holds addresses or names")

    @property
    def holds_names(self) -> bool:
        """The pool's members are target names (a CNAME pool), not addresses."""
        return self.members[0].target is not None

    @property
    def check_names(self) -> tuple[str, ...]:
        """Every check probing the members: the one, or a calculated check's children."""
        return (self.check,) if self.check is not None else self.checks

    def ramp_of(self, member: Member) -> float:
        """The member's slow start (s): its own, else the pool's; 0 is none."""
        return member.slow_start if member.slow_start is not None else self.slow_start

    def needed(self) -> int:
        """Healthy members needed for this pool to count as up."""
        if self.min_healthy_percent is not None:
            n = len(self.members) * self.min_healthy_percent / 100.0
            return max(1, int(-(-n // 1)))  # ceil, at least one
        return self.min_healthy


CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})


@dataclass(frozen=True, slots=True)
class GeoMatch:
    """A ``geos`` entry: a continent, a country, or a country subdivision (ISO codes).

    Written ``EU`` (continent), ``DE`` or ``EU-DE`` (country), ``US-CA`` or
    ``NA-US-CA`` (subdivision): octoDNS's continent-country-subdivision form, and
    the shorter ISO 3166 forms where the first part is not a continent code.
    """

    text: str
    continent: str | None = None
    country: str | None = None
    subdivision: str | None = None

    def __post_init__(self) -> None:
        _require(self.continent is None or self.continent in CONTINENTS, "unknown continent")
        _require(self.subdivision is None or self.country is not None, "a subdivision needs a country")
        _require(any((self.continent, self.country)), "empty geo")


@dataclass(frozen=True, slots=True)
class Rule:
    pools: tuple[str, ...]
    subnets: tuple[IPNetwork, ...] = ()
    geos: tuple[GeoMatch, ...] = ()
    asns: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _require(len(self.pools) > 0, "a rule needs pools")

    @property
    def catch_all(self) -> bool:
        return not (self.subnets or self.geos or self.asns)


@dataclass(frozen=True, slots=True)
class RRset:
    """One static RRset: owner and rdata in wire form, plus presentation text."""

    name: bytes
    rtype: int
    ttl: int
    rdatas: tuple[bytes, ...]
    texts: tuple[str, ...]
    targets: tuple[bytes, ...] = ()  # names in rdata worth additional processing

    def __post_init__(self) -> None:
        _require(0 <= self.ttl <= TTL_MAX, "ttl out of range")
        _require(len(self.rdatas) > 0 and len(self.rdatas) == len(self.texts), "empty RRset")


@dataclass(frozen=True, slots=True)
class Balanced:
    """A balanced name: answers for ``types`` picked from healthy pool members."""

    name: bytes
    types: tuple[int, ...]
    ttl: int
    select: str
    count: int | None
    rules: tuple[Rule, ...]
    when_all_down: WhenAllDown = "serve_all"
    ecs: bool = True  # use EDNS Client Subnet as the client's location
    # the policy's own answer: keys, "key.field" -> value (e.g. hash_prefix.ipv4 for hashed),
    # read and range-checked by the loader from the policy's declaration (gslb.answer.policies)
    params: tuple[tuple[str, int], ...] = ()

    @property
    def cname(self) -> bool:
        """Answers a CNAME to one target (its pools hold names), for every query type."""
        return self.types == (T_CNAME,)

    def __post_init__(self) -> None:
        _require(
            all(t in FAMILY_OF_TYPE for t in self.types) or self.types == (T_CNAME,),
            "types must be A/AAAA, or CNAME alone",
        )
        _require(all(v >= 0 for _, v in self.params), "policy parameters are whole numbers >= 0")
        _require(0 <= self.ttl <= TTL_MAX, "ttl out of range")
        _require(len(self.rules) > 0 and self.rules[-1].catch_all, "last rule must be a catch-all")
        _require(self.count is None or self.count >= 1, "count must be >= 1")


@dataclass(frozen=True, slots=True)
class Soa:
    mname: bytes
    rname: bytes
    serial: int | None
    refresh: int = 7200
    retry: int = 3600
    expire: int = 1209600
    minimum: int = 300
    ttl: int = 300


@dataclass(frozen=True, slots=True)
class Zone:
    origin: bytes
    path: str
    ttl: int
    ns_ttl: int
    soa: Soa
    nameservers: tuple[bytes, ...]
    rrsets: tuple[RRset, ...]
    balanced: tuple[Balanced, ...] = ()
    checks: tuple[Check, ...] = ()
    pools: tuple[Pool, ...] = ()
    quorum: str = "majority"  # cluster mode: the default of its checks' ``quorum``
    # the signing keys' paths (a second one during a rollover): answers to DO=1 queries are signed
    dnssec_keys: tuple[str, ...] = ()
    digest: str = field(default="", compare=False)  # content hash, for serials
    warnings: tuple[Problem, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _require(len(self.nameservers) > 0, "a zone needs name servers")
