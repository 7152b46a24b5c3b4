"""JSON Schema (draft 2020-12) of the zone format, for editors (``gslb schema``).

It describes the shape; ``gslb check`` is the authority (it also checks
cross-references, name syntax, rdata and positions). tests/test_docs.py
keeps the two in step: every example zone validates against this schema,
and every key the loader accepts appears here.
"""

from __future__ import annotations

from typing import Any

from gslb.answer.policies import REGISTRY as POLICIES

_TTL: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 2147483647}
_DURATION: dict[str, Any] = {
    "oneOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
    ]
}
_RAMP: dict[str, Any] = {
    "description": "slow start: a recovered member's weight ramps up over this long (0: at once)",
    "oneOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
    ],
}
_STATUS_ONE: dict[str, Any] = {
    "oneOf": [
        {"type": "integer", "minimum": 100, "maximum": 599},
        {"type": "string", "pattern": r"^\s*\d{3}\s*(-\s*\d{3}\s*)?$"},
    ]
}
_IP: dict[str, Any] = {"type": "string", "description": "IPv4 or IPv6 address"}

_QUORUM: dict[str, Any] = {
    "description": "cluster mode: down votes that take a member out (majority, any, all or N%)",
    "anyOf": [{"enum": ["majority", "any", "all"]}, {"type": "string", "pattern": r"^\d{1,3}(\.\d+)?\s*%$"}],
}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), desc: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    if desc:
        out["description"] = desc
    return out


CHECK = _obj(
    {
        "type": {"enum": ["tcp", "http", "https"]},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "path": {"type": "string", "pattern": "^/"},
        "host": {"type": "string", "description": "Host header and TLS SNI"},
        "method": {"enum": ["GET", "HEAD"]},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "expect": _obj(
            {
                "status": {"oneOf": [_STATUS_ONE, {"type": "array", "items": _STATUS_ONE, "minItems": 1}]},
                "body": {"type": "string"},
                "body_regex": {"type": "string"},
            }
        ),
        "tls_verify": {"type": "boolean"},
        "ca_file": {"type": "string"},
        "interval": _DURATION,
        "timeout": _DURATION,
        "fall": {"type": "integer", "minimum": 1, "maximum": 100},
        "rise": {"type": "integer", "minimum": 1, "maximum": 100},
        "quorum": _QUORUM,
        "send": {"type": "string"},
        "load": _obj({"header": {"type": "string"}, "json": {"type": "string"}}),
    },
    ("type",),
    "a named health check, used by pools",
)

MEMBER = _obj(
    {
        "address": _IP,
        "target": {
            "type": "string",
            "description": "a host name instead of an address: the member of a CNAME pool (types: [CNAME])",
        },
        "alias": {
            "type": "string",
            "description": "a host name outside the zone whose current A/AAAA addresses answer for "
            "the member (flattening; gslb resolves it)",
        },
        "weight": {"type": "integer", "minimum": 0, "maximum": 100},
        "name": {"type": "string"},
        "status": {"enum": ["up", "down", "obey"]},
        "check_address": _IP,
        "check_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "slow_start": _RAMP,
    },
)
MEMBER["oneOf"] = [{"required": ["address"]}, {"required": ["target"]}, {"required": ["alias"]}]

POOL = _obj(
    {
        "check": {
            "description": "the check probing the members, or a calculated one: {all: [...]}, "
            "{any: [...]} or {at_least: N, of: [...]}",
            "oneOf": [
                {"type": "string"},
                _obj({"all": {"type": "array", "items": {"type": "string"}, "minItems": 2}}, ("all",)),
                _obj({"any": {"type": "array", "items": {"type": "string"}, "minItems": 2}}, ("any",)),
                _obj(
                    {
                        "at_least": {"type": "integer", "minimum": 1},
                        "of": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                    },
                    ("at_least", "of"),
                ),
            ],
        },
        "requires": {
            "type": "array",
            "items": {"type": "string"},
            "description": "pools that must be up for this one to count as up",
        },
        "min_healthy": {
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
            ]
        },
        "location": _obj(
            {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
            },
            ("lat", "lon"),
        ),
        "members": {"type": "array", "items": MEMBER, "minItems": 1},
        "slow_start": _RAMP,
    },
    ("members",),
)

STATIC = _obj(
    {
        "type": {"type": "string"},
        "value": {"type": "string"},
        "values": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "ttl": _TTL,
    },
    ("type",),
    "a static record in presentation format; exactly one of value / values",
)

RULE = _obj(
    {
        "pools": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "subnets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "geos": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "pattern": r"^[A-Za-z0-9]{1,3}(-[A-Za-z0-9]{1,3}){0,2}$"},
        },
        "asns": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^(?i:AS)[0-9]+$"}]
            },
        },
    },
    ("pools",),
)

BALANCED = _obj(
    {
        "types": {"type": "array", "items": {"enum": ["A", "AAAA", "CNAME"]}, "minItems": 1},
        "ttl": _TTL,
        "answer": _obj(
            {
                "select": {"enum": list(POLICIES)},
                "count": {"type": "integer", "minimum": 1, "maximum": 64},
                # each policy's own keys, from its declaration
                **{
                    p.key: _obj(
                        {f: {"type": "integer", "minimum": lo, "maximum": hi} for f, lo, hi, _ in p.fields}
                    )
                    for pol in POLICIES.values()
                    for p in pol.params
                },
            }
        ),
        "ecs": {"type": "boolean"},
        "rules": {"type": "array", "items": RULE, "minItems": 1},
        "when_all_down": {"enum": ["serve_all", "nodata", "servfail", "refuse"]},
    },
    ("types", "rules"),
    "a balanced name answering from healthy pool members",
)

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "gslb zone file",
    **_obj(
        {
            "zone": {"type": "string", "pattern": r"\.$"},
            "ttl": _TTL,
            "ns_ttl": _TTL,
            "ecs": {"type": "boolean"},
            "quorum": _QUORUM,
            "dnssec": _obj(
                {
                    "key": {"type": "string", "description": "PEM file of the zone's signing key"},
                    "keys": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "maxItems": 2,
                        "description": "two keys during a rollover: both published, both sign",
                    },
                },
                (),
                "sign answers to DO=1 queries (docs/dnssec.md)",
            ),
            "soa": _obj(
                {
                    "mname": {"type": "string"},
                    "rname": {"type": "string"},
                    "serial": {"type": "integer", "minimum": 1, "maximum": 4294967295},
                    "refresh": _TTL,
                    "retry": _TTL,
                    "expire": _TTL,
                    "minimum": _TTL,
                    "ttl": _TTL,
                }
            ),
            "nameservers": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"oneOf": [{"type": "null"}, {"type": "array", "items": _IP}]},
            },
            "checks": {"type": "object", "additionalProperties": CHECK},
            "pools": {"type": "object", "additionalProperties": POOL},
            "records": {
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"oneOf": [BALANCED, STATIC]},
                },
            },
        },
        ("zone", "nameservers"),
    ),
}
