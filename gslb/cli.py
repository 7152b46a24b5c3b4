"""Command line: ``gslb serve | check | schema``."""

from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from gslb import __version__
from gslb.server.options import OPTIONS, ServeOptions, add_flags, choices_of
from gslb.zones.errors import ConfigError
from gslb.zones.load import iter_zone_files, load_zones

if TYPE_CHECKING:
    from gslb.zones.importers.bind import Result


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected ADDR:PORT, e.g. 127.0.0.1:5353 or [::1]:5353, got {text!r}"
        )
    host = host.strip("[]")
    return host, int(port)


def _zone_paths(items: list[str]) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out += list(iter_zone_files(p)) if p.is_dir() else [p]
    return out


def cmd_check(args: argparse.Namespace) -> int:
    paths = _zone_paths(args.paths)
    if not paths:
        print("gslb check: no zone files found", file=sys.stderr)
        return 1
    # as serve decides: geo and ASN rules need the database they read (from the command
    # line, else from the serve config file given with --config)
    if args.config:
        from gslb.server.options import load_server_config

        try:
            file = load_server_config(args.config)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 1
        args.geoip_db = args.geoip_db or file.get("geoip_db")
        args.asn_db = args.asn_db or file.get("asn_db")
    geo = asn = False
    if args.geoip_db or args.asn_db:
        from gslb.answer.geo.maxmind import GeoDatabaseError, MaxMindGeo

        try:
            g = MaxMindGeo(args.geoip_db, args.asn_db)
        except (GeoDatabaseError, OSError, ValueError) as e:
            print(f"gslb check: {e}", file=sys.stderr)
            return 1
        geo, asn = g.geo is not None, g.asn is not None
    zones, problems = load_zones(paths, geo_db=geo, asn_db=asn)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {len({p.path for p in problems})} file(s)", file=sys.stderr)
        return 1
    for z in zones:
        for w in z.warnings:
            print(f"{w} (warning)")
        print(f"{z.path}: ok ({len(z.rrsets)} RRsets, {len(z.balanced)} balanced, {len(z.pools)} pools)")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from gslb.zones.schema import SCHEMA

    print(json.dumps(SCHEMA, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gslb.answer.geo.maxmind import GeoDatabaseError
    from gslb.server.runtime import Server, serve_until_stopped
    from gslb.server.workers import WorkerPool

    o: ServeOptions = args.options  # resolved in main(): command line, then --config file, then defaults
    if o.workers < 1 or (o.workers > 1 and not hasattr(socket, "SO_REUSEPORT")):
        logging.getLogger("gslb").error(
            "workers: %d is not possible here (at least 1; more needs SO_REUSEPORT, Linux)", o.workers
        )
        return 1
    try:
        server = Server(o)
    except (GeoDatabaseError, OSError, ValueError) as e:
        logging.getLogger("gslb").error("%s", e)
        return 1
    if not Path(o.zones).is_dir():
        logging.getLogger("gslb").error("zones directory %s does not exist", o.zones)
        return 1
    problems = server.load_initial()
    if problems:
        logging.getLogger("gslb").error(
            "not starting: %d problem(s) in the zone files (see above)", len(problems)
        )
        return 1
    return serve_until_stopped(server, WorkerPool(o.workers - 1) if o.workers > 1 else None)


def cmd_demo(args: argparse.Namespace) -> int:
    from gslb.server.demo import run_demo

    return run_demo(Path(args.dir), args.listen, args.api, args.backend_port)


def _api_call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10
) -> Any:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        args.api_url.rstrip("/") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
    )
    from gslb.server.runtime import read_token

    token = read_token(getattr(args, "api_token_file", None))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise SystemExit(f"gslb: {method} {path}: HTTP {e.code}: {detail.strip()}") from None
    except urllib.error.URLError as e:
        raise SystemExit(f"gslb: cannot reach the API at {args.api_url}: {e.reason}") from None


