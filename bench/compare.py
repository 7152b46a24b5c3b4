"""gslb next to C authoritative servers: same zone, same pinning, same load, one table.

    python bench/compare.py                       # dnsperf, every server found, 3 x 10 s
    python bench/compare.py --generator dnsblast  # ../shared/bench/dnsblast.c, compiled once
    python bench/compare.py --generator rawload   # bench/rawload.c: the same, ECS workload included
    python bench/compare.py --generator 'mygen -s {server} -p {port} -d {file} -l {seconds}'
    python bench/compare.py --rate 20000          # latency at a fixed rate (needs dnsblast)
    python bench/compare.py --tcp                 # DNS over TCP, many queries per connection
    python bench/compare.py --servers gslb,knot --workloads static --gslb-args '--workers 2'
    python bench/compare.py --signed --servers gslb,knot,pdns   # DNSSEC: vs Knot and PowerDNS signing

Servers (each found on PATH or in /usr/sbin; missing ones are skipped, `--install`
runs apt-get for them): gslb, gslb-py (gslb with GSLB_PURE_PYTHON=1: its pure-Python UDP
loop, as where gslb.server.transport._fastpath could not be built), Knot DNS (knot), NSD
(nsd), gdnsd (gdnsd), PowerDNS
with the BIND backend and LUA records (pdns-server, pdns-backend-bind). Each is
pinned to CPU 0 with taskset and runs one UDP worker (one thread or process where
it has the choice); the load generator is pinned to CPU 1. Peers' rate limiting is
off (NSD limits by default) and PowerDNS does no security polling.

Workloads (query files written here):
  static    ten names/types of bench.test. (SOA, NS, A, AAAA, MX, TXT, CNAME, SRV)
  weighted  w.bench.test. A: gslb `select: weighted`, gdnsd `DYNA weighted!`, PowerDNS
            `LUA A "pickwrandom(...)"`; Knot and NSD serve the same three addresses
            as a static RRset (what a C server does with no balancing at all)
  fastest   f.bench.test. A: gslb `select: fastest` over the weighted pool (no probes here:
            the zone's order; the answer path is the one a measured order takes)
  ramp      r.bench.test. A: gslb `select: weighted` over the same three addresses, one
            of them slow-starting (drained and put back through the API before the runs,
            `slow_start: 1h`): the plan is stepped twice a second throughout
  cname     c.bench.test. A, a CNAME to one of three CDN names by weight (multi-CDN):
            gslb `types: [CNAME]` over a pool of names, gdnsd `DYNC weighted!`,
            PowerDNS `LUA CNAME "pickwrandom(...)"`; Knot and NSD a static CNAME
  geo_ecs   geo/near/sticky.geo.test. A with an EDNS Client Subnet option
            (198.51.100.0/24): geo rules, closest and hashed selection over GeoIP
            databases built by tests/geodb.py. gslb only; compared with Knot's static
            figure. dnsblast sends no EDNS options, so with --generator dnsblast this
            workload is sent by dnsperf; bench/rawload.c (--generator rawload) sends
            prebuilt packets, ECS included
  geo_many  geo.geobench.test. A (rules: NA-US-CA, US, EU, the rest) and near.geobench.test.
            A (the nearest of four sites), each query with an EDNS Client Subnet of its
            own: 400,000 distinct subnets (IPv4 /24 and IPv6 /56, half inside the
            database's networks, half from random public space), as a big resolver's
            traffic is. gslb and gdnsd (geoip plugin: the same map, auto_dc_coords for
            the nearest site), on the same database (--geo-db, default MaxMind's
            GeoIP2-City-Test; bench/synthcity.py writes a City-sized one). Needs
            --generator rawload (one packet per subnet)
  geo_one   the same two names from one subnet (198.51.100.0/24): every query after the
            first is a reply-cache hit
  mix       half static names, half random names under bench.test. (NXDOMAIN); the
            file repeats, so after its first pass the random names are known too
  flood     600,000 random names under bench.test., none asked twice in a run

Resolver traffic (--generator rawload; 16 sockets, each from its own /24 on loopback,
127.1.0.1, 127.1.1.1, ...: as many resolvers' networks reach a server). The names are
the static ten and the weighted one:
  res_plain   plain queries (no EDNS): what docs/performance.md measured before
  res_cookie  EDNS (1232) with DO=1, a client cookie (512 of them), the name in random
              case (0x20): a validating resolver's first query
  res_steady  the same with the server cookie each server gave: fetched from each server
              before its run, per socket address and client cookie (4 per socket), as
              BIND and Unbound send once they know it
Peers here: gdnsd (cookies on, its default) and Knot (mod-cookies loaded). --rrl turns
response rate limiting on at a rate no query reaches (gslb --rrl-rate, Knot mod-rrl;
gdnsd has none, so it has no --rrl rows); --signed signs bench.test. for these too.

--signed: bench.test. is signed (gslb: `dnssec: {key:}` with a new ECDSA P-256 key;
Knot: `mod-onlinesign`, ECDSA P-256, its own key; PowerDNS: live signing with the bind
backend's DNSSEC database, `pdnsutil secure-zone`, ECDSA P-256) and every query has
DO=1 (dnsperf -D, or DO=1 packets with --generator rawload). `flood` then makes every
answer a new denial to sign (a random-subdomain flood with DO=1); its names are new in
every run. Run once with and once without --signed to get signed against unsigned CPU
per query. A rate-limited flood: --generator rawload --rate N --timeout 0.03 sends at a
fixed rate whatever comes back, and the stderr line gives the CPU per query sent.

Columns: queries/s (median of --runs), p50/p99 latency in ms where the generator
reports percentiles (dnsblast does, dnsperf does not), server CPU us per answered
query (utime+stime of the server's processes from /proc, over the run), RSS in MB
(all the server's processes, at the end), and queries/s as a ratio to Knot's.
Traffic stays on 127.0.0.1. Quote medians and ratios: this machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SHARED = Path(os.environ.get("GSLB_SHARED", ROOT.parent / "shared"))
ECS_OPTION = "8:00011800c63364"  # EDNS Client Subnet 198.51.100.0/24, scope 0
SERVER_CPU, LOAD_CPU = "0", "1"
TIMEOUT = 1.0  # --timeout: seconds rawload waits for an answer (short for a rate-limited flood)
SIGNED = False  # --signed: the servers sign bench.test., the queries ask with DO=1
GEO_DB = SHARED / "geoip" / "GeoIP2-City-Test.mmdb"  # --geo-db: geo_many and geo_one
GEO_WORKLOADS = False  # geo_many or geo_one asked for: geobench.test. is served
RESOLVER = False  # a resolver-traffic workload asked for: Knot loads mod-cookies
RRL = False  # --rrl: rate limiting on (at a rate nothing reaches) where the server has it
RES_WORKLOADS = ("res_plain", "res_cookie", "res_steady")
RES_SOCKETS = 16  # rawload sockets for resolver traffic, each its own source /24
RES_BASE = "127.1.0.1"  # socket i sends from 127.1.i.1
RRL_RATE = 10_000_000  # answers per second per key: limiting on, nothing limited
# geo_many's distinct client subnets: more than a 10 s run sends (about 30,000 q/s), so
# no subnet is asked twice in a run and no reply cache can keep them
GEO_SUBNETS = 400_000
# the sites of geobench.test.: name -> (address, lat, lon)
SITES = {
    "west": ("192.0.2.1", 37.4, -122.1),
    "east": ("192.0.2.2", 40.7, -74.0),
    "eu": ("192.0.2.3", 50.1, 8.7),
    "ap": ("192.0.2.4", 1.35, 103.8),
    "rest": ("192.0.2.6", 0.0, 0.0),
}

ZONE_FILE = """$ORIGIN bench.test.
$TTL 300
@       IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60
@       NS ns1
@       NS ns2
@       MX 10 mail
@       TXT "v=spf1 mx -all"
ns1     A 192.0.2.53
ns2     A 198.51.100.53
mail    A 192.0.2.25
www     A 192.0.2.80
www     AAAA 2001:db8::80
alias   CNAME www
_sip._tcp SRV 10 60 5060 sip
sip     A 192.0.2.60
"""
WEIGHTED = [("192.0.2.1", 3), ("192.0.2.2", 2), ("192.0.2.3", 1)]
# the cname workload's targets (multi-CDN): c.bench.test. is a CNAME to one, by weight
CNAMES = [("edge.cdn-a.example.net.", 3), ("edge.cdn-b.example.net.", 2), ("edge.cdn-c.example.org.", 1)]

GSLB_ZONE = """zone: bench.test.
ttl: 300
soa: {rname: hostmaster.bench.test., minimum: 60, serial: 2026112801}
nameservers:
  ns1.bench.test.: [192.0.2.53]
  ns2.bench.test.: [198.51.100.53]
