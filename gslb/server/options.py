"""The ``serve`` options, each written once, and the server configuration file.

:class:`ServeOptions` is the one definition of every option: its name (the
config-file key; ``--name-with-dashes`` on the command line), type, default,
kind of value and help text. From it come the argparse flags
(:func:`add_flags`), the validation of the configuration file
(``gslb serve --config gslb.yaml``, :func:`load_server_config`) and the frozen
options object that is handed whole to the server and to its workers
(:func:`resolve`). A flag given on the command line wins over the file, the
file over the default. Unknown keys, wrong types and bad values are errors
with ``file:line:col``, all reported at once, as for zone files.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gslb.zones.errors import ConfigError, Problem
from gslb.zones.yamlsrc import Located, load

Listen = tuple[str, int]
TsigKeyOpt = tuple[str, str | None, str]  # name, algorithm (None: the file's, else hmac-sha256), secret file
# zones (empty: all), allow [(key, network)], notify [(host, port, key)]
TransferOpt = tuple[
    tuple[str, ...], tuple[tuple[str | None, str | None], ...], tuple[tuple[str, int, str | None], ...]
]


def _opt(kind: str, default: Any, help: str, metavar: str | None = None, flag: bool = True) -> Any:
    """A ServeOptions field. ``kind``: path, listens, listen_or_off, num, int, networks, resolvers,
    etcd, name, prefix, choice:<a|b|...>; ``flag``: False for options the top-level parser owns."""
    return field(default=default, metadata={"kind": kind, "help": help, "metavar": metavar, "flag": flag})


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Everything ``gslb serve`` is told, resolved (command line, file, defaults)."""

    zones: str = _opt("path", "zones", "directory of *.yaml zone files (default: zones)", "DIR")
    listen: tuple[Listen, ...] = _opt(
        "listens",
        (("127.0.0.1", 5353),),
        "UDP and TCP listen address, repeatable (default 127.0.0.1:5353; port 0 = any free)",
        "ADDR:PORT",
    )
    api: Listen | None = _opt(
        "listen_or_off",
        ("127.0.0.1", 8053),
        "HTTP API listen address (default 127.0.0.1:8053; keep it off public interfaces)",
        "ADDR:PORT",
    )
    api_token_file: str | None = _opt(
        "path",
        None,
        "file holding the admin bearer token (else $GSLB_API_TOKEN; none: admin disabled)",
        "PATH",
    )
    api_zones: tuple[str, ...] = _opt(
        "zone_names",
        (),
        "zone the zone API may create, replace and delete (PUT/DELETE /v1/zones/ZONE), repeatable; "
        "'*': any zone (default: none, the API only reads zones)",
        "ZONE",
    )
    api_zone_max_bytes: int = _opt(
        "int", 16 * 1024 * 1024, "largest zone the zone API takes in one PUT, in bytes (16 MiB)", "N"
    )
    state_dir: str = _opt(
        "path", "state", "where health state is persisted across restarts (default: ./state; '' = nowhere)"
    )
    geoip_db: str | None = _opt("path", None, "MaxMind GeoIP2/GeoLite2 City or Country database", "PATH")
    asn_db: str | None = _opt("path", None, "MaxMind GeoLite2 ASN database (for 'asns' rules)", "PATH")
    watch_interval: float = _opt(
        "num", 1.0, "seconds between checks of the zone files for changes; 0 = reload on SIGHUP only"
    )
    tcp_idle: float = _opt("num", 10.0, "seconds before an idle TCP connection is closed")
    tcp_max: int = _opt("int", 512, "maximum concurrent TCP connections")
    probe_concurrency: int = _opt("int", 512, "health probes in flight at once, at most")
    probe_source: tuple[str, ...] = _opt(
        "sources",
        (),
        "source address of health probes, at most one IPv4 and one IPv6 (repeatable; default: "
        "the kernel's choice): probe from the interface the traffic takes",
        "ADDR",
    )
    stall_after: float = _opt(
        "num", 10.0, "seconds without progress before the health prober is reported as stalled"
    )
    query_log_sample: int = _opt(
        "int", 0, "log one query in N (client, name, type, rcode); 0 = off (default)", "N"
    )
    rrl_rate: float = _opt(
        "num", 0.0, "response rate limit: UDP answers per second per client /24 (/56) and kind; 0 = off", "N"
    )
    rrl_slip: int = _opt(
        "int", 2, "send every K-th limited answer truncated (TC=1) so real clients retry over TCP (2)", "K"
    )
    axfr_allow: tuple[str, ...] = _opt(
        "networks",
        (),
        "client network allowed zone transfers over TCP (repeatable; none: transfers refused)",
        "CIDR",
    )
    udp_io: str = _opt(
        "choice:auto|mmsg|asyncio",
        "auto",
        "UDP I/O: recvmmsg/sendmmsg batches (mmsg, Linux) or one datagram per call (asyncio); "
        "auto = mmsg where available",
    )
    workers: int = _opt(
        "int",
        1,
        "processes answering DNS on the same sockets (SO_REUSEPORT, Linux); one health prober "
        "and one HTTP API whatever N is (default 1)",
        "N",
    )
    cluster: str | None = _opt(
        "etcd",
        None,
        "cluster mode: share health votes and overrides with the other gslb nodes through etcd "
        "(docs/cluster.md); none: this node decides alone",
        "etcd://HOST:PORT[,HOST:PORT...]",
    )
    zones_from: str = _opt(
        "choice:files|cluster",
        "files",
        "where zones come from: this node's zones directory (files), or the cluster store "
        "(cluster: zones written through any node's zone API reach every node; the directory "
        "is this node's last good copy); docs/cluster.md",
    )
    node: str | None = _opt("name", None, "this node's name in the cluster (default: the host name)", "NAME")
    region: str | None = _opt("name", None, "this node's region or site, shown to operators", "R")
    location: tuple[float, float] | None = _opt(
        "location",
        None,
        "this node's coordinates, latitude,longitude in degrees (e.g. 50.1,8.7): select: "
        "fastest_from_nearest_node steers a client by the round trips of the node nearest it",
        "LAT,LON",
    )
    cluster_prefix: str = _opt(
        "prefix", "/gslb/", "etcd key prefix of this cluster (default /gslb/)", "PREFIX"
    )
    cluster_ca: str | None = _opt(
        "path", None, "CA file that signed the etcd server certificates (TLS)", "PATH"
    )
    cluster_cert: str | None = _opt("path", None, "client certificate for etcd (TLS, RBAC by CN)", "PATH")
    cluster_key: str | None = _opt("path", None, "private key of --cluster-cert", "PATH")
    cluster_lease_ttl: int = _opt(
        "int", 10, "seconds a node's votes outlive it when it dies or is cut off (lease TTL, 2..300)", "S"
    )
    cluster_stale_after: float = _opt(
        "num",
        30.0,
        "seconds without the store before this node decides from its own observations only",
        "S",
    )
    nsid: str | None = _opt(
        "name",
        None,
        "name sent to queries that ask for it (NSID, RFC 5001; default: the node name in a "
        "cluster, none otherwise)",
        "TEXT",
    )
    cookies: str = _opt(
        "choice:on|off",
        "on",
        "DNS cookies (RFC 7873, RFC 9018): answer them, and let queries with a valid server cookie "
        "past rate limiting (docs/protocol.md)",
    )
    cookie_secret_file: str | None = _opt(
        "path",
        None,
        "file of cookie secrets, 32 hex digits a line: the first makes cookies, every one is accepted "
        "(rotation); the same file on every node. None: a random secret at each start",
        "PATH",
    )
    cookie_less_udp_size: int = _opt(
        "int",
        0,
        "largest UDP answer to a query without a valid server cookie, 512..1232 (bigger: TC=1, "
        "so the client retries over TCP or with its cookie); 0 = no cap",
        "N",
    )
    alerts: tuple[tuple[str, str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = _opt(
        "webhooks",
        (),
        "alert webhook URL, repeatable (in the file: a list of URLs, or of {url, secret_file, zones, "
        "pools, events}); docs/api.md",
        "URL",
    )
    tsig_keys: tuple[TsigKeyOpt, ...] = _opt(
        "tsig_keys",
        (),
        "TSIG keys (config file only): a list of {name, secret_file, algorithm}; docs/operations.md",
        flag=False,
    )
    transfers: tuple[TransferOpt, ...] = _opt(
        "transfers",
        (),
        "zone transfers to secondaries (config file only): a list of {zones, allow, notify}; "
        "docs/operations.md",
        flag=False,
    )
    resolver: tuple[tuple[str, int], ...] = _opt(
        "resolvers",
        (),
        "recursive resolver that gslb asks for the addresses of alias members' names, repeatable "
        "(ADDR or ADDR:PORT; default: the system's, /etc/resolv.conf)",
        "ADDR[:PORT]",
    )
    alias_min_ttl: float = _opt(
        "num", 5.0, "resolve an alias name again no sooner than this, whatever its TTL (s; 5)", "S"
    )
    alias_max_ttl: float = _opt("num", 300.0, "and no later than this (s; 300)", "S")
    alias_stale: float = _opt(
        "num",
        3600.0,
        "answer an alias's last addresses this long past their TTL while resolving fails, with "
        "EDE 3 (Stale Answer); then the member is out (s; 3600)",
        "S",
    )
    log_level: str = _opt("choice:debug|info|warning|error", "info", "log level", flag=False)
    log_format: str = _opt(
        "choice:text|json", "text", "text for people, json (one object per line) for log shippers", flag=False
    )

    def __post_init__(self) -> None:
        if not 2 <= self.cluster_lease_ttl <= 300:
            raise ValueError(f"cluster_lease_ttl must be 2..300 seconds, got {self.cluster_lease_ttl}")
        if not 0 < self.alias_min_ttl <= self.alias_max_ttl:
            raise ValueError(
                f"alias_min_ttl must be > 0 and at most alias_max_ttl ({self.alias_max_ttl:g}), "
                f"got {self.alias_min_ttl:g}"
            )
        _sources(list(self.probe_source))  # at most one per family (the flags append)
        if self.zones_from == "cluster" and not self.cluster:
            raise ValueError("zones_from: cluster needs cluster mode (--cluster etcd://HOST:PORT)")
        if (self.cluster_cert is None) != (self.cluster_key is None):
            raise ValueError("cluster_cert and cluster_key go together")
        known = {k[0] for k in self.tsig_keys}
        for _, allow, notify in self.transfers:
            for k in [a[0] for a in allow] + [n[2] for n in notify]:
                if k is not None and k not in known:
                    raise ValueError(
                        f"transfers: key {k!r} is not one of tsig_keys ({', '.join(known) or 'none'})"
                    )
        if self.cookie_less_udp_size and not 512 <= self.cookie_less_udp_size <= 1232:
            raise ValueError(
                f"cookie_less_udp_size must be 512..1232 (or 0), got {self.cookie_less_udp_size}"
            )

    @property
    def node_name(self) -> str:
        """This node's name: ``node``, else the host name."""
        return self.node or socket.gethostname().split(".")[0] or "gslb"

    @property
    def nsid_text(self) -> str:
        """What NSID answers: ``nsid``, else the node name in a cluster, else nothing."""
        if self.nsid is not None:
            return self.nsid
        return self.node_name if self.cluster else ""

    @property
    def state_path(self) -> Path | None:
        """The state directory, or None for no persistence (``state_dir: ''``)."""
        return Path(self.state_dir) if self.state_dir else None


OPTIONS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(ServeOptions)}
# lists of mappings, set in the configuration file only (no flag)
FILE_ONLY = ("tsig_keys", "transfers")


def kind_of(key: str) -> str:
    return str(OPTIONS[key].metadata["kind"])


def choices_of(key: str) -> list[str]:
    return kind_of(key)[len("choice:") :].split("|")


# ------------------------------------------------------------------ values


def parse_listen(text: str) -> Listen:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"expected ADDR:PORT, e.g. 127.0.0.1:5353 or [::1]:5353, got {text!r}")
    return host.strip("[]"), int(port)


