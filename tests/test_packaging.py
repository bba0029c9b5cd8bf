"""The installable project: where the assets are found, the cam-studio command, no path hacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from camcore import assets
from dashboard import cli

ROOT = Path(__file__).resolve().parent.parent


def test_assets_come_from_the_override_then_the_wheel_then_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.delenv(assets.ASSETS_ENV, raising=False)
    monkeypatch.setattr(assets, "_PACKAGED", tmp_path / "no_wheel_here")
    assert assets.assets_dir() == ROOT / "assets"  # a checkout: the source of truth
    packaged = tmp_path / "_bundled"
    packaged.mkdir()
    monkeypatch.setattr(assets, "_PACKAGED", packaged)
    assert assets.assets_dir() == packaged  # an installed wheel carries its copy
    monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path / "mine"))
    assert assets.assets_dir() == (tmp_path / "mine").resolve()


def test_a_checkout_never_holds_the_wheel_copy():
    # the copy exists only inside a built wheel; here it would shadow assets/
    assert not (ROOT / "camcore" / "_bundled").exists()


def test_run_adds_the_default_address_and_port_only_when_missing():
    command = cli.streamlit_command([])
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == ROOT / "dashboard" / "app.py" and Path(command[4]).is_file()
    assert command[5:] == ["--server.address", "127.0.0.1", "--server.port", "8501"]
    given = cli.streamlit_command(["--server.port=8600", "--server.address", "0.0.0.0", "--theme.base", "dark"])
    assert given[5:] == ["--server.port=8600", "--server.address", "0.0.0.0", "--theme.base", "dark"]
    only_port = cli.streamlit_command(["--server.port", "9000"])
    assert only_port[5:] == ["--server.address", "127.0.0.1", "--server.port", "9000"]


def test_the_command_dispatches(capsys, monkeypatch):
    assert cli.main([]) == 2 and "usage: cam-studio" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert cli.main(["train"]) == 2 and "unknown command 'train'" in capsys.readouterr().err
    ran = []
    monkeypatch.setattr(cli.runpy, "run_module", lambda module, **kw: ran.append((module, list(sys.argv[1:]), kw)))
    assert cli.main(["evaluate", "--synthetic", "3"]) == 0
    assert ran == [("camcore.evaluate", ["--synthetic", "3"], {"run_name": "__main__", "alter_sys": True})]

    def exits(module, **kw):
        raise SystemExit(3)

    monkeypatch.setattr(cli.runpy, "run_module", exits)
    assert cli.main(["bench"]) == 3
    served = []
    monkeypatch.setattr(cli, "serve", lambda args: served.append(list(args)) or 0)
    assert cli.main(["run", "--server.port", "8600"]) == 0
    command = cli.streamlit_command(["--server.port", "8600"])
    assert served == [command[4:]]


def test_serve_warms_the_default_page_then_runs_streamlit_in_process(monkeypatch):
    from streamlit.web import cli as streamlit_cli

    from dashboard import warmup

    calls = []
    monkeypatch.setattr(warmup, "start", lambda: calls.append("warm-up"))
    monkeypatch.setattr(streamlit_cli, "main", lambda: calls.append(list(sys.argv)) or None)
    monkeypatch.setattr(sys, "argv", ["cam-studio"])
    assert cli.serve(["app.py", "--server.port", "8600"]) == 0
    assert calls == ["warm-up", ["streamlit", "run", "app.py", "--server.port", "8600"]]


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "cam-studio"
    if not script.is_file():
        pytest.skip("the project is not installed in this environment (pip install -e .)")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "cam-studio {run,evaluate,bench" in done.stdout


def test_no_module_edits_the_import_path():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("camcore", "dashboard")
        for path in (ROOT / folder).rglob("*.py")
        if "sys.path" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_streamlit_settings_ship_with_the_app():
    # Streamlit reads <script folder>/.streamlit/config.toml whatever the working directory
    config = ROOT / "dashboard" / ".streamlit" / "config.toml"
    assert "maxUploadSize" in config.read_text()