pools:
  web:
    members:
%MEMBERS%
records:
  "@":
    - {type: MX, value: "10 mail"}
    - {type: TXT, value: '"v=spf1 mx -all"'}
  mail: [{type: A, value: 192.0.2.25}]
  www: [{type: A, value: 192.0.2.80}, {type: AAAA, value: "2001:db8::80"}]
  alias: [{type: CNAME, value: www}]
  _sip._tcp: [{type: SRV, value: "10 60 5060 sip"}]
  sip: [{type: A, value: 192.0.2.60}]
  w:
    - types: [A]
      answer: {select: weighted, count: 1}
      rules: [{pools: [web]}]
  c:
    - types: [CNAME]
      answer: {select: weighted}
      rules: [{pools: [cdns]}]
  f:
    - types: [A]
      answer: {select: fastest}
      rules: [{pools: [web]}]
  r:
    - types: [A]
      answer: {select: weighted, count: 1}
      rules: [{pools: [ramp]}]
"""
GSLB_ZONE = GSLB_ZONE.replace(
    "%MEMBERS%", "\n".join(f"      - {{address: {a}, weight: {w}}}" for a, w in WEIGHTED)
).replace(
    "records:\n",
    "  cdns:\n    members:\n"
    + "".join(f"      - {{target: {t}, weight: {w}}}\n" for t, w in CNAMES)
    + "  ramp:\n    slow_start: 1h\n    members:\n"
    + "".join(f"      - {{address: {a}, weight: {w}, name: m{i}}}\n" for i, (a, w) in enumerate(WEIGHTED))
    + "records:\n",
    1,
)

GEO_GSLB_ZONE = (
    "zone: geobench.test.\nttl: 300\nsoa: {rname: hostmaster.geobench.test., serial: 1}\n"
    "nameservers: {ns1.geobench.test.: [192.0.2.53]}\npools:\n"
    + "".join(f"  {n}: {{location: {{lat: {la}, lon: {lo}}}, members: [{{address: {a}}}]}}\n"
              for n, (a, la, lo) in SITES.items())
    + """records:
  geo:
    - types: [A]
      rules:
        - {geos: [NA-US-CA], pools: [west]}
        - {geos: [US], pools: [east]}
        - {geos: [EU], pools: [eu]}
        - {pools: [rest]}
  near:
    - types: [A]
      answer: {select: closest}
      rules: [{pools: [west, east, eu, ap]}]