def _network(text: object) -> str:
    if not isinstance(text, str):
        raise ValueError(f"expected CIDR networks like 192.0.2.0/24, got {text!r}")
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as e:
        raise ValueError(f"bad network {text!r}: {e}") from None


def parse_etcd(text: str) -> str:
    """``etcd://HOST:PORT[,HOST:PORT...]``, checked; ValueError when malformed."""
    endpoints(text)
    return text


def endpoints(text: str) -> list[str]:
    """``etcd://HOST:PORT[,HOST:PORT...]`` -> ``["HOST:PORT", ...]``."""
    if not text.startswith("etcd://"):
        raise ValueError(f"expected etcd://HOST:PORT[,HOST:PORT...], got {text!r}")
    out = []
    for part in text[len("etcd://") :].split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad etcd endpoint {part!r} (expected HOST:PORT)")
        out.append(part.strip())
    return out


def _name(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v):
        raise ValueError(f"expected a name of letters, digits, '.', '_' or '-' (at most 63), got {v!r}")
    return v


def _prefix(v: Any) -> str:
    if not isinstance(v, str) or not v.startswith("/") or " " in v:
        raise ValueError(f"expected a key prefix starting with '/', e.g. /gslb/, got {v!r}")
    return v if v.endswith("/") else v + "/"


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected ADDR:PORT as a string, got {v!r}")
    return v


