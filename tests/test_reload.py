"""Zone edits take effect without a restart; broken edits never replace good zones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.conftest import ROOT, GslbProcess

ZONE = """zone: r.test.
nameservers: {{ns1.r.test.: [192.0.2.1]}}
records:
  www: [{{type: A, value: {addr}}}]
"""


def write(path: Path, text: str) -> None:
    """Replace a file atomically (as editors and config management do)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def a_of(srv: GslbProcess, name: str = "www.r.test.") -> list[str]:
    r = srv.query(name, "A")
    return [rd.to_text() for rr in r.answer for rd in rr]


def serial(srv: GslbProcess) -> int:
    return int(srv.query("r.test.", "SOA").answer[0][0].serial)


def wait_for(fn: object, want: object, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if fn() == want:  # type: ignore[operator]
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"still {fn()!r}, wanted {want!r}")  # type: ignore[operator]


def test_file_change_noticed_without_restart(tmp_path: Path, server_factory: object) -> None:
    z = tmp_path / "r.test.yaml"
    z.write_text(ZONE.format(addr="192.0.2.10"))
    srv = server_factory(z)  # type: ignore[operator]
    zf = srv.zones_dir / "r.test.yaml"
    assert a_of(srv) == ["192.0.2.10"]
    s0 = serial(srv)
    time.sleep(1.1)  # a new mtime second, as in real edits
    write(zf, ZONE.format(addr="192.0.2.20"))
    took = wait_for(lambda: a_of(srv), ["192.0.2.20"], timeout=5)
    assert took < 2.5
    assert serial(srv) > s0  # the automatic serial increases with the content


def test_sighup_reloads_at_once(tmp_path: Path, server_factory: object) -> None:
    z = tmp_path / "r.test.yaml"
    z.write_text(ZONE.format(addr="192.0.2.10"))
    srv = server_factory(z, ["--watch-interval", "0"])  # type: ignore[operator]
    zf = srv.zones_dir / "r.test.yaml"
    write(zf, ZONE.format(addr="192.0.2.30"))
    time.sleep(1.5)
    assert a_of(srv) == ["192.0.2.10"]  # no polling: nothing changes by itself
    srv.signal(signal.SIGHUP)
    wait_for(lambda: a_of(srv), ["192.0.2.30"], timeout=3)


def test_broken_edit_keeps_last_good_zone(tmp_path: Path, server_factory: object) -> None:
    z = tmp_path / "r.test.yaml"
    z.write_text(ZONE.format(addr="192.0.2.10"))
    srv = server_factory(z, ["--watch-interval", "0"])  # type: ignore[operator]
    zf = srv.zones_dir / "r.test.yaml"
    mark = len(srv.log())
    write(zf, ZONE.format(addr="192.0.2.999").replace("records:", "records:\n  bad: [{type: A, valu: 1}]"))
    srv.signal(signal.SIGHUP)
    srv.wait_log(r"r\.test\.yaml:4:19: records\.bad\[0\]\.valu: unknown key", start=mark)
    srv.wait_log(r"r\.test\.yaml:5:26: records\.www\[0\]\.value: bad A value '192\.0\.2\.999'", start=mark)
    srv.wait_log(r"still serving its last good version", start=mark)
    assert a_of(srv) == ["192.0.2.10"]
    # fixing the file brings the edit in
    write(zf, ZONE.format(addr="192.0.2.40"))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: a_of(srv), ["192.0.2.40"], timeout=3)


def test_zone_files_added_and_removed(tmp_path: Path, server_factory: object) -> None:
    z = tmp_path / "r.test.yaml"
    z.write_text(ZONE.format(addr="192.0.2.10"))
    srv = server_factory(z, ["--watch-interval", "0.2"])  # type: ignore[operator]
    other = srv.zones_dir / "o.test.yaml"
    write(other, ZONE.format(addr="192.0.2.50").replace("r.test.", "o.test."))
    wait_for(lambda: a_of(srv, "www.o.test."), ["192.0.2.50"])
    other.unlink()
    wait_for(lambda: srv.query("www.o.test.", "A").rcode(), dns.rcode.REFUSED)
    assert a_of(srv) == ["192.0.2.10"]


