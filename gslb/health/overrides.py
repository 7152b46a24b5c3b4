"""Runtime member overrides set through the admin API: drain, force down, force up.

An override beats the health checks (but not a ``status:`` fixed in the zone
file), may expire (maintenance windows), is logged, and is persisted to
``STATE_DIR/overrides.json`` so that a restart keeps it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from gslb.health.view import MemberKey

log = logging.getLogger("gslb.admin")

FILE = "overrides.json"
Action = Literal["drain", "down", "up"]
ACTIONS: tuple[Action, ...] = ("drain", "down", "up")


@dataclass(frozen=True, slots=True)
class Override:
    zone: str
    pool: str
    member: str  # address
    action: Action
    set_at: float
    expires: float | None
    by: str

    @property
    def key(self) -> MemberKey:
        return (self.zone, self.pool, self.member)


class Overrides:
    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self.items: dict[MemberKey, Override] = {}
        self.write_errors = 0
        self._load()

    def _load(self) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / FILE
        try:
            data = json.loads(path.read_text())
            for d in data["overrides"]:
                expires = None if d["expires"] is None else float(d["expires"])
                o = Override(str(d["zone"]), str(d["pool"]), str(d["member"]), d["action"],
                             float(d["set_at"]), expires, str(d["by"]))  # fmt: skip
                if o.action in ACTIONS:
                    self.items[o.key] = o
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("ignoring unreadable overrides file %s: %s", path, e)

    def save(self) -> None:
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_dir / (FILE + ".tmp")
            tmp.write_text(
                json.dumps({"version": 1, "overrides": [asdict(o) for o in self.items.values()]}, indent=1)
            )
            os.replace(tmp, self.state_dir / FILE)
        except OSError as e:
            self.write_errors += 1
            log.error("cannot persist overrides to %s: %s", self.state_dir, e)

    def active(self) -> dict[MemberKey, str]:
        return {k: o.action for k, o in self.items.items()}

    def set(self, o: Override) -> None:
        self.items[o.key] = o
        until = f" until {o.expires:.0f} (Unix time)" if o.expires else ""
        log.warning("admin: %s %s/%s/%s%s (by %s)", o.action, o.zone, o.pool, o.member, until, o.by)
        self.save()

    def clear(self, key: MemberKey, by: str) -> bool:
        if self.items.pop(key, None) is None:
            return False
        log.warning("admin: clear %s/%s/%s (by %s)", *key, by)
        self.save()
        return True

    def expire(self, now: float) -> bool:
        gone = [k for k, o in self.items.items() if o.expires is not None and o.expires <= now]
        for k in gone:
            o = self.items.pop(k)
            log.warning("admin: %s of %s/%s/%s expired", o.action, *k)
        if gone:
            self.save()
        return bool(gone)