def _value(kind: str, v: Any) -> Any:
    """A value from the configuration file (YAML types), checked and in its resolved form."""
    if kind == "path":
        if v is None or (isinstance(v, str) and not isinstance(v, bool)):
            return v
        raise ValueError(f"expected a path (a string), got {v!r}")
    if kind == "listens":
        items = v if isinstance(v, list) else [v]
        if not items:
            raise ValueError("list at least one ADDR:PORT")
        return tuple(parse_listen(_str(i.value if isinstance(i, Located) else i)) for i in items)
    if kind == "networks":
        items = v if isinstance(v, list) else [v]
        return tuple(_network(i.value if isinstance(i, Located) else i) for i in items)
    if kind == "resolvers":
        items = v if isinstance(v, list) else [v]
        return tuple(parse_resolver(str(i.value if isinstance(i, Located) else i)) for i in items)
    if kind == "location":
        if v is None:
            return None
        if isinstance(v, list) and len(v) == 2:
            v = ",".join(str(i.value if isinstance(i, Located) else i) for i in v)
        return parse_location(str(v))
    if kind == "zone_names":
        items = v if isinstance(v, list) else [v]
        return tuple(parse_zone_name(str(i.value if isinstance(i, Located) else i)) for i in items)
    if kind == "sources":
        items = v if isinstance(v, list) else [v]
        return _sources([str(i.value if isinstance(i, Located) else i) for i in items])
    if kind == "listen_or_off":
        if v is None or v is False:
            return None
        return parse_listen(_str(v))
    if kind == "num":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"expected a number >= 0, got {v!r}")
        return float(v)
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"expected a whole number >= 0, got {v!r}")
        return v
    if kind == "etcd":
        if v is None:
            return None
        if not isinstance(v, str):
            raise ValueError(f"expected etcd://HOST:PORT[,HOST:PORT...], got {v!r}")
        return parse_etcd(v)
    if kind == "name":
        return None if v is None else _name(v)
    if kind == "prefix":
        return _prefix(v)
    if kind == "webhooks":
        return _webhooks(v)
    if kind == "tsig_keys":
        return tuple(_tsig_key(i) for i in _items(v))
    if kind == "transfers":
        return tuple(_transfer(i) for i in _items(v))
    if kind.startswith("choice:"):
        choices = kind[7:].split("|")
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {v!r}")
        return v
    raise AssertionError(kind)


