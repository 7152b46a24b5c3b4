"""A synthetic GeoIP2-City database the size of the real one, for benchmarks and the
memory budget of the compiled routing tables (gslb/answer/geo/tables.py).

    python bench/synthcity.py OUT.mmdb [--v4 N] [--v6 N] [--seed S]

Networks are cut from public address space the way MaxMind's are: IPv4 /16 to /28 and
IPv6 /32 to /64, consecutive runs, each given one of a few hundred places (continent,
country, subdivision, coordinates) and about one in three a city record of its own.
Written with mmdb-writer (a test dependency). Documentation and private ranges are
left out; no address is ever contacted.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet

CONTINENTS = {
    "NA": [("US", ["CA", "NY", "TX", "WA", "OR", "NC", "FL", "IL", "VA", "GA"], 38.0, -97.0),
           ("CA", ["ON", "QC", "BC"], 56.0, -106.0), ("MX", ["CMX", "JAL"], 23.6, -102.5)],
    "EU": [("GB", ["ENG", "SCT"], 54.0, -2.0), ("DE", ["BE", "BY", "HE"], 51.2, 10.4),
           ("FR", ["IDF", "ARA"], 46.6, 2.2), ("NL", ["NH"], 52.1, 5.3), ("SE", ["AB"], 60.1, 18.6),
           ("PL", ["MZ"], 51.9, 19.1), ("IT", ["LAZ", "LOM"], 41.9, 12.6), ("ES", ["MD", "CT"], 40.5, -3.7)],
    "AS": [("JP", ["13", "27"], 36.2, 138.3), ("CN", ["BJ", "SH", "GD"], 35.9, 104.2),
           ("IN", ["MH", "KA", "DL"], 20.6, 79.0), ("SG", [], 1.35, 103.8), ("KR", ["11"], 35.9, 127.8)],
    "OC": [("AU", ["NSW", "VIC"], -25.3, 133.8), ("NZ", ["AUK"], -40.9, 174.9)],
    "SA": [("BR", ["SP", "RJ"], -14.2, -51.9), ("AR", ["B"], -38.4, -63.6), ("CL", ["RM"], -35.7, -71.5)],
    "AF": [("ZA", ["GT", "WC"], -30.6, 22.9), ("NG", ["LA"], 9.1, 8.7), ("EG", ["C"], 26.8, 30.8)],
}  # fmt: skip
SKIP = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8",
        "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3")]  # fmt: skip


def places(rng: random.Random, n: int) -> list[dict[str, object]]:
    out = []
    for i in range(n):
        cont = rng.choice(list(CONTINENTS))
        country, subs, lat, lon = rng.choice(CONTINENTS[cont])
        rec: dict[str, object] = {
            "continent": {"code": cont},
            "country": {"iso_code": country},
            "location": {
                "latitude": round(lat + rng.uniform(-6, 6), 4),
                "longitude": round(lon + rng.uniform(-8, 8), 4),
            },
            "city": {"geoname_id": 100000 + i},
        }
        if subs:
            rec["subdivisions"] = [{"iso_code": rng.choice(subs)}]
        out.append(rec)
    return out


def networks(rng: random.Random, family: int, count: int) -> list[str]:
    """``count`` disjoint networks in runs through public space."""
    out: list[str] = []
    if family == 4:
        addr = 1 << 24
        while len(out) < count and addr < 224 << 24:
            plen = rng.choice([18, 20, 21, 22, 23, 24, 24, 24, 24, 24, 24, 25, 26, 27, 28, 29])
            size = 1 << (32 - plen)
            addr = (addr + size - 1) // size * size
            net = ipaddress.IPv4Network((addr, plen))
            addr += size
            if rng.random() < 0.1:
                addr += size * rng.randrange(1, 16)  # a gap: space no network covers
            if not any(net.overlaps(s) for s in SKIP):
                out.append(str(net))
    else:
        addr = 0x2400 << 112
        while len(out) < count:
            plen = rng.choice([32, 36, 40, 44, 48, 48, 48, 52, 56, 64])
            size = 1 << (128 - plen)
            addr = (addr + size - 1) // size * size
            out.append(str(ipaddress.IPv6Network((addr, plen))))
            addr += size * (1 + (rng.randrange(1, 200) if rng.random() < 0.2 else 0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--v4", type=int, default=2_000_000)
    ap.add_argument("--v6", type=int, default=600_000)
    ap.add_argument("--places", type=int, default=60_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    recs = places(rng, args.places)
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"],
                   description="gslb synthetic City database (bench/synthcity.py)")  # fmt: skip
    for fam, n in ((4, args.v4), (6, args.v6)):
        for net in networks(rng, fam, n):
            w.insert_network(IPSet([IPNetwork(net)]), recs[rng.randrange(len(recs))])
    w.to_db_file(args.out)
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {args.v4} IPv4 + {args.v6} IPv6 networks, {size / 1e6:.1f} MB, "
          f"{time.monotonic() - t0:.0f} s", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
