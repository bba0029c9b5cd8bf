"""The ``cam-studio`` command (installed with the package).

    cam-studio run [--ray-address ADDR] [--server.port 8600 ...]        # the dashboard
    cam-studio evaluate [...]                                            # = python -m camcore.evaluate
    cam-studio bench [...]                                               # = python -m camcore.bench
    cam-studio localize --settings s.json IMAGES... --out regions.json  # = python -m camcore.localize
    cam-studio report RESULTS.parquet --out report.html                 # = python -m camcore.report

``run`` is ``streamlit run`` on the installed ``dashboard/app.py``, in this process,
on 127.0.0.1:8501 unless told otherwise (any other streamlit option passes through),
with the default page warmed in the background while the server starts; ``--ray-address``
sets ``RAY_ADDRESS`` for the server, whose per-channel passes then run on that Ray cluster
(``camcore.backends.ray``). ``evaluate``, ``bench``, ``localize`` and ``report`` run those
modules exactly as ``python -m`` does.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8501
RAY_FLAG = "--ray-address"
MODULES = {"evaluate": "camcore.evaluate", "bench": "camcore.bench", "localize": "camcore.localize",
           "report": "camcore.report"}
USAGE = """usage: cam-studio {run,evaluate,bench,localize,report} [options]

  run        start the dashboard (streamlit run <installed dashboard/app.py>); streamlit's
             options pass through, e.g. --server.port 8600 --server.address 0.0.0.0
             (default 127.0.0.1:8501); --ray-address ADDR runs the per-channel passes
             (Score-CAM, Ablation-CAM) on the Ray cluster at ADDR (same as RAY_ADDRESS=ADDR)
  evaluate   evaluate CAM methods over a data set (python -m camcore.evaluate; --help for options)
  bench      time each method against its floor (python -m camcore.bench; --help for options)
  localize   defect regions for new images with a saved method, layer and threshold
             (python -m camcore.localize --settings s.json IMAGES... --out regions.json)
  report     a self-contained HTML report of an evaluation results file
             (python -m camcore.report RESULTS.parquet --out report.html)
"""


def app_path() -> Path:
    """The dashboard's Streamlit entry script, where this package is installed."""
    return Path(__file__).resolve().parent / "app.py"


def streamlit_command(options: Sequence[str]) -> list[str]:
    """The ``streamlit run`` command line for ``cam-studio run <options>``: the default
    address and port are added only when the options do not set them."""
    options = list(options)

    def given(flag: str) -> bool:
        return any(option == flag or option.startswith(flag + "=") for option in options)

    defaults = []
    if not given("--server.address"):
        defaults += ["--server.address", DEFAULT_ADDRESS]
    if not given("--server.port"):
        defaults += ["--server.port", str(DEFAULT_PORT)]
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), *defaults, *options]


def ray_address_option(options: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the value of ``--ray-address ADDR`` / ``--ray-address=ADDR`` or None, the other
    options); ValueError if the flag has no value."""
    rest, address = [], None
    options = list(options)
    index = 0
    while index < len(options):
        option = options[index]
        if option == RAY_FLAG:
            if index + 1 >= len(options) or options[index + 1].startswith("--"):
                raise ValueError(f"{RAY_FLAG} needs an address, e.g. {RAY_FLAG} 10.0.0.5:6379")
            address, index = options[index + 1], index + 2
            continue
        if option.startswith(RAY_FLAG + "="):
            address = option.split("=", 1)[1]
        else:
            rest.append(option)
        index += 1
    return address, rest


def serve(streamlit_args: Sequence[str]) -> int:
    """Run ``streamlit run <app> <streamlit_args>`` in this process, after starting the
    warm-up of the default page (:mod:`dashboard.warmup`) in a background thread, so the
    first visitor finds the model loaded, traced and the default maps computed."""
    from streamlit.web import cli as streamlit_cli

    from dashboard import warmup

    warmup.start()
    sys.argv = ["streamlit", "run", *streamlit_args]
    try:
        streamlit_cli.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def _run_module(module: str, argv: Sequence[str]) -> int:
    # alter_sys: the module sees sys.argv and __main__ exactly as under `python -m`
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cam-studio`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if command == "run":
        try:
            address, rest = ray_address_option(rest)
        except ValueError as exc:
            print(f"cam-studio: {exc}", file=sys.stderr)
            return 2
        if address:
            os.environ["RAY_ADDRESS"] = address
        command_line = streamlit_command(rest)
        return serve(command_line[4:])
    if command in MODULES:
        return _run_module(MODULES[command], rest)
    print(f"cam-studio: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
