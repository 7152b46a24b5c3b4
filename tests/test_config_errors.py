"""Every zone problem is reported at once, each with file:line:col and its key path.

Named bad fixture files live in tests/data/bad/; each row lists exactly the
problems its file must produce (``line:col: key: message`` prefixes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gslb.zones.errors import ConfigError
from gslb.zones.load import load_zone

BAD = Path(__file__).resolve().parent / "data" / "bad"

EXPECTED: dict[str, list[str]] = {
    "unknown_key.yaml": ["3:1: recrods: unknown key (did you mean 'records'?)"],
    "duplicate_key.yaml": ["6:3: www: duplicate key (first at line 4)"],
    "bad_ttl.yaml": [
        "5:41: records.www[0].ttl: must be 0..2147483647, got -1",
        "9:12: records.mail[0].ttl: must be 0..2147483647, got 3000000000",
    ],
    "bad_values.yaml": [
        "6:19: pools.p.members[0].address: not an IPv4 or IPv6 address: 'nope'",
        "7:39: pools.p.members[1].weight: must be 0..100, got 101",
        "10:24: records.www[0].value: bad A value '300.1.1.1'",
        "11:25: records.www[1].value: bad MX value 'ten mail'",
    ],
    "pools_checks.yaml": [
        "4:44: checks.web.timeout: must be less than interval (2s)",
        "5:3: checks.spare: check is not used by any pool",
        "10:3: pools.unused: pool is not used by any record",
        "11:12: pools.unused.check: undefined check 'nosuch'",
        "17:24: records.www[0].rules[0].pools[1]: undefined pool 'us'",
    ],
    "structure.yaml": [
        "7:7: records.alias[0]: CNAME beside other data",
        "9:3: records.www.other.example.: name is outside the zone bad.test.",
        "12:14: records.lb[0].types: AAAA is listed but no pool in the rules has an IPv6 member",
        "14:11: records.lb[0].rules[0]: a catch-all rule (only 'pools') must be the last rule",
        "15:11: records.lb[0].rules[1]: the last rule must be a catch-all",
        "18:40: records.ttls[1].ttl: TTL 30 differs from 60 at records.ttls[0]",
    ],
    "yaml_syntax.yaml": ["5:3: YAML syntax: expected ',' or ']'"],
    "cname_pools.yaml": [
        "6:47: pools.mixed.members[1]: members[0] is a target name and this one is not: a pool holds",
        "7:32: pools.badname.members[0].target: not a host name: 'cdn example.net.'",
        "7:62: pools.badname.members[1].target: '192.0.2.12' is an address",
        "7:84: pools.badname.members[2].target: not a host name: '-x.example.net.'",
        "8:20: pools.both.members[0]: a member has one of: an address (address: 192.0.2.10), a host name",
        "13:29: records.www[0].rules[0].pools[1]: pool 'lb' holds addresses: types: [CNAME] answers",
        "16:28: records.img[0].rules[0].pools[1]: pool 'cdn' holds host names (target:)",
        "18:7: records.txt[0]: a balanced CNAME beside other data at the same name (TXT)",
        "23:24: records.every[0].answer.select: a name has one CNAME: select: all cannot",
        "26:7: records.@[0]: a CNAME at the zone apex",
        "29:14: records.two[0].types: CNAME stands alone",
        "30:23: records.two[0].answer.count: a name has one CNAME: count is 1, not 2",
        "35:7: records.back[0]: CNAME loop: hop.bad.test. -> back.bad.test. -> hop.bad.test.",
    ],
}


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_zone(path)
    return [str(p) for p in ei.value.problems]


def test_every_bad_fixture_has_expectations() -> None:
    assert {p.name for p in BAD.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_fixture(name: str) -> None:
    got = problems_of(BAD / name)
    want = EXPECTED[name]
    assert len(got) == len(want), "\n".join(got)
    for g, w in zip(got, want, strict=True):
        assert g.startswith(f"{BAD / name}:{w}"), f"{g!r} does not start with {w!r}"


BASE = "zone: t.test.\nnameservers: {ns1.t.test.: [192.0.2.1]}\n"

# (YAML appended to BASE, expected "line:col: key: message" prefix); lines count from BASE's first
SNIPPETS: list[tuple[str, str]] = [
    ("ttl: 2147483648\n", "3:6: ttl: must be 0..2147483647"),
    (
        "records:\n  www: [{type: A, value: 192.0.2.1, ttl: x}]\n",
        "4:42: records.www[0].ttl: expected an integer",
    ),
    ("records:\n  www: [{type: AAAA, value: 192.0.2.1}]\n", "4:29: records.www[0].value: bad AAAA value"),
    (
        "records:\n  www: [{type: BOGUS, value: x}]\n",
        "4:16: records.www[0].type: unknown record type 'BOGUS'",
    ),
    ("records:\n  www: [{type: SOA, value: x}]\n", "4:16: records.www[0].type: the SOA comes from"),
    (
        "records:\n  '@': [{type: NS, value: ns9.t.test.}]\n",
        "4:16: records.@[0].type: apex NS records come from",
    ),
    ("records:\n  '@': [{type: CNAME, value: x.example.}]\n", "4:9: records.@[0]: CNAME at the zone apex"),
    (
        "records:\n  www: [{type: A, value: 192.0.2.1, values: [192.0.2.2]}]\n",
        "4:9: records.www[0]: give exactly one of 'value' or 'values'",
    ),
    (
        "records:\n  www: [{type: A, values: [192.0.2.1, 192.0.2.1]}]\n",
        "4:39: records.www[0].values[1]: duplicate record A 192.0.2.1",
    ),
    ("records:\n  a.*.x: [{type: A, value: 192.0.2.1}]\n", "4:3: records.a.*.x: '*' is only allowed"),
    (
        "records:\n  sub: [{type: NS, value: ns.sub}, {type: TXT, value: x}]\n",
        "4:36: records.sub[1]: TXT at a delegation point",
    ),
    (
        "records:\n  sec: [{type: DS, value: 1 13 2 00aa}]\n",
        "4:9: records.sec[0]: DS belongs at a delegation point",
    ),
    ("dnssec: {key: a, keys: [b]}\n", "3:9: dnssec: give 'key' (one key) or 'keys' (two, during a rollover)"),
    ("dnssec: {keys: [a, b, c]}\n", "3:16: dnssec.keys: one or two keys (a rollover), got 3"),
    ("dnssec: {key: /nonexistent/k.pem}\n", "3:15: dnssec.key: cannot read DNSSEC key /nonexistent/k.pem"),
    (
        "records:\n  sub: [{type: NS, value: ns.sub}]\n  x.sub: [{type: TXT, value: x}]\n",
        "5:11: records.x.sub[0]: below the delegation sub.t.test.",
    ),
    (
        "records:\n  www: [{types: [A], rules: [{pools: [nope]}]}]\n",
        "4:39: records.www[0].rules[0].pools[0]: undefined pool 'nope' (pools: none defined)",
    ),
    (
        "pools: {p: {members: [{address: 192.0.2.9}]}}\n"
        "records:\n  w: [{types: [MX], rules: [{pools: [p]}]}]\n",
        "5:16: records.w[0].types[0]: balanced records answer A and AAAA, or CNAME, not 'MX'",
    ),
    (
        "pools: {p: {members: [{address: 192.0.2.9}]}}\nrecords:\n"
        "  w: [{types: [A], answer: {select: quickest}, rules: [{pools: [p]}]}]\n",
        "5:37: records.w[0].answer.select: unknown select 'quickest'",
    ),
    (
        "pools: {p: {members: [{address: 192.0.2.9}]}}\nrecords:\n"
        "  w: [{types: [A], when_all_down: panic, rules: [{pools: [p]}]}]\n",
        "5:35: records.w[0].when_all_down: must be one of serve_all, nodata, servfail, refuse",
    ),
    (
        "pools: {p: {members: [{address: 192.0.2.9}]}}\nrecords:\n"
        "  w: [{types: [A], rules: [{subnets: [10.0.0.1/8], pools: [p]}, {pools: [p]}]}]\n",
        "5:39: records.w[0].rules[0].subnets[0]: bad subnet",
    ),
    (
        "pools: {p: {min_healthy: 3, members: [{address: 192.0.2.9}]}}\nrecords:\n"
        "  w: [{types: [A], rules: [{pools: [p]}]}]\n",
        "3:26: pools.p.min_healthy: is 3 but the pool has 1 members",
    ),
    (
        "checks: {c: {type: tcp}}\npools: {p: {check: c, members: [{address: 192.0.2.9}]}}\nrecords:\n"
        "  w: [{types: [A], rules: [{pools: [p]}]}]\n",
        "3:13: checks.c: a tcp check needs a 'port'",
    ),
    (
        "checks: {c: {type: http, expect: {status: '600'}}}\n"
        "pools: {p: {check: c, members: [{address: 192.0.2.9}]}}\n"
        "records:\n  w: [{types: [A], rules: [{pools: [p]}]}]\n",
        "3:43: checks.c.expect.status: status range must lie within 100..599",
    ),
    (
        "checks: {c: {type: http, interval: 5 minutes}}\n"
        "pools: {p: {check: c, members: [{address: 192.0.2.9}]}}\n"
        "records:\n  w: [{types: [A], rules: [{pools: [p]}]}]\n",
        "3:36: checks.c.interval: expected a duration like 5s",
    ),
    (
        "records:\n  www: [{type: TXT, value: no}]\n",
        "4:28: records.www[0].value: expected a string, got False (YAML reads it as a boolean: quote it)",
    ),
]


@pytest.mark.parametrize(
    ("snippet", "want"), SNIPPETS, ids=[w.split(": ")[1] + ":" + w.split(":")[0] for _, w in SNIPPETS]
)
def test_snippet_error(tmp_path: Path, snippet: str, want: str) -> None:
    f = tmp_path / "t.test.yaml"
    f.write_text(BASE + snippet)
    got = problems_of(f)
    assert any(g.startswith(f"{f}:{want}") for g in got), "\n".join(got)


def test_all_problems_reported_at_once() -> None:
    assert len(problems_of(BAD / "structure.yaml")) == 6


@pytest.mark.parametrize("zone", ["zones", "tests/data/zones", "tests/conformance"])
def test_check_cli_accepts_good_zones(zone: str) -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "check", zone], capture_output=True, text=True, cwd=root, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert ": ok (" in out.stdout


def test_check_cli_reports_bad_zones() -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "check", "tests/data/bad"],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert len(lines) == sum(len(v) for v in EXPECTED.values())
    assert "tests/data/bad/bad_ttl.yaml:5:41: records.www[0].ttl: must be 0..2147483647, got -1" in lines


LOAD_SNIPPETS = [
    (
        "checks: {c: {type: tcp, port: 1, load: {header: X-Load}}}\n",
        "3:34: checks.c.load: only for http and https checks",
    ),
    (
        "checks: {c: {type: http, load: {header: X, json: y}}}\n",
        "3:32: checks.c.load: give exactly one of 'header' or 'json'",
    ),
]


@pytest.mark.parametrize(("snippet", "want"), LOAD_SNIPPETS)
def test_load_source_errors(tmp_path: Path, snippet: str, want: str) -> None:
    f = tmp_path / "t.test.yaml"
    tail = (
        "pools: {p: {check: c, members: [{address: 192.0.2.9}]}}\n"
        "records:\n  w: [{types: [A], rules: [{pools: [p]}]}]\n"
    )
    f.write_text(BASE + snippet + tail)
    got = problems_of(f)
    assert any(g.startswith(f"{f}:{want}") for g in got), "\n".join(got)
