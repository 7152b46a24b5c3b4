"""``checks:``: named, reusable health checks."""

from __future__ import annotations

import re

from gslb.zones.load.ctx import _Ctx, _fmt_secs, _join, _kind, _opt
from gslb.zones.model import (
    Check,
    StatusRange,
)
from gslb.zones.yamlsrc import Located

_CHECK_KEYS = (
    "type", "port", "path", "host", "method", "headers", "expect",
    "tls_verify", "ca_file", "interval", "timeout", "fall", "rise", "send", "load", "quorum",
)  # fmt: skip

CHECK_TYPES = ("tcp", "http", "https")


def _checks(ctx: _Ctx, loc: Located | None) -> dict[str, tuple[Check, Located]]:
    out: dict[str, tuple[Check, Located]] = {}
    if loc is None:
        return out
    if not isinstance(loc.value, dict):
        ctx.err(loc, "checks", f"expected a mapping of check name -> check, got {_kind(loc)}")
        return out
    for name, cl in loc.value.items():
        c = _check(ctx, name, cl)
        if c is not None:
            out[name] = (c, cl)
    return out


def _check(ctx: _Ctx, name: str, loc: Located) -> Check | None:
    key = f"checks.{name}"
    m = ctx.mapping(loc, key, ("type",), tuple(k for k in _CHECK_KEYS if k != "type"))
    if m is None:
        return None
    before = len(ctx.problems)
    ctype = ctx.str_(m["type"], f"{key}.type") if "type" in m else None
    if ctype is not None and ctype not in CHECK_TYPES:
        ctx.err(m["type"], f"{key}.type", f"must be one of {', '.join(CHECK_TYPES)}, got {ctype!r}")
        ctype = None
    default_port = {"http": 80, "https": 443}.get(ctype or "")
    if "port" in m:
        port = ctx.int_(m["port"], f"{key}.port", 1, 65535)
    elif default_port is None and ctype == "tcp":
        ctx.err(loc, key, "a tcp check needs a 'port'")
        port = None
    else:
        port = default_port
    httpish = ctype in ("http", "https")
    for k in ("path", "host", "method", "headers", "tls_verify", "ca_file"):
        if k in m and ctype == "tcp":
            ctx.err(m[k], f"{key}.{k}", "only for http and https checks", at_key=True)
    for k in ("tls_verify", "ca_file"):
        if k in m and ctype == "http":
            ctx.err(m[k], f"{key}.{k}", "only for https checks", at_key=True)
    if "send" in m and httpish:
        ctx.err(m["send"], f"{key}.send", "only for tcp checks", at_key=True)
    path = _opt(m, "path", lambda v: ctx.str_(v, f"{key}.path"), "/")
    if path is not None and not path.startswith("/"):
        ctx.err(m["path"], f"{key}.path", "must start with '/'")
    host = _opt(m, "host", lambda v: ctx.str_(v, f"{key}.host"), None)
    method = _opt(m, "method", lambda v: ctx.str_(v, f"{key}.method"), "GET")
    if method not in (None, "GET", "HEAD"):
        ctx.err(m["method"], f"{key}.method", f"must be GET or HEAD, got {method!r}")
    headers: list[tuple[str, str]] = []
    if "headers" in m:
        hm = m["headers"]
        if isinstance(hm.value, dict):
            for hk, hv in hm.value.items():
                s = ctx.str_(hv, f"{key}.headers.{hk}")
                if s is not None:
                    headers.append((hk, s))
        else:
            ctx.err(hm, f"{key}.headers", "expected a mapping of header -> value")
    statuses: tuple[StatusRange, ...] = (StatusRange(200, 399),)
    body = regex = None
    if "expect" in m:
        em = ctx.mapping(m["expect"], f"{key}.expect", (), ("status", "body", "body_regex"))
        if em is not None:
            if "status" in em:
                if ctype == "tcp":
                    ctx.err(em["status"], f"{key}.expect.status", "only for http and https checks", True)
                statuses = _statuses(ctx, em["status"], f"{key}.expect.status") or statuses
            body = _opt(em, "body", lambda v: ctx.str_(v, f"{key}.expect.body"), None)
            regex = _opt(em, "body_regex", lambda v: ctx.str_(v, f"{key}.expect.body_regex"), None)
            for k in ("body", "body_regex"):
                if k in em and method == "HEAD":
                    ctx.err(em[k], f"{key}.expect.{k}", "a HEAD response has no body to check", True)
            if regex is not None:
                try:
                    re.compile(regex)
                except re.error as e:
                    ctx.err(em["body_regex"], f"{key}.expect.body_regex", f"bad regular expression: {e}")
    tls_verify = _opt(m, "tls_verify", lambda v: ctx.bool_(v, f"{key}.tls_verify"), True)
    ca_file = _opt(m, "ca_file", lambda v: ctx.str_(v, f"{key}.ca_file"), None)
    interval = _opt(m, "interval", lambda v: ctx.duration(v, f"{key}.interval", 0.1, 3600), 5.0)
    timeout = _opt(m, "timeout", lambda v: ctx.duration(v, f"{key}.timeout", 0.01, 3600), 2.0)
    if interval is not None and timeout is not None and timeout >= interval:
        where = m.get("timeout") or m.get("interval") or loc
        ctx.err(where, f"{key}.timeout", f"must be less than interval ({_fmt_secs(interval)})")
    fall = _opt(m, "fall", lambda v: ctx.int_(v, f"{key}.fall", 1, 100), 3)
    rise = _opt(m, "rise", lambda v: ctx.int_(v, f"{key}.rise", 1, 100), 2)
    send = _opt(m, "send", lambda v: ctx.str_(v, f"{key}.send"), None)
    quorum = _opt(m, "quorum", lambda v: ctx.quorum(v, f"{key}.quorum"), None)
    load_header = load_json = None
    if "load" in m:
        lk = f"{key}.load"
        if ctype == "tcp":
            ctx.err(m["load"], lk, "only for http and https checks", at_key=True)
        lm = ctx.mapping(m["load"], lk, (), ("header", "json"))
        if lm is not None:
            if ("header" in lm) == ("json" in lm):
                ctx.err(m["load"], lk, "give exactly one of 'header' or 'json'")
            load_header = _opt(lm, "header", lambda v: ctx.str_(v, f"{lk}.header"), None)
            load_json = _opt(lm, "json", lambda v: ctx.str_(v, f"{lk}.json"), None)
            if "json" in lm and method == "HEAD":
                ctx.err(lm["json"], f"{lk}.json", "a HEAD response has no body to read", True)
    if len(ctx.problems) > before or ctype is None or port is None:
        return None
    assert interval is not None and timeout is not None and fall is not None and rise is not None
    return Check(
        name=name,
        type=ctype,  # type: ignore[arg-type]
        port=port,
        interval=interval,
        timeout=timeout,
        fall=fall,
        rise=rise,
        path=path or "/",
        host=host,
        method=method,  # type: ignore[arg-type]
        headers=tuple(headers),
        expect_status=statuses,
        expect_body=body,
        expect_body_regex=regex,
        tls_verify=bool(tls_verify),
        ca_file=ca_file,
        send=send.encode() if send is not None else None,
        load_header=load_header,
        load_json=load_json,
        quorum=quorum,
    )


def _statuses(ctx: _Ctx, loc: Located, key: str) -> tuple[StatusRange, ...] | None:
    items = loc.value if isinstance(loc.value, list) else [loc]
    out = []
    for i, it in enumerate(items):
        k = _join(key, i) if isinstance(loc.value, list) else key
        v = it.value
        if isinstance(v, int) and not isinstance(v, bool):
            lo = hi = v
        elif isinstance(v, str) and (m := re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?", v)):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        else:
            ctx.err(it, k, f'expected a status like 200, "200-399" or a list of them, got {v!r}')
            return None
        if not 100 <= lo <= hi <= 599:
            ctx.err(it, k, f"status range must lie within 100..599 with low <= high, got {v!r}")
            return None
        out.append(StatusRange(lo, hi))
    return tuple(out) if out else None