"""
)  # fmt: skip
GEO_ZONE_FILE = """$ORIGIN geobench.test.
$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
geo  30  DYNA geoip!geo
near 30  DYNA geoip!near
"""

STATIC_QUERIES = [
    "bench.test. SOA",
    "bench.test. NS",
    "bench.test. MX",
    "bench.test. TXT",
    "www.bench.test. A",
    "www.bench.test. AAAA",
    "mail.bench.test. A",
    "alias.bench.test. A",
    "_sip._tcp.bench.test. SRV",
    "ns1.bench.test. A",
]


def free_port() -> int:
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", 0))
        port = int(t.getsockname()[1])
        u.bind(("127.0.0.1", port))
        return port


def tree(pid: int) -> list[int]:
    """pid and every descendant (servers that fork workers or helpers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
                todo += [int(k) for k in kids]
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total / 1e6


def wait_udp(port: int, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import dns.message
    import dns.query

    q = dns.message.make_query(name, "SOA")
    for _ in range(150):
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            dns.query.udp(q, "127.0.0.1", port=port, timeout=0.3)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} does not answer: {log.read_text()[-2000:]}")


# ------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    binary: str
    packages: list[str]
    start: Callable[[Path, int, str], list[str]]  # work dir, port, extra args -> command
    serves: set[str] = field(default_factory=lambda: {"static", "weighted", "mix", "flood"})
    note: str = ""


def _gslb(work: Path, port: int, extra: str) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from tests.geodb import write_asn, write_city

    zdir = work / "zones"
    zdir.mkdir()
    zone = GSLB_ZONE
    if SIGNED:
        from gslb.dnssec import keys

        keys.write_new(work / "bench.key")
        zone = zone.replace(
            "zone: bench.test.\n", f"zone: bench.test.\ndnssec: {{key: {work / 'bench.key'}}}\n"
        )
    (zdir / "bench.test.yaml").write_text(zone)
    if GEO_WORKLOADS:  # geo_many/geo_one: geobench.test. over --geo-db
        (zdir / "geobench.test.yaml").write_text(GEO_GSLB_ZONE)
        geo_args = ["--geoip-db", str(GEO_DB)]
    else:
        shutil.copy(ROOT / "tests/data/geo/geo.test.yaml", zdir)
        city, asn = write_city(work / "city.mmdb"), write_asn(work / "asn.mmdb")
        geo_args = ["--geoip-db", str(city), "--asn-db", str(asn)]
    rrl = ["--rrl-rate", str(RRL_RATE)] if RRL else []
    (work / "token").write_text("bench-token")
    return [sys.executable, "-m", "gslb", "--log-level", "info", "serve", "--zones", str(zdir),
            "--listen", f"127.0.0.1:{port}", "--state-dir", "", "--api", "127.0.0.1:0",
            "--api-token-file", str(work / "token"), *geo_args, *rrl, *shlex.split(extra)]  # fmt: skip


def start_ramp(log: Path) -> None:
    """The ramp workload: drain r.bench.test.'s member m1 through the API and put it back,
    so it ramps (slow_start 1h) through every run: its plan is stepped twice a second."""
    import json
    import urllib.request

    m = re.search(r"HTTP API on http://127\.0\.0\.1:(\d+)/", log.read_text())
    if not m:
        raise SystemExit(f"no API address in {log}")
    for action in ("drain", "clear"):
        req = urllib.request.Request(
            f"http://127.0.0.1:{m.group(1)}/v1/members/bench.test/ramp/m1/{action}", data=b"{}", method="POST"
        )
        req.add_header("Authorization", "Bearer bench-token")
        with urllib.request.urlopen(req, timeout=5) as r:
            json.loads(r.read())


def _gslb_py(work: Path, port: int, extra: str) -> list[str]:
    """gslb with its pure-Python UDP loop (no gslb.server.transport._fastpath): what serves where the C
    extension could not be built."""
    return ["env", "GSLB_PURE_PYTHON=1", *_gslb(work, port, extra)]


def wait_tables(log: Path, proc: subprocess.Popen[bytes]) -> None:
    """A database too big to compile while the zones load (a City-sized one) is compiled
    in the background, and queries take the lookup path meanwhile: measure after."""
    sys.path.insert(0, str(ROOT))
    from gslb.answer.geo.maxmind import MaxMindGeo

    if not GEO_WORKLOADS or MaxMindGeo(GEO_DB).small():
        return
    for _ in range(600):
        if "routing tables compiled" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: see {log}")
        time.sleep(0.5)
    raise SystemExit(f"no 'routing tables compiled' in {log} after 300 s")


def _static_zone(work: Path) -> Path:
    z = work / "bench.test.zone"
    z.write_text(ZONE_FILE + "".join(f"w       A {a}\n" for a, _ in WEIGHTED) + f"c CNAME {CNAMES[0][0]}\n")
    return z


def _knot(work: Path, port: int, extra: str) -> list[str]:
    z = _static_zone(work)
    (work / "db").mkdir()
    (work / "knot.conf").write_text(
        f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{work}/db"
log:
  - target: stderr
    any: error
zone:
  - domain: bench.test.
    file: "{z}"
    zonefile-sync: -1
    journal-content: none
"""
        + ("    module: mod-onlinesign\n" if SIGNED else "")
        + _knot_modules()
    )
    return [shutil.which("knotd") or "/usr/sbin/knotd", "-c", str(work / "knot.conf")]


def _knot_modules() -> str:
    """mod-cookies for resolver traffic, mod-rrl with --rrl: loaded for every zone."""
    mods = (["mod-cookies"] if RESOLVER else []) + (["mod-rrl/bench"] if RRL else [])
    if not mods:
        return ""
    out = f"mod-rrl:\n  - id: bench\n    rate-limit: {RRL_RATE}\n    slip: 2\n" if RRL else ""
    return out + "template:\n  - id: default\n    global-module: [" + ", ".join(mods) + "]\n"


def _nsd(work: Path, port: int, extra: str) -> list[str]:
    z = _static_zone(work)
    (work / "nsd.conf").write_text(f"""server:
    ip-address: 127.0.0.1@{port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{work}"
    database: ""
    zonelistfile: "{work}/zone.list"
    xfrdfile: "{work}/xfrd.state"
    xfrdir: "{work}"
    pidfile: "{work}/nsd.pid"
    do-ip6: no
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: bench.test.
    zonefile: "{z}"
""")
    return [shutil.which("nsd") or "/usr/sbin/nsd", "-d", "-c", str(work / "nsd.conf")]


def _gdnsd(work: Path, port: int, extra: str) -> list[str]:
    conf = work / "gdnsd"
    (conf / "zones").mkdir(parents=True)
    for d in ("run", "state"):
        (work / d).mkdir()
    members = "\n".join(f"        m{i} = [ {a}, {w} ]" for i, (a, w) in enumerate(WEIGHTED))
    cnames = "\n".join(f"        c{i} = [ {t}, {w} ]" for i, (t, w) in enumerate(CNAMES))
    (conf / "config").write_text(f"""options => {{
    listen => [ 127.0.0.1 ]
    dns_port => {port}
    udp_threads => 1
    tcp_threads => 1
    run_dir => {work}/run
    state_dir => {work}/state
}}
plugins => {{
    weighted => {{
        multi = false
        wpool => {{
{members}
        }}
        cpool => {{
{cnames}
        }}
    }}
{_gdnsd_geoip() if GEO_WORKLOADS else ""}}}
""")
    dyn = "w 300 DYNA weighted!wpool\nc 300 DYNC weighted!cpool\n"
    (conf / "zones" / "bench.test").write_text(ZONE_FILE + dyn)
    if GEO_WORKLOADS:
        (conf / "zones" / "geobench.test").write_text(GEO_ZONE_FILE)
    return [shutil.which("gdnsd") or "/usr/sbin/gdnsd", "-c", str(conf), "-f", "start"]


def _gdnsd_geoip() -> str:
    """gdnsd's geoip plugin with geobench.test.'s two names: the same rules as a map
    (California west, the rest of the US east, Europe eu, everyone else rest), and the
    nearest of four sites by auto_dc_coords (the first only: one address per answer)."""
    dcmap = "".join(f"{n} => {a}, " for n, (a, _, _) in SITES.items())
    near = [n for n in SITES if n != "rest"]
    coords = "".join(f"{n} => [ {SITES[n][1]}, {SITES[n][2]} ], " for n in near)
    near_map = "".join(f"{n} => {SITES[n][0]}, " for n in near)
    return f"""    geoip => {{
        maps => {{
            rules => {{
                geoip2_db => {GEO_DB}
                datacenters => [ west, east, eu, ap, rest ]
                map => {{
                    default => [ rest ]
                    NA => {{ default => [ rest ], US => {{ default => [ east ], CA => [ west ] }} }}
                    EU => [ eu ]
                }}
            }}
            nearest => {{
                geoip2_db => {GEO_DB}
                datacenters => [ {", ".join(near)} ]
                auto_dc_coords => {{ {coords} }}
                auto_dc_limit => 1
            }}
        }}
        resources => {{
            geo => {{ map => rules, dcmap => {{ {dcmap} }} }}
            near => {{ map => nearest, dcmap => {{ {near_map} }} }}
        }}
    }}
"""


def _pdns(work: Path, port: int, extra: str) -> list[str]:
    choices = ", ".join(f"{{{w}, '{a}'}}" for a, w in WEIGHTED)
    z = work / "bench.test.zone"
    cchoices = ", ".join(f"{{{w}, '{t}'}}" for t, w in CNAMES)
    z.write_text(ZONE_FILE + f'w 300 IN LUA A "pickwrandom({{{choices}}})"\n'
                 f'c 300 IN LUA CNAME "pickwrandom({{{cchoices}}})"\n')  # fmt: skip
    (work / "named.conf").write_text(f'zone "bench.test" {{ type master; file "{z}"; }};\n')
    (work / "pdns.conf").write_text(f"""launch=bind
bind-config={work}/named.conf
local-address=127.0.0.1
local-port={port}
enable-lua-records=yes
security-poll-suffix=
socket-dir={work}
daemon=no
guardian=no
disable-syslog=yes
loglevel=3
receiver-threads=1
distributor-threads=1
reuseport=no
webserver=no
""")
    if SIGNED:  # live signing: the bind backend's DNSSEC database, one ECDSA P-256 key
        with (work / "pdns.conf").open("a") as f:
            f.write(f"bind-dnssec-db={work}/dnssec.db\n")
        util = shutil.which("pdnsutil") or "/usr/bin/pdnsutil"
        for cmd in (["create-bind-db", f"{work}/dnssec.db"], ["secure-zone", "bench.test"]):
            subprocess.run([util, f"--config-dir={work}", *cmd], check=True, capture_output=True)
    return [shutil.which("pdns_server") or "/usr/sbin/pdns_server", f"--config-dir={work}"]


SERVERS = {
    s.name: s
    for s in [
        Server(
            "gslb",
            sys.executable,
            [],
            _gslb,
            {
                "static",
                "weighted",
                "cname",
                "fastest",
                "ramp",
                "geo_ecs",
                "mix",
                "flood",
                "geo_many",
                "geo_one",
                *RES_WORKLOADS,
            },
        ),
        Server(
            "gslb-py",
            sys.executable,
            [],
            _gslb_py,
            {
                "static",
                "weighted",
                "cname",
                "fastest",
                "ramp",
                "geo_ecs",
                "mix",
                "flood",
                "geo_many",
                "geo_one",
                *RES_WORKLOADS,
            },
        ),
        Server(
            "knot",
            "knotd",
            ["knot"],
            _knot,
            {"static", "weighted", "cname", "mix", "flood", *RES_WORKLOADS},
            note="weighted, cname: static RRset",
        ),
        Server("nsd", "nsd", ["nsd"], _nsd, note="weighted, cname: static RRset"),
        Server(
            "gdnsd",
            "gdnsd",
            ["gdnsd"],
            _gdnsd,
            {"static", "weighted", "cname", "mix", "flood", "geo_many", "geo_one", *RES_WORKLOADS},
        ),
        Server("pdns", "pdns_server", ["pdns-server", "pdns-backend-bind", "pdns-backend-sqlite3"], _pdns),
    ]
}


def find(binary: str) -> str | None:
    return shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)


# ------------------------------------------------------------------------ load


def flood_names(rnd: random.Random) -> list[str]:
    """A random-subdomain flood: every query a name never asked before (a generator
    reads the file at most once in a 10 s run at these rates), so with --signed every
    answer is a new denial to sign. Written again before each run: a generator starts
    at the top of its file, and a second run of the same names would find them cached."""
    return [f"r{rnd.randrange(10**12)}.bench.test. A" for _ in range(600_000)]


def query_files(work: Path) -> dict[str, Path]:
    rnd = random.Random(1)
    mix = []
    for i in range(10000):
        mix.append(
            STATIC_QUERIES[i % len(STATIC_QUERIES)] if i % 2 else f"n{rnd.randrange(10**9)}.bench.test. A"
        )
    files = {
        "static": STATIC_QUERIES,
        "weighted": ["w.bench.test. A"],
        "cname": ["c.bench.test. A"],
        "fastest": ["f.bench.test. A"],
        "ramp": ["r.bench.test. A"],
        "geo_ecs": ["geo.geo.test. A", "near.geo.test. A", "sticky.geo.test. A"],
        "mix": mix,
        "flood": flood_names(rnd),
    }
    out = {}
    for name, lines in files.items():
        p = work / f"{name}.txt"
        p.write_text("\n".join(lines) + "\n")
        out[name] = p
    return out


def compiled(src: Path, name: str) -> str:
    """A load generator's C source compiled once into ~/.cache/gslb-bench."""
    out = Path.home() / ".cache" / "gslb-bench" / name
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(out), str(src), "-lm"], check=True)
    return str(out)


def hex_queries(qfile: Path, ecs: bool) -> Path:
    """The workload's questions as query packets, one hex line each (for rawload); with
    --signed they ask with DO=1."""
    import dns.edns
    import dns.flags
    import dns.message

    opts: list[dns.edns.Option] = [dns.edns.ECSOption("198.51.100.0", 24)] if ecs else []
    lines = []
    for line in qfile.read_text().split("\n"):
        if line.strip():
            name, rdtype = line.split()
            q = dns.message.make_query(name, rdtype, use_edns=0 if ecs or SIGNED else False, options=opts,
                                       want_dnssec=SIGNED)  # fmt: skip
            q.flags &= ~dns.flags.RD
            lines.append(q.to_wire().hex())
    out = qfile.with_suffix(".hex")
    out.write_text("\n".join(lines) + "\n")
    return out


def geo_packets(work: Path, many: bool) -> Path:
    """geo_many: one query per client subnet, GEO_SUBNETS of them (IPv4 /24 and IPv6 /56, half
    inside the database's networks, half from random public space), alternating the two
    names; geo_one: the two names from 198.51.100.0/24. Hex lines for rawload."""
    import ipaddress

    import dns.edns
    import dns.flags
    import dns.message
    import maxminddb

    rnd = random.Random(7)
    subnets: list[tuple[str, int]] = []
    if many:
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        with maxminddb.open_database(str(GEO_DB)) as r:
            for net, _ in r:
                (v4 if net.version == 4 else v6).append(net)
        seen: set[tuple[str, int]] = set()
        while len(seen) < GEO_SUBNETS:
            inside = rnd.random() < 0.5
            if rnd.random() < 0.8:  # IPv4 /24
                if inside and v4:
                    n = rnd.choice(v4)
                    a = int(n.network_address) + rnd.randrange(max(1, n.num_addresses))
                else:
                    a = rnd.randrange(1 << 24, 223 << 24)
                seen.add((str(ipaddress.IPv4Address(a >> 8 << 8)), 24))
            else:  # IPv6 /56
                if inside and v6:
                    n6 = rnd.choice(v6)
                    a = int(n6.network_address) + rnd.randrange(max(1, n6.num_addresses))
                else:
                    a = (0x2000 << 112) | rnd.getrandbits(125 - 16)
                seen.add((str(ipaddress.IPv6Address(a >> 72 << 72)), 56))
        subnets = sorted(seen, key=lambda _: rnd.random())
    else:
        subnets = [("198.51.100.0", 24)]
    lines = []
    for i, (addr, plen) in enumerate(subnets if many else subnets * 2):
        name = "geo.geobench.test." if i % 2 == 0 else "near.geobench.test."
        q = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.ECSOption(addr, plen)])
        q.flags &= ~dns.flags.RD
        lines.append(q.to_wire().hex())
    out = work / ("geo_many.hex" if many else "geo_one.hex")
    out.write_text("\n".join(lines) + "\n")
    return out