def test_no_query_lost_during_reloads(tmp_path: Path, server_factory: object) -> None:
    z = tmp_path / "r.test.yaml"
    z.write_text(ZONE.format(addr="192.0.2.10"))
    srv = server_factory(z, ["--watch-interval", "0"])  # type: ignore[operator]
    zf = srv.zones_dir / "r.test.yaml"
    stop = threading.Event()
    sent = lost = 0
    answers: set[str] = set()

    def client() -> None:
        nonlocal sent, lost
        while not stop.is_set():
            q = dns.message.make_query("www.r.test.", "A")
            sent += 1
            try:
                r = dns.query.udp(q, srv.host, port=srv.port, timeout=1.0)
                answers.update(rd.to_text() for rr in r.answer for rd in rr)
            except dns.exception.Timeout:
                lost += 1

    t = threading.Thread(target=client)
    t.start()
    try:
        for i in range(8):
            write(zf, ZONE.format(addr=f"192.0.2.{60 + i}"))
            srv.signal(signal.SIGHUP)
            time.sleep(0.25)
    finally:
        stop.set()
        t.join()
    assert sent > 100 and lost == 0, (sent, lost)
    assert "192.0.2.67" in answers and len(answers) >= 3


def test_startup_with_broken_zone_fails_loudly(tmp_path: Path) -> None:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "r.test.yaml").write_text(ZONE.format(addr="nope"))
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "serve", "--zones", str(zdir), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1
    assert f"{zdir}/r.test.yaml:4:26: records.www[0].value: bad A value 'nope'" in out.stderr


def test_broken_edit_reported_once(tmp_path: Path, server_factory: object) -> None:
    z = tmp_path / "r.test.yaml"
    z.write_text(ZONE.format(addr="192.0.2.10"))
    srv = server_factory(z, ["--watch-interval", "0.2"])  # type: ignore[operator]
    zf = srv.zones_dir / "r.test.yaml"
    mark = len(srv.log())
    write(zf, ZONE.format(addr="nope"))
    time.sleep(1.5)  # seven polls of an unchanged broken file
    assert srv.log()[mark:].count("bad A value 'nope'") == 1
    assert a_of(srv) == ["192.0.2.10"]
    write(zf, ZONE.format(addr="192.0.2.11"))
    wait_for(lambda: a_of(srv), ["192.0.2.11"])


def test_answering_goes_on_while_a_large_zone_reloads(tmp_path: Path, server_factory: object) -> None:
    """A reload reads and compiles beside the event loop: answers keep coming while it runs."""
    big = tmp_path / "big.test.yaml"

    def zone(marker: str) -> str:
        lines = ["zone: big.test.", "nameservers: {ns1.big.test.: [192.0.2.1]}", "records:",
                 f"  marker: [{{type: TXT, value: '\"{marker}\"'}}]"]  # fmt: skip
        lines += [
            f"  h{i}: [{{type: A, value: 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}}}]"
            for i in range(40_000)
        ]
        return "\n".join(lines) + "\n"

    big.write_text(zone("v1"))
    srv = server_factory(big, ["--watch-interval", "0"])  # type: ignore[operator]
    stop = threading.Event()
    replies: list[float] = []

    def client() -> None:
        while not stop.is_set():
            q = dns.message.make_query("h7.big.test.", "A")
            try:
                dns.query.udp(q, srv.host, port=srv.port, timeout=2.0)
                replies.append(time.monotonic())
            except dns.exception.Timeout:
                pass
            time.sleep(0.005)

    t = threading.Thread(target=client)
    t.start()
    try:
        time.sleep(0.3)
        write(srv.zones_dir / "big.test.yaml", zone("v2"))
        mark = len(srv.log())
        t_hup = time.monotonic()
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"generation \d+", timeout=60, start=mark)
        t_done = time.monotonic()
    finally:
        stop.set()
        t.join()
    during = [r for r in replies if t_hup + 0.05 < r < t_done - 0.05]
    took = t_done - t_hup
    assert took > 0.3, f"the reload took {took:.2f}s: too small a zone to show anything"
    # the client asks every ~5 ms; a reload that blocked the loop would let none through
    assert len(during) >= took * 20, f"{len(during)} answers during a {took:.2f}s reload"
    assert srv.query("marker.big.test.", "TXT").answer[0][0].to_text() == '"v2"'