ALERT_KINDS = (
    "member_down", "member_up", "override_set", "override_cleared", "override_expired", "prober_stalled",
    "prober_recovered", "zone_rejected", "cluster_disconnected", "cluster_reconnected",
)  # fmt: skip
Webhook = tuple[str, str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def _webhooks(v: Any) -> tuple[Webhook, ...]:
    """``alerts:``: a list of URLs or of {url, secret_file, zones, pools, events}, as
    (url, secret_file, zones, pools, events) tuples. Errors name the item's position."""
    items = v if isinstance(v, list) else [v]
    return tuple(_webhook(item.value if isinstance(item, Located) else item) for item in items)


def _webhook(val: Any) -> Webhook:
    def strs(x: Any, what: str) -> tuple[str, ...]:
        xs = x.value if isinstance(x, Located) else x
        xs = xs if isinstance(xs, list) else [xs]
        got = [i.value if isinstance(i, Located) else i for i in xs]
        if not all(isinstance(i, str) for i in got):
            raise ValueError(f"{what}: expected a list of strings, got {got!r}")
        return tuple(str(i) for i in got)

    if isinstance(val, str):
        val = {"url": val}
    if not isinstance(val, dict):
        raise ValueError(f"expected a URL or a mapping with url:, got {val!r}")
    d = {k: (x.value if isinstance(x, Located) else x) for k, x in val.items()}
    unknown = set(d) - {"url", "secret_file", "zones", "pools", "events"}
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(sorted(unknown))} (url, secret_file, zones, pools, events)"
        )
    url = d.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
        raise ValueError(f"url: expected an http:// or https:// URL, got {url!r}")
    secret = d.get("secret_file")
    if secret is not None and not isinstance(secret, str):
        raise ValueError(f"secret_file: expected a path, got {secret!r}")
    zones = tuple(z if z.endswith(".") else z + "." for z in strs(val.get("zones", []), "zones"))
    events = strs(val.get("events", []), "events")
    bad = [e for e in events if e not in ALERT_KINDS]
    if bad:
        raise ValueError(f"events: unknown {', '.join(bad)} (one of {', '.join(ALERT_KINDS)})")
    return (url, secret, zones, strs(val.get("pools", []), "pools"), events)