RES_NAMES = [*STATIC_QUERIES, "w.bench.test. A"]


def _mixed_case(rnd: random.Random, name: str) -> str:
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in name)


def _res_query(rnd: random.Random, cookie: bytes | None) -> bytes:
    import dns.edns
    import dns.flags
    import dns.message

    name, rdtype = rnd.choice(RES_NAMES).split()
    if cookie is None:  # res_plain
        q = dns.message.make_query(name, rdtype, use_edns=False)
    else:
        opt = dns.edns.CookieOption(cookie[:8], cookie[8:])
        q = dns.message.make_query(_mixed_case(rnd, name), rdtype, use_edns=0, payload=1232,
                                   want_dnssec=True, options=[opt])  # fmt: skip
    q.flags &= ~dns.flags.RD
    return q.to_wire()


def server_cookie_of(port: int, source: str, client: bytes) -> bytes:
    """The server cookie a server gives ``client`` at ``source`` (a resolver's first query)."""
    import dns.edns
    import dns.message
    import dns.query

    q = dns.message.make_query(
        "www.bench.test.", "A", use_edns=0, options=[dns.edns.CookieOption(client, b"")]
    )
    for _ in range(5):
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, source=source, timeout=1)
        except TimeoutError:
            continue
        for o in r.options:
            if isinstance(o, dns.edns.CookieOption) and o.client == client and o.server:
                return bytes(o.server)
        raise SystemExit(f"the server on port {port} gave no server cookie (cookies off?)")
    raise SystemExit(f"no answer from port {port} for a server cookie")