def cmd_status(args: argparse.Namespace) -> int:
    doc = _api_call(args, "GET", "/v1/status")
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    for z in doc["zones"]:
        print(f"zone {z['zone']} serial {z['serial']} ({z['file']})")
    c = doc.get("cluster")
    if c:
        store = (
            "connected"
            if c["connected"]
            else f"UNREACHABLE for {c['last_sync_seconds']:.0f}s ({c['last_error']})"
        )
        print(f"cluster node {c['node']}: store {store}" + ("; own observations only" if c["alone"] else ""))
        for n in c["nodes"]:
            seen = "this node" if n["self"] else f"last contact {n['last_contact']:.1f}s ago"
            print(f"  node {n['node']:20} {n['region'] or '-':12} {seen}")
        for zone, m in c["serial_mismatch"].items():
            print(f"  zone {zone} served at different serials: {m['serials']}")
    print(f"{'ZONE/POOL/MEMBER':44} {'ADDRESS':20} {'ROTATION':9} {'CHECK':6} {'SINCE':20} LAST / OVERRIDE")
    for m in doc["members"]:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["since"])) if m["since"] else "-"
        last = (m["last"] or {}).get("reason", "-")
        if m["override"]:
            o = m["override"]
            last += f"  [{o['action']}" + (
                f" until {time.strftime('%H:%M:%S', time.localtime(o['expires']))}]" if o["expires"] else "]"
            )
        if m["status"] != "obey":
            last += f"  [status: {m['status']} in zone]"
        if m.get("votes"):
            last += f"  [{m['why']}]"
        name = f"{m['zone']}/{m['pool']}/{m['name']}"
        print(
            f"{name:44} {m['address']:20} {'IN' if m['in_rotation'] else 'OUT':9} "
            f"{(m['check_state'] or '-'):6} {since:20} {last}"
        )
    return 0