def _items(v: Any) -> list[Any]:
    items = v if isinstance(v, list) else [v]
    return [i.value if isinstance(i, Located) else i for i in items]


def _mapping(val: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(val, dict):
        raise ValueError(f"expected a mapping with {', '.join(keys)}, got {val!r}")
    d = {k: (x.value if isinstance(x, Located) else x) for k, x in val.items()}
    unknown = set(d) - set(keys)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {', '.join(sorted(unknown))} ({', '.join(keys)})")
    return d


TSIG_ALGORITHMS = ("hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")


def _tsig_key(val: Any) -> TsigKeyOpt:
    d = _mapping(val, ("name", "secret_file", "algorithm"), "tsig key")
    name = d.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62})\.?", name):
        raise ValueError(f"name: expected a key name like xfr-key or xfr.example.com, got {name!r}")
    path = d.get("secret_file")
    if not isinstance(path, str) or not path:
        raise ValueError(f"secret_file: expected the path of the key's secret, got {path!r}")
    alg = d.get("algorithm")
    if alg is not None and (not isinstance(alg, str) or alg.lower() not in TSIG_ALGORITHMS):
        raise ValueError(f"algorithm: one of {', '.join(TSIG_ALGORITHMS)}, got {alg!r}")
    return (name.rstrip("."), alg.lower() if isinstance(alg, str) else None, path)