def resolver_packets(work: Path, wl: str, port: int) -> Path:
    """res_plain / res_cookie / res_steady packets; res_steady's carry the server cookies
    this server (on ``port``) gave each socket's address and client cookie."""
    rnd = random.Random(2)
    lines = []
    if wl == "res_plain":
        lines = [_res_query(rnd, None).hex() for _ in range(20_000)]
    elif wl == "res_cookie":
        clients = [rnd.randbytes(8) for _ in range(512)]
        lines = [_res_query(rnd, rnd.choice(clients)).hex() for _ in range(20_000)]
    else:
        for i in range(RES_SOCKETS):
            source = RES_BASE.rsplit(".", 3)[0] + f".1.{i}.1"
            for _ in range(4):
                client = rnd.randbytes(8)
                cookie = client + server_cookie_of(port, source, client)
                lines += [f"{i}:" + _res_query(rnd, cookie).hex() for _ in range(1250)]
        rnd.shuffle(lines)
    out = work / f"{wl}-{port}.hex"
    out.write_text("\n".join(lines) + "\n")
    return out


def generator_cmd(
    gen: str, port: int, qfile: Path, seconds: int, workload: str, tcp: bool, rate: int
) -> list[str]:
    ecs = workload == "geo_ecs"
    if workload in ("geo_many", "geo_one", *RES_WORKLOADS) and gen != "rawload":
        raise SystemExit(f"{workload} needs --generator rawload (prebuilt packets)")
    if gen == "rawload" and not tcp:
        res = workload in RES_WORKLOADS
        packets = qfile if workload in ("geo_many", "geo_one") or res else hex_queries(qfile, ecs)
        socks = ["-c", str(RES_SOCKETS), "-q", "16", "-b", RES_BASE] if res else ["-c", "8", "-q", "32"]
        cmd = [compiled(ROOT / "bench" / "rawload.c", "rawload"), "-s", "127.0.0.1", "-p", str(port),
               "-f", str(packets), "-l", str(seconds), *socks, "-t", str(TIMEOUT)]  # fmt: skip
        return cmd + (["-Q", str(rate)] if rate else [])
    if gen == "dnsblast" and not ecs and not tcp:
        cmd = [compiled(SHARED / "bench" / "dnsblast.c", "dnsblast"), "-s", "127.0.0.1", "-p", str(port),
               "-d", str(qfile), "-l", str(seconds), "-c", "8", "-q", "32", "-t", "1"]  # fmt: skip
        return cmd + (["-Q", str(rate)] if rate else [])
    if gen in ("dnsperf", "dnsblast", "rawload"):
        cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-l", str(seconds),
               "-c", "4", "-q", "500", "-t", "2"]  # fmt: skip
        if SIGNED:
            cmd += ["-D"]
        if tcp:
            cmd += ["-m", "tcp"]
        if ecs:
            cmd += ["-E", ECS_OPTION]
        return cmd + (["-Q", str(rate)] if rate else [])
    return shlex.split(gen.format(server="127.0.0.1", port=port, file=qfile, seconds=seconds))


