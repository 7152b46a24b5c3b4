"""The server configuration file: applied, overridden by flags, and validated with positions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gslb.server.options import FILE_ONLY, OPTIONS, ServeOptions, load_server_config, resolve
from gslb.zones.errors import ConfigError
from tests.conftest import ROOT, GslbProcess


def test_file_applies_and_flags_win(tmp_path: Path) -> None:
    zdir = tmp_path / "z"
    zdir.mkdir()
    shutil.copy(ROOT / "tests" / "conformance" / "conf.test.yaml", zdir)
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text(f"zones: {zdir}\nlisten: ['127.0.0.1:0']\nstate_dir: {tmp_path / 'st'}\n"
                   "query_log_sample: 1\nlog_format: json\napi: null\n")  # fmt: skip
    log = tmp_path / "gslb.log"
    # GslbProcess puts --zones, --listen, --state-dir, --api and --log-format text on the
    # command line: those win over the file; query_log_sample comes from the file alone
    other = tmp_path / "other"
    shutil.copytree(ROOT / "tests" / "data" / "zones", other)
    srv = GslbProcess(other, log, ["--config", str(cfg)])
    try:
        assert srv.query("www.parent.test.", "A").answer  # the command line's zones, not the file's
        assert not srv.query("static.conf.test.", "A").answer
        srv.wait_log(r"query client=127\.0\.0\.1 name=www\.parent\.test\. type=A rcode=NOERROR", 3)
        text = log.read_text()
        assert not text.lstrip().startswith("{")  # --log-format text beats log_format: json
        assert "HTTP API on" in text  # --api beats api: null
    finally:
        srv.stop()


def test_resolve_precedence() -> None:
    got = resolve({"tcp_max": 3}, {"tcp_max": 5, "tcp_idle": 2.0})
    assert got.tcp_max == 3 and got.tcp_idle == 2.0 and got.probe_concurrency == 512
    assert got.listen == (("127.0.0.1", 5353),) and got.api == ("127.0.0.1", 8053)
    assert got == ServeOptions(tcp_max=3, tcp_idle=2.0)


def test_every_option_is_a_flag_and_a_file_key() -> None:
    """One definition per option: the flags and the file keys come from ServeOptions."""
    from gslb.cli import build_parser

    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr,index]
    flags = {a.dest for a in serve._actions if a.option_strings} - {"help", "config"}
    # log_level and log_format come before the command; lists of mappings are file-only
    assert flags == set(OPTIONS) - {"log_level", "log_format", *FILE_ONLY}
    args = parser.parse_args(["--log-level", "debug", "serve", "--tcp-max", "7", "--axfr-allow", "10.0.0.0/8",
                              "--axfr-allow", "192.0.2.0/24", "--no-api", "--listen", "[::1]:0"])  # fmt: skip
    opts = resolve(vars(args), {})
    assert (opts.tcp_max, opts.axfr_allow, opts.api, opts.listen, opts.log_level) == (
        7, ("10.0.0.0/8", "192.0.2.0/24"), None, (("::1", 0),), "debug",
    )  # fmt: skip


def test_positioned_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text("zones: z\ntcp_max: many\nlisen: x\nlisten: [localhost]\nlog_format: xml\napi: 5\n")
    with pytest.raises(ConfigError) as ei:
        load_server_config(cfg)
    got = [str(p) for p in ei.value.problems]
    assert got == [
        f"{cfg}:2:10: tcp_max: expected a whole number >= 0, got 'many'",
        f"{cfg}:3:1: lisen: unknown key (did you mean 'listen'?)",
        f"{cfg}:4:9: listen: expected ADDR:PORT, e.g. 127.0.0.1:5353 or [::1]:5353, got 'localhost'",
        f"{cfg}:5:13: log_format: must be one of text, json, got 'xml'",
        f"{cfg}:6:6: api: expected ADDR:PORT as a string, got 5",
    ]
    out = subprocess.run([sys.executable, "-m", "gslb", "serve", "--config", str(cfg)], capture_output=True,
                         text=True, cwd=ROOT, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 1 and f"{cfg}:3:1: lisen: unknown key" in out.stderr


def test_documented_example_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    f = tmp_path / "gslb.yaml"
    f.write_text(block.group(1))
    assert load_server_config(f)["listen"] == (("0.0.0.0", 53), ("::", 53))
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))
    assert documented == set(OPTIONS)