def _transfer(val: Any) -> TransferOpt:
    d = _mapping(val, ("zones", "allow", "notify"), "transfers")
    zones = []
    for z in _items(d.get("zones", [])):
        if not isinstance(z, str) or not z:
            raise ValueError(f"zones: expected zone names, got {z!r}")
        zones.append(z if z.endswith(".") else z + ".")
    allow: list[tuple[str | None, str | None]] = []
    for a in _items(d.get("allow", [])):
        ad = _mapping(a, ("key", "network"), "allow")
        key, net = ad.get("key"), ad.get("network")
        if key is None and net is None:
            raise ValueError("allow: each item names a key, a network, or both")
        if key is not None and not isinstance(key, str):
            raise ValueError(f"allow: key: expected a key name, got {key!r}")
        allow.append((key, None if net is None else _network(net)))
    notify: list[tuple[str, int, str | None]] = []
    for n in _items(d.get("notify", [])):
        nd = _mapping(n if not isinstance(n, str) else {"address": n}, ("address", "key"), "notify")
        addr, key = nd.get("address"), nd.get("key")
        if not isinstance(addr, str):
            raise ValueError(f"notify: address: expected ADDR or ADDR:PORT, got {addr!r}")
        host, port = _host_port(addr)
        if key is not None and not isinstance(key, str):
            raise ValueError(f"notify: key: expected a key name, got {key!r}")
        notify.append((host, port, key))
    if not allow and not notify:
        raise ValueError("transfers: give allow (who may transfer), notify (whom to tell), or both")
    return (tuple(zones), tuple(allow), tuple(notify))


def _host_port(text: str) -> tuple[str, int]:
    """``ADDR`` (port 53) or ``ADDR:PORT`` / ``[V6]:PORT``: an IP address, not a name."""
    if text.startswith("[") or text.count(":") == 1:
        host, port = parse_listen(text)
    else:
        host, port = text, 53
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"notify: address: expected an IP address, got {host!r}") from None
    return host, port