@dataclass
class Run:
    qps: float
    us: float
    p50: float | None
    p99: float | None
    lost: int
    us_sent: float  # CPU per query sent (answered or not: what a rate-limited flood costs)


def one_run(pid: int, cmd: list[str], seconds: int) -> Run:
    c0 = cpu_seconds(pid)
    out = subprocess.run(["taskset", "-c", LOAD_CPU, *cmd], capture_output=True, text=True, check=False)
    c1 = cpu_seconds(pid)
    m = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    if not m:
        raise RuntimeError(f"{cmd[0]}: no 'Queries per second' in its output:\n{out.stdout}{out.stderr}")
    qps = float(m.group(1))
    lost = re.search(r"Queries lost:\s+(\d+)", out.stdout)
    sent = re.search(r"Queries sent:\s+(\d+)", out.stdout)
    pct = re.search(r"p50 ([\d.]+) p90 [\d.]+ p99 ([\d.]+)", out.stdout)
    return Run(
        qps,
        (c1 - c0) / max(qps * seconds, 1) * 1e6,
        float(pct.group(1)) if pct else None,
        float(pct.group(2)) if pct else None,
        int(lost.group(1)) if lost else 0,
        (c1 - c0) / max(int(sent.group(1)) if sent else qps * seconds, 1) * 1e6,
    )


