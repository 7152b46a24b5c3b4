"""The C loop under AddressSanitizer and UndefinedBehaviorSanitizer: a short run of
tests/sanitized.py (resolver traffic and mutated packets through the sanitized build,
against the pure Python path byte for byte), and canaries that show each sanitizer
stops a bad write in this very setup (so a clean run means something)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import sanitized
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None or sanitized.runtime() is None:
        pytest.fail("gcc and its sanitizer runtime (libasan) are needed: .ci/system-deps installs them")
    return sanitized.build(tmp_path_factory.mktemp("asan"))


def child(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tests.sanitized", *args]
    return subprocess.run(
        cmd, env=sanitized.child_env(), cwd=ROOT, capture_output=True, text=True, timeout=280
    )


@pytest.mark.parametrize(
    ("name", "report"), [("address", "heap-buffer-overflow"), ("undefined", "signed integer overflow")]
)
def test_the_sanitizers_stop_a_bad_write(build: Path, name: str, report: str) -> None:
    r = child("--canary", str(build.parent / f"canary-{name}.so"))
    assert r.returncode in (86, 87) and report in r.stderr, (r.returncode, r.stderr[-2000:])


def test_the_c_loop_is_clean_under_the_sanitizers(build: Path) -> None:
    r = child("--so", str(build), "--packets", "50000", "--seed", "3")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-5000:]
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("sanitized C loop: 50000 packets") and line.endswith(" 0 errors, 0 differences"), (
        line
    )
    fast = int(line.split(", ")[1].split()[0])
    # every datagram is parsed and its cookie checked in C; the answers from the cache
    # (most mutated packets miss it, and go on to Python) are a share of them
    assert fast > 4000, line