def parse_resolver(text: str) -> tuple[str, int]:
    """``192.0.2.53``, ``192.0.2.53:5353``, ``[2001:db8::53]:53`` or ``2001:db8::53`` ->
    (address, port); ValueError with a message for a bad one."""
    host, port = text.strip(), 53
    if host.startswith("["):
        inner, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad resolver {text!r}: write [ADDRESS]:PORT")
        host, port_text = inner, rest[1:]
        if port_text:
            port = _port(text, port_text)
    elif host.count(":") == 1:
        host, port_text = host.split(":")
        port = _port(text, port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad resolver {text!r}: an IP address (and :PORT), not a name") from None
    return host, port


def parse_location(text: str) -> tuple[float, float]:
    """``LAT,LON`` in degrees, checked."""
    lat_s, sep, lon_s = text.partition(",")
    try:
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        lat = lon = float("nan")
    if not sep or not -90 <= lat <= 90 or not -180 <= lon <= 180:
        raise ValueError(f"expected LAT,LON in degrees (-90..90,-180..180), e.g. 50.1,8.7, got {text!r}")
    return lat, lon


def parse_zone_name(text: str) -> str:
    """A zone name (absolute, lower case) or ``*``."""
    t = text.strip().lower()
    if t == "*":
        return t
    if not t.endswith("."):
        t += "."
    if not re.fullmatch(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+|\.", t):
        raise ValueError(f"expected a zone name like example.com. or '*', got {text!r}")
    return t


def parse_source(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError(f"bad probe source {text!r}: an IPv4 or IPv6 address of this host") from None


def _sources(texts: list[str]) -> tuple[str, ...]:
    out = tuple(parse_source(t) for t in texts)
    fams = [ipaddress.ip_address(a).version for a in out]
    if len(fams) != len(set(fams)):
        raise ValueError(f"at most one IPv4 and one IPv6 probe source, got {', '.join(out)}")
    return out


def _port(text: str, port: str) -> int:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad resolver {text!r}: port must be 1..65535")
    return int(port)


def _flag_value(kind: str) -> Callable[[str], Any]:
    """The argparse type of a flag: the file's checks, on the flag's text."""

    def convert(text: str) -> Any:
        try:
            if kind in ("listens", "listen_or_off"):
                return parse_listen(text)
            if kind in ("etcd", "name", "prefix"):
                return _value(kind, text)
            if kind == "networks":
                return _network(text)
            if kind == "resolvers":
                return parse_resolver(text)
            if kind == "location":
                return parse_location(text)
            if kind == "sources":
                return parse_source(text)
            if kind == "zone_names":
                return parse_zone_name(text)
            if kind == "webhooks":
                return _webhook(text)
            if kind in ("num", "int"):
                try:
                    number: float = float(text) if kind == "num" else int(text)
                except ValueError:
                    number = -1  # not a number: the same message as a negative one
                return _value(kind, number) if number >= 0 else _value(kind, text)
            return text
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


# ------------------------------------------------------------------ the three uses


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option (``--no-api`` besides ``--api``); unset flags stay absent, so
    :func:`resolve` can tell them from the file's values."""
    for name, f in OPTIONS.items():
        md = f.metadata
        if not md["flag"]:
            continue
        kind = md["kind"]
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": md["help"], "dest": name}
        if md["metavar"]:
            kw["metavar"] = md["metavar"]
        if kind.startswith("choice:"):
            kw["choices"] = choices_of(name)
        else:
            kw["type"] = _flag_value(kind)
        if kind in ("listens", "networks", "webhooks", "resolvers", "sources", "zone_names"):
            kw["action"] = "append"
        parser.add_argument("--" + name.replace("_", "-"), **kw)
        if kind == "listen_or_off":
            parser.add_argument(
                f"--no-{name.replace('_', '-')}",
                dest=name,
                action="store_const",
                const=None,
                default=argparse.SUPPRESS,
                help=f"run without the {'HTTP API' if name == 'api' else name}",
            )


def load_server_config(path: str | Path) -> dict[str, Any]:
    """The file's options, checked: ``{key: resolved value}`` for the keys it sets."""
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(p, 1, 1, "", f"cannot read: {e}")]) from None
    doc = load(text, p)
    problems: list[Problem] = []
    out: dict[str, Any] = {}

    def err(loc: Located, key: str, msg: str, at_key: bool = False) -> None:
        line, col = (loc.key_line, loc.key_col) if at_key and loc.key_line else (loc.line, loc.col)
        problems.append(Problem(p, line, col, key, msg))

    if not isinstance(doc.value, dict):
        raise ConfigError([Problem(p, doc.line, doc.col, "", "expected a mapping of option: value")])
    for key, loc in doc.value.items():
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            err(loc, key, "unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""), at_key=True)
            continue
        one = {"webhooks": _webhook, "tsig_keys": _tsig_key, "transfers": _transfer}.get(kind_of(key))
        if one is not None and isinstance(loc.value, list):  # each item at its place
            got = []
            for item in loc.value:
                try:
                    got.append(one(item.value))
                except ValueError as e:
                    err(item, key, str(e))
            out[key] = tuple(got)
            continue
        try:
            out[key] = _value(kind_of(key), loc.value)
        except ValueError as e:
            err(loc, key, str(e))
    if not problems and "transfers" in out:  # keys named in transfers are defined
        known = {k[0] for k in out.get("tsig_keys", ())}
        tv = doc.value["transfers"]
        located = tv.value if isinstance(tv.value, list) else [tv]
        for item, (_, allow, notify) in zip(located, out["transfers"], strict=False):
            for k in [a[0] for a in allow] + [n[2] for n in notify]:
                if k is not None and k not in known:
                    err(
                        item,
                        "transfers",
                        f"key {k!r} is not one of tsig_keys ({', '.join(sorted(known)) or 'none'})",
                    )
    if problems:
        raise ConfigError(problems)
    return out


def resolve(cli: Mapping[str, Any], file: Mapping[str, Any]) -> ServeOptions:
    """Command line over file over defaults, for every option."""
    values: dict[str, Any] = {}
    for key in OPTIONS:
        if key in cli:
            v = cli[key]
            values[key] = tuple(v) if isinstance(v, list) else v
        elif key in file:
            values[key] = file[key]
    return ServeOptions(**values)