def cmd_member(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if getattr(args, "for_", None):
        body["for"] = args.for_
    if args.local:
        body["local"] = True
    path = f"/v1/members/{args.zone}/{args.pool}/{args.member}/{args.action}"
    if args.replace:  # compare-and-swap against the override as it is now
        status = _api_call(args, "GET", "/v1/status")
        for m in status["members"]:
            o = m.get("override")
            if (m["zone"].rstrip(".") == args.zone.rstrip(".") and m["pool"] == args.pool
                    and args.member in (m["name"], m["address"]) and o and o.get("revision")):  # fmt: skip
                body["revision"] = o["revision"]
    r = _api_call(args, "POST", path, body)
    where = f" on {r['scope']}" if r.get("scope") else ""
    print(f"{r['member']}: {r['action']}{where}" + (" (no change)" if not r["changed"] else ""))
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    r = _api_call(args, "POST", f"/v1/zones/{args.zone}/notify", timeout=30)
    ok = True
    for t in r["targets"]:
        print(f"NOTIFY {r['zone']} serial {r['serial']} to {t['target']}: {t['result']}")
        ok = ok and t["result"].startswith("acknowledged")
    return 0 if ok else 1


def cmd_push(args: argparse.Namespace) -> int:
    """Each zone file, whole, through the zone API (PUT /v1/zones/ZONE): validated by the
    server as gslb check validates it; its problems are printed at the file's positions."""
    import urllib.error
    import urllib.request

    from gslb.server.runtime import read_token

    token = read_token(getattr(args, "api_token_file", None))
    ok = True
    for path in args.files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            print(f"gslb push: {path}: cannot read: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
            ok = False
            continue
        m = re.search(r"^zone:\s*['\"]?([^\s'\"#]+)", text, re.M)
        if m is None:
            print(f"{path}:1:1: zone: no 'zone:' line, so no zone to push to", file=sys.stderr)
            ok = False
            continue
        zone = m.group(1)
        req = urllib.request.Request(
            args.api_url.rstrip("/") + f"/v1/zones/{zone}", data=text.encode(), method="PUT"
        )
        req.add_header("Content-Type", "application/yaml")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {"error": raw.decode(errors="replace").strip()}
            for p in doc.get("problems", []):  # the server's positions are the file's: same text
                print(f"{path}:{p['line']}:{p['col']}: {p['key']}: {p['message']}", file=sys.stderr)
            print(f"gslb push: {path}: HTTP {e.code}: {doc.get('error')}", file=sys.stderr)
            ok = False
            continue
        except urllib.error.URLError as e:
            raise SystemExit(f"gslb: cannot reach the API at {args.api_url}: {e.reason}") from None
        what = "unchanged" if not doc.get("changed") else ("created" if r.status == 201 else "replaced")
        print(f"{doc['zone']}: {what}, serial {doc['serial']} ({doc['file']} on the server)")
    return 0 if ok else 1


def _seconds(text: str) -> float:
    """A duration: 90, 90s, 30m, 2h, 1d (argparse type: a bad one is a usage error)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1.0
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a duration such as 600, 90s, 30m, 2h or 1d, got {text!r}")
    return value


def _geo_args(p: argparse.ArgumentParser, default: Any = None) -> None:
    p.add_argument(
        "--geoip-db", metavar="PATH", default=default, help="MaxMind GeoIP2/GeoLite2 City or Country database"
    )
    p.add_argument(
        "--asn-db", metavar="PATH", default=default, help="MaxMind GeoLite2 ASN database (for 'asns' rules)"
    )


def cmd_dnssec_keygen(args: argparse.Namespace) -> int:
    from gslb.dnssec import keys

    try:
        keys.write_new(Path(args.out), args.algorithm)
        k = keys.load(args.out)
    except FileExistsError:
        print(f"gslb dnssec keygen: {args.out} exists; a key is never overwritten", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"gslb dnssec keygen: {e}", file=sys.stderr)
        return 1
    zone = args.zone.rstrip(".") + "."
    print(f"wrote the {args.algorithm} signing key of {zone} to {args.out} (key tag {k.tag}, mode 0600)")
    return 0


def cmd_import_bind(args: argparse.Namespace) -> int:
    from gslb.zones.importers.bind import ImportError_, import_bind

    try:
        res = import_bind(Path(args.file), args.zone, args.skip_unsupported)
    except ImportError_ as e:
        print(f"gslb import bind: {e}", file=sys.stderr)
        return 1
    return _write_import(args, "bind", res)


def cmd_import_octodns(args: argparse.Namespace) -> int:
    from gslb.zones.importers.bind import ImportError_
    from gslb.zones.importers.octodns import import_octodns

    try:
        res = import_octodns(Path(args.source), args.zone, args.skip_unsupported, tuple(args.ns or ()))
    except ImportError_ as e:
        print(f"gslb import octodns: {e}", file=sys.stderr)
        return 1
    return _write_import(args, "octodns", res)


def _write_import(args: argparse.Namespace, kind: str, res: Result) -> int:
    import tempfile

    from gslb.zones.errors import ConfigError
    from gslb.zones.load import load_zone

    # what was written must load: checked here, so a surprise is the importer's, not the user's
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "imported.yaml"
        probe.write_text(res.yaml)
        try:
            load_zone(probe)
        except ConfigError as e:
            print(
                f"gslb import {kind}: the imported zone does not load (please report this):\n{e}",
                file=sys.stderr,
            )
            return 1
    for n in res.notes:
        print(f"note: {n}", file=sys.stderr)
    if args.out:
        try:
            Path(args.out).write_text(res.yaml)
        except OSError as e:
            print(f"gslb import {kind}: {args.out}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(res.yaml)
    return 0


def cmd_dnssec_ds(args: argparse.Namespace) -> int:
    import dns.name
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    from gslb.dnssec import keys

    try:
        k = keys.load(args.key)
        owner = dns.name.from_text(args.zone.rstrip(".") + ".")
    except (ValueError, dns.name.BadEscape) as e:
        print(f"gslb dnssec ds: {e}", file=sys.stderr)
        return 1
    rd = keys.ds(owner.canonicalize().to_wire() or b"", k.dnskey)
    ds = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.DS, rd, 0, len(rd))
    print(f"{owner.to_text()} IN DS {ds.to_text()}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from gslb.answer.explain import explain_offline, render

    try:
        if args.api_url:  # ask the running server: its live health, overrides and cluster votes
            import urllib.parse

            q = {"name": args.name, "type": args.type, "client": args.client}
            if args.ecs:
                q = {"name": args.name, "type": args.type, "ecs": args.ecs}
            result = _api_call(args, "GET", "/v1/explain?" + urllib.parse.urlencode(q))
        else:
            result = explain_offline(args)
    except (ValueError, OSError) as e:
        print(f"gslb explain: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors end in one line and exit 1, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: {message} (see {self.prog} --help)\n")


API_URL_HELP = "the running server's API, where it listens with --api (default http://127.0.0.1:8053)"


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="gslb", description="DNS-based global server load balancer")
    ap.add_argument("--version", action="version", version=f"gslb {__version__}")
    for key in ("log_level", "log_format"):  # options of every command, before it
        ap.add_argument(
            "--" + key.replace("_", "-"),
            default=argparse.SUPPRESS,
            choices=choices_of(key),
            help=str(OPTIONS[key].metadata["help"]),
        )
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the zones in a directory")
    add_flags(s)  # one flag per option of ServeOptions (gslb/server/options.py)
    s.add_argument(
        "--config", metavar="FILE", help="server configuration file (YAML); see docs/configuration.md"
    )
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser(
        "check",
        help="validate zone files offline, as serve would load them (give the same --geoip-db/--asn-db)",
    )
    c.add_argument("paths", nargs="+", help="zone files or directories")
    _geo_args(c)
    c.add_argument(
        "--config", metavar="PATH", help="serve's config file: its geoip_db and asn_db, unless given here"
    )
    c.set_defaults(func=cmd_check)

    d = sub.add_parser("demo", help="three loopback HTTP backends behind a health-checked name")
    d.add_argument(
        "--dir", default="demo-run", help="run directory: zone, pid files, state (default demo-run)"
    )
    d.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 5353),
        metavar="ADDR:PORT",
        help="DNS (127.0.0.1:5353)",
    )
    d.add_argument(
        "--api",
        type=_listen,
        default=("127.0.0.1", 8053),
        metavar="ADDR:PORT",
        help="HTTP API and status page (default 127.0.0.1:8053; port 0 = any free)",
    )
    d.add_argument("--no-api", dest="api", action="store_const", const=None, help="run without the HTTP API")
    d.add_argument(
        "--backend-port",
        type=int,
        default=0,
        metavar="PORT",
        help="port of the three backends on 127.0.0.2-4 (default 0: one that is free on all three)",
    )
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("explain", help="how a name is answered, and why (offline, with the real engine)")
    e.add_argument("name", help="the name to look up, e.g. www.example.com")
    e.add_argument("--type", default="A", help="query type (default A)")
    who = e.add_mutually_exclusive_group()
    who.add_argument("--client", default="192.0.2.1", help="the client's address (default 192.0.2.1)")
    who.add_argument("--ecs", metavar="CIDR", help="an EDNS Client Subnet, e.g. 198.51.100.0/24")
    e.add_argument(
        "--api-url",
        metavar="URL",
        help="ask a running server instead (its live health, overrides and cluster votes), "
        "e.g. http://127.0.0.1:8053",
    )
    e.add_argument("--zones", default="zones", help="directory of zone files (default: zones)")
    e.add_argument("--state-dir", default="state", help="persisted health state to apply ('' = all up)")
    e.add_argument(
        "--down",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="treat members with this address as down (repeatable)",
    )
    e.add_argument("--json", action="store_true", help="print JSON")
    _geo_args(e)
    e.set_defaults(func=cmd_explain)

    st = sub.add_parser("status", help="the member table of a running server (through its API)")
    st.add_argument("--api-url", default="http://127.0.0.1:8053", metavar="URL", help=API_URL_HELP)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    for action, helptext in (
        ("drain", "take a member out of answers (maintenance)"),
        ("down", "force a member down"),
        ("up", "force a member up, whatever its checks"),
        ("clear", "remove a member's override"),
    ):
        a = sub.add_parser(action, help=helptext)
        a.add_argument("zone")
        a.add_argument("pool")
        a.add_argument("member", help="member name or address")
        if action != "clear":
            a.add_argument(
                "--for", dest="for_", type=_seconds, metavar="DURATION", help="expire after e.g. 30m, 2h, 600"
            )
        a.add_argument(
            "--replace",
            action="store_true",
            help="cluster: replace the member's current override (else an existing one is a conflict)",
        )
        a.add_argument(
            "--local",
            action="store_true",
            help="cluster: set it on this node only (when the cluster store cannot be reached)",
        )
        a.add_argument("--api-url", default="http://127.0.0.1:8053", metavar="URL", help=API_URL_HELP)
        a.add_argument("--api-token-file", metavar="PATH", help="the admin token (else $GSLB_API_TOKEN)")
        a.set_defaults(func=cmd_member, action=action)
    nt = sub.add_parser(
        "notify", help="send NOTIFY for ZONE to its secondaries now (transfers: notify), through the API"
    )
    nt.add_argument("zone")
    nt.add_argument("--api-url", default="http://127.0.0.1:8053", metavar="URL", help=API_URL_HELP)
    nt.add_argument("--api-token-file", metavar="PATH", help="the admin token (else $GSLB_API_TOKEN)")
    nt.set_defaults(func=cmd_notify)

    pu = sub.add_parser(
        "push", help="send zone files, whole, to a running server (the zone API: PUT /v1/zones/ZONE)"
    )
    pu.add_argument("files", nargs="+", metavar="FILE")
    pu.add_argument("--api-url", default="http://127.0.0.1:8053", metavar="URL", help=API_URL_HELP)
    pu.add_argument("--api-token-file", metavar="PATH", help="the admin token (else $GSLB_API_TOKEN)")
    pu.set_defaults(func=cmd_push)

    d = sub.add_parser("dnssec", help="DNSSEC keys: make a zone's signing key, print its DS")
    dsub = d.add_subparsers(dest="dnssec_command", required=True, parser_class=_Parser)
    kg = dsub.add_parser("keygen", help="write a new Combined Signing Key (PEM, mode 0600) for ZONE")
    kg.add_argument("zone")
    kg.add_argument("--out", required=True, metavar="PATH", help="the key file (never overwritten)")
    kg.add_argument("--algorithm", choices=["ecdsa-p256", "ed25519"], default="ecdsa-p256")
    kg.set_defaults(func=cmd_dnssec_keygen)
    dsc = dsub.add_parser("ds", help="print the DS record (SHA-256) of ZONE's key, for the registrar")
    dsc.add_argument("zone")
    dsc.add_argument("--key", required=True, metavar="PATH", help="the zone's key file")
    dsc.set_defaults(func=cmd_dnssec_ds)

    im = sub.add_parser("import", help="other servers' zone data as a gslb zone file")
    isub = im.add_subparsers(dest="import_command", required=True, parser_class=_Parser)
    ib = isub.add_parser("bind", help="a BIND master file ($ORIGIN, $TTL, $INCLUDE, $GENERATE) as zone YAML")
    ib.add_argument("file")
    ib.add_argument("--zone", required=True, help="the zone's name (the file's origin)")
    ib.add_argument("-o", "--out", metavar="OUT.yaml", help="write here (default: standard output)")
    ib.add_argument("--skip-unsupported", action="store_true",
                    help="import the rest when the file has types gslb does not serve")  # fmt: skip
    ib.set_defaults(func=cmd_import_bind)
    io = isub.add_parser("octodns", help="an octoDNS zone config (YamlProvider), dynamic records included")
    io.add_argument(
        "source", help="the zone's YAML file, a directory holding <zone>.yaml, or an octoDNS config"
    )
    io.add_argument("--zone", required=True, help="the zone's name")
    io.add_argument("--ns", action="append", metavar="HOST[=ADDR]",
                    help="an apex name server when the source has none (repeatable)")  # fmt: skip
    io.add_argument("-o", "--out", metavar="OUT.yaml", help="write here (default: standard output)")
    io.add_argument("--skip-unsupported", action="store_true",
                    help="import the rest when the source has what gslb cannot serve")  # fmt: skip
    io.set_defaults(func=cmd_import_octodns)

    sc = sub.add_parser("schema", help="print the JSON Schema of the zone format")
    sc.set_defaults(func=cmd_schema)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # `gslb status | head` should end quietly
        import signal

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    from gslb.logs import setup
    from gslb.server.options import load_server_config, resolve

    level, fmt = getattr(args, "log_level", "info"), getattr(args, "log_format", "text")
    if args.command == "serve":
        try:
            file = load_server_config(args.config) if getattr(args, "config", None) else {}
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 1
        try:
            args.options = resolve(vars(args), file)
        except ValueError as e:
            print(f"gslb serve: {e}", file=sys.stderr)
            return 1
        level, fmt = args.options.log_level, args.options.log_format
    setup(getattr(logging, level.upper()), fmt)
    try:
        return int(args.func(args))
    except OSError as e:  # an unreadable file, a socket that cannot be had: one line, no traceback
        print(f"gslb {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