def med(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--generator", default="dnsperf", help="dnsperf, dnsblast, rawload, or a command template"
    )
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--workloads", default="static,weighted,geo_ecs,mix")
    ap.add_argument("--rate", type=int, default=0, help="fixed query rate (latency at moderate load)")
    ap.add_argument("--tcp", action="store_true", help="DNS over TCP (dnsperf -m tcp)")
    ap.add_argument("--gslb-args", default="", help="extra arguments for gslb serve, e.g. '--workers 2'")
    ap.add_argument("--install", action="store_true", help="apt-get install missing peers and dnsperf")
    ap.add_argument("--signed", action="store_true", help="DNSSEC: signed zone, DO=1 queries (dnsperf)")
    ap.add_argument(
        "--rrl", action="store_true", help="rate limiting on where the server has it (none limited)"
    )
    ap.add_argument(
        "--timeout", type=float, default=1.0, help="rawload: seconds before a query counts as lost"
    )
    ap.add_argument(
        "--geo-db",
        default=str(SHARED / "geoip" / "GeoIP2-City-Test.mmdb"),
        help="City database for geo_many and geo_one",
    )
    args = ap.parse_args()
    global SIGNED, TIMEOUT, GEO_DB, GEO_WORKLOADS, RESOLVER, RRL
    TIMEOUT = args.timeout
    SIGNED = args.signed
    RRL = args.rrl
    if SIGNED and args.generator not in ("dnsperf", "rawload"):
        print("--signed needs --generator dnsperf or rawload (the others send no DO bit)", file=sys.stderr)
        return 2
    wanted = [s for s in args.servers.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    GEO_DB = Path(args.geo_db).resolve()
    GEO_WORKLOADS = any(w in ("geo_many", "geo_one") for w in workloads)
    RESOLVER = any(w in RES_WORKLOADS for w in workloads)
    if args.install:
        pkgs = ["dnsperf"] if not shutil.which("dnsperf") else []
        pkgs += [p for s in wanted if not find(SERVERS[s].binary) for p in SERVERS[s].packages]
        if pkgs:  # the packages start nothing: policy-rc.d says no
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
            subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], check=True, env=env)
    for tool in ("taskset", "dnsperf"):
        if not shutil.which(tool):
            print(f"{tool} not found (apt-get install dnsperf util-linux, or --install)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="gslb-compare-"))
    qf = query_files(work)
    if GEO_WORKLOADS:
        qf["geo_many"] = geo_packets(work, True)
        qf["geo_one"] = geo_packets(work, False)
    results: dict[tuple[str, str], tuple[float, float | None, float | None, float, float, int]] = {}
    try:
        for sname in wanted:
            srv = SERVERS[sname]
            if not find(srv.binary):
                print(f"{sname}: {srv.binary} not found, skipped (--install)", file=sys.stderr)
                continue
            sdir = work / sname
            sdir.mkdir()
            port = free_port()
            log = sdir / "server.log"
            cmd = [
                "taskset",
                "-c",
                SERVER_CPU,
                *srv.start(sdir, port, args.gslb_args if sname.startswith("gslb") else ""),
            ]
            with open(log, "wb") as lf:
                proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, cwd=sdir)
            try:
                wait_udp(port, "geobench.test." if GEO_WORKLOADS else "bench.test.", proc, log)
                if sname.startswith("gslb"):
                    wait_tables(log, proc)
                for wl in workloads:
                    if wl not in srv.serves and not (wl in ("weighted", "cname") and srv.note):
                        continue
                    if wl == "geo_ecs" and not sname.startswith("gslb"):
                        continue
                    if args.tcp and wl != "static":
                        continue
                    if RRL and sname == "gdnsd":  # it has no rate limiting: no RRL-on row
                        continue
                    if wl in RES_WORKLOADS:
                        qf[wl] = resolver_packets(work, wl, port)
                    if wl == "ramp":
                        start_ramp(log)
                    runs = []
                    for _ in range(args.runs):
                        if wl == "flood":
                            qf[wl].write_text("\n".join(flood_names(random.Random())) + "\n")
                        gcmd = generator_cmd(
                            args.generator, port, qf[wl], args.seconds, wl, args.tcp, args.rate
                        )
                        runs.append(one_run(proc.pid, gcmd, args.seconds))
                    lost = sum(r.lost for r in runs)
                    row = (
                        statistics.median(r.qps for r in runs),
                        med([r.p50 for r in runs]),
                        med([r.p99 for r in runs]),
                        statistics.median(r.us for r in runs),
                        rss_mb(proc.pid),
                        lost,
                    )
                    results[(sname, wl)] = row
                    us_sent = statistics.median(r.us_sent for r in runs)
                    print(
                        f"{sname:6} {wl:9} {row[0]:10.0f} qps  {row[3]:6.1f} us/q  lost {lost}  "
                        f"{us_sent:6.1f} us per query sent",
                        file=sys.stderr,
                    )
            finally:
                for p in reversed(tree(proc.pid)):
                    with contextlib.suppress(OSError):
                        os.kill(p, 15)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, args)
    return 0


def print_table(results: dict[tuple[str, str], tuple[float, float | None, float | None, float, float, int]],
                args: argparse.Namespace) -> None:  # fmt: skip
    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    print("\n| server | workload | queries/s | p50 ms | p99 ms | CPU us/query | RSS MB | qps vs Knot |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, wl), (q, p50, p99, us, rss, lost) in results.items():
        ref = results.get(("knot", wl)) or results.get(("knot", "static"))
        ratio = f"{q / ref[0]:.2f}" if ref else "-"
        label = name + (" (static RRset)" if wl in ("weighted", "cname") and SERVERS[name].note else "")
        extra = f" ({lost} lost)" if lost else ""
        lat = f"{f(p50, '.3f')} | {f(p99, '.3f')}"
        print(f"| {label} | {wl} | {q:,.0f}{extra} | {lat} | {us:.1f} | {rss:.0f} | {ratio} |")
    mode = "TCP" if args.tcp else "UDP"
    rate = f", rate-limited to {args.rate} qps" if args.rate else ""
    gen = args.generator.split()[0]
    print(f"\n{args.runs} runs x {args.seconds} s, {mode}, generator {gen} on CPU {LOAD_CPU}{rate}, "
          f"servers on CPU {SERVER_CPU}, medians; geo_ecs rows are compared with "
          "Knot's static figure")  # fmt: skip
    for wl in ("geo_many", "geo_one", "static", "weighted", "cname", *RES_WORKLOADS):
        for gname in ("gslb", "gslb-py"):
            g, d, k = results.get((gname, wl)), results.get(("gdnsd", wl)), results.get(("knot", wl))
            if g and d:
                print(f"{wl}: {gname} {g[0]:,.0f} q/s, gdnsd {d[0]:,.0f} q/s: {g[0] / d[0]:.2f}x gdnsd; "
                      f"CPU per query {g[3]:.1f} against {d[3]:.1f} us")  # fmt: skip
            if g and k and wl in RES_WORKLOADS:
                print(f"{wl}: {gname} {g[0]:,.0f} q/s, Knot {k[0]:,.0f} q/s: {g[0] / k[0]:.2f}x Knot")


if __name__ == "__main__":
    sys.exit(main())
