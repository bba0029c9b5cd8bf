"""Benchmark: load_16's sessions against one server, without browsers on its cores.

    python -m scripts.load_protocol [--sessions 16] [--url URL] [--json out.json]

``scripts.load_16`` drives 16 headless Chromium pages on the server's own two cores, and
measured alone each page's renderer needs 4-7 CPU-s for its flow (2026-12-07): the
browsers, not the server, decide its figures. A team's browsers run on their own machines.
This script is the server's side of that: every session is a websocket client speaking
Streamlit's own protocol (``BackMsg``/``ForwardMsg``), asking for what the page asks for
(its first run, the "grid drawn" report that brings the charts, widget changes, fragment
reruns for max_N) and timing until the server says the run is finished, every element of
it sent. What the browser then spends drawing is not in these times; ``bench_dashboard``
measures that for one page.

The flows follow ``tests/load_flows.py``: the sample, cached-reader, other-model,
method-set and max_N flows as there; the upload and Dataset-page flows are replaced by
sample flows on other samples (file uploads and that page's charts are not emulated).
Any exception element, a run that does not finish, or a session shown another session's
sample is a problem (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

STREAMLIT_INTERNAL_KEY_PREFIX = "$$STREAMLIT_INTERNAL_KEY"
RUN_TIMEOUT_S = 900.0


@dataclass
class Widget:
    id: str
    kind: str
    fragment_id: str
    proto: object


@dataclass
class Client:
    """One session: its websocket, the widgets its runs drew, the states it sent."""

    name: str
    query: str
    flow: Callable[[Client], Awaitable[None]]
    expect_sample: str
    socket: object = None
    widgets: dict[str, Widget] = field(default_factory=dict)  # by widget key
    components: dict[str, Widget] = field(default_factory=dict)  # bidi components by key
    states: dict[str, object] = field(default_factory=dict)  # WidgetState by id, as a browser keeps them
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None
    problems: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    messages: int = 0
    text: list[str] = field(default_factory=list)  # markdown/caption text of the last run


def _key_of(widget_id: str) -> str:
    return widget_id.rsplit("-", 1)[-1]


def _read(client: Client, data: bytes) -> None:
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    message = ForwardMsg()
    message.ParseFromString(data)
    client.messages += 1
    kind = message.WhichOneof("type")
    if kind == "script_finished":
        client.status = message.script_finished
        client.finished.set()
    elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
        element = message.delta.new_element
        element_kind = element.WhichOneof("type")
        if element_kind == "exception":
            client.problems.append(f"exception: {element.exception.message[:200]}")
        elif element_kind in ("markdown", "heading", "html"):
            client.text.append(getattr(element, element_kind).body)
        proto = getattr(element, element_kind) if element_kind else None
        widget_id = getattr(proto, "id", "") if proto is not None else ""
        if widget_id:
            widget = Widget(widget_id, element_kind, message.delta.fragment_id, proto)
            if element_kind == "bidi_component":
                client.components[_key_of(widget_id)] = widget
            else:
                client.widgets[_key_of(widget_id)] = widget


async def _listen(client: Client) -> None:
    with contextlib.suppress(Exception):  # the socket closes at the end
        async for data in client.socket:
            _read(client, data)


async def rerun(client: Client, states: tuple = (), fragment_id: str = "", label: str | None = None,
                triggers: tuple = ()) -> float:
    """Ask for a run (a fragment's with ``fragment_id``) with ``states`` changed; the time
    until the server reports it finished, recorded under ``label``."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    for state in states:
        client.states[state.id] = state
    message = BackMsg()
    message.rerun_script.query_string = client.query
    message.rerun_script.fragment_id = fragment_id
    message.rerun_script.widget_states.widgets.extend([*client.states.values(), *triggers])
    client.finished.clear()
    client.status = None
    client.text = []
    start = time.monotonic()
    await client.socket.send(message.SerializeToString())
    while True:
        await asyncio.wait_for(client.finished.wait(), RUN_TIMEOUT_S)
        if client.status != 2:  # 2: ended early for a newer run (ours, when a trigger reran it)
            break
        client.finished.clear()
    seconds = time.monotonic() - start
    if client.status not in (0, 3):
        client.problems.append(f"{label or 'run'}: finished with status {client.status}")
    if label:
        client.timings[label] = seconds
    return seconds


def _state(widget_id: str, **value) -> object:
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    state = WidgetState(id=widget_id)
    (name, data), = value.items()
    target = getattr(state, name)
    if hasattr(target, "data"):
        target.data.extend(data)
    else:
        setattr(state, name, data)
    return state


def _slider_value(client: Client, key: str) -> float:
    widget = client.widgets[key]
    current = client.states.get(widget.id)
    if current is not None:
        return current.double_array_value.data[0]
    return (widget.proto.value or widget.proto.default)[0]


async def move_slider(client: Client, key: str, step: float, label: str) -> None:
    widget = client.widgets[key]
    value = round(_slider_value(client, key) + step, 6)
    await rerun(client, (_state(widget.id, double_array_value=[value]),), widget.fragment_id, label)


async def first_page(client: Client) -> None:
    """The first run (the grid; "first_grid"), then the browser's "grid drawn" report,
    which reruns the fragment that draws the charts ("first_page")."""
    await rerun(client, label="first_grid")
    if client.expect_sample and not any(client.expect_sample in text for text in client.text):
        client.problems.append(f"its first grid does not show {client.expect_sample}")
    drawn = client.components.get("grid_drawn") or next(iter(client.components.values()), None)
    if drawn is None:
        client.timings["first_page"] = client.timings["first_grid"]
        return
    events = f"{STREAMLIT_INTERNAL_KEY_PREFIX}_{drawn.id}__events"
    trigger = _state(events, json_trigger_value=json.dumps([{"event": "drawn", "value": True}]))
    seconds = await rerun(client, fragment_id=drawn.fragment_id, triggers=(trigger,))
    client.timings["first_page"] = client.timings["first_grid"] + seconds


async def sample_flow(client: Client) -> None:
    await first_page(client)


async def cached_reader_flow(client: Client) -> None:
    await first_page(client)
    for k in range(1, 5):
        await move_slider(client, "max_n", 1, f"cached_max_n_{k}")
    await move_slider(client, "threshold", 0.05, "cached_threshold_1")
    await move_slider(client, "threshold", -0.05, "cached_threshold_2")


async def model_flow(client: Client) -> None:
    await first_page(client)
    widget = client.widgets["demo_name"]
    await rerun(client, (_state(widget.id, string_value="resnet_defect"),), label="change")
    if not any("resnet_defect" in text for text in client.text):
        client.problems.append("the other model is not shown")


async def methods_flow(client: Client) -> None:
    await first_page(client)
    widget = client.widgets["methods"]
    options = [option.content for option in widget.proto.options]
    chosen = [options[i] for i in widget.proto.default]
    chosen = [label for label in chosen if label != "Score-CAM"] + ["LayerCAM"]
    await rerun(client, (_state(widget.id, string_array_value=chosen),), label="change")


def max_n_flow(moves: int) -> Callable[[Client], Awaitable[None]]:
    async def flow(client: Client) -> None:
        await first_page(client)
        await move_slider(client, "max_n", moves, "change")

    return flow


def sessions(count: int) -> list[Client]:
    from tests import load_flows

    made = []
    samples = load_flows.SAMPLES
    for n in range(1, count + 1):
        kind = (n - 1) % 8
        texture, sample = samples[(n - 1 + (n - 1) // 8 + (kind in (5, 7))) % len(samples)]
        query = f"texture={texture.capitalize()}"
        if kind == 1 and n <= 8:
            made.append(Client(f"{n:02d} cached reader", "", cached_reader_flow, "fractal_defective_1"))
            continue
        flow, name = {2: (model_flow, "resnet_defect"), 3: (methods_flow, "methods"),
                      4: (max_n_flow(3), "max_N"), 6: (max_n_flow(5), "max_N")}.get(kind, (sample_flow, "sample"))
        made.append(Client(f"{n:02d} {name} on {sample}", query, flow, sample))
    return made


async def _drive(url: str, client: Client) -> None:
    import websockets

    stream = url.replace("http", "ws", 1).rstrip("/") + "/_stcore/stream"
    async with websockets.connect(stream, subprotocols=["streamlit"], max_size=2**27, origin=url) as socket:
        client.socket = socket
        listener = asyncio.create_task(_listen(client))
        try:
            await client.flow(client)
        except Exception as exc:  # noqa: BLE001 - a problem of this session, the others go on
            client.problems.append(f"{type(exc).__name__}: {exc}")
        listener.cancel()


async def run(url: str, clients: list[Client]) -> dict:
    start = time.monotonic()
    await asyncio.gather(*(_drive(url, client) for client in clients))
    wall = time.monotonic() - start
    return {"wall_s": wall, "problems": [f"{c.name}: {p}" for c in clients for p in c.problems],
            "sessions": {c.name: {**{k: round(v, 2) for k, v in c.timings.items()}, "messages": c.messages}
                         for c in clients}}


def summary(figures: dict) -> dict:
    """p50 / p95 of the first grids, the first pages (with charts), the changes and the moves on cached maps."""
    from tests.load_flows import quantile

    rows = figures["sessions"].values()
    firsts = [r["first_grid"] for r in rows if "first_grid" in r]
    pages = [r["first_page"] for r in rows if "first_page" in r]
    changes = [v for r in rows for k, v in r.items() if k == "change"]
    cached = [v for r in rows for k, v in r.items() if k.startswith("cached_")]
    figures = {}
    for name, values in (("first_grid", firsts), ("first_page", pages), ("change", changes),
                         ("cached_change", cached)):
        for q in (0.5, 0.95):
            figures[f"{name}_p{round(q * 100)}_s"] = round(quantile(sorted(values), q), 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.load_protocol", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--url", default=None, help="a dashboard already running; else one is started (warmed)")
    parser.add_argument("--warm-seconds", type=float, default=20.0)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from scripts.load_16 import cpu_seconds, server_process
    from tests import browser_helpers as browser

    server_here = browser.serve(warm=True) if args.url is None else contextlib.nullcontext(args.url)
    with server_here as url:
        server = server_process(url)
        if args.url is None:
            time.sleep(args.warm_seconds)
        before = cpu_seconds(server)
        figures = asyncio.run(run(url, sessions(args.sessions)))
        after = cpu_seconds(server)
    figures.update(summary(figures))
    figures["cpu_s"] = {what: round(after[what] - before[what], 1) for what in ("server", "machine")}
    print(json.dumps(figures, indent=1))
    print(f"\n{args.sessions} protocol sessions: first grid p50 {figures['first_grid_p50_s']} s, "
          f"p95 {figures['first_grid_p95_s']} s; first page p95 {figures['first_page_p95_s']} s; changes p50 "
          f"{figures['change_p50_s']} s, p95 {figures['change_p95_s']} s; cached moves p50 "
          f"{figures['cached_change_p50_s']} s, p95 {figures['cached_change_p95_s']} s; "
          f"wall {figures['wall_s']:.0f} s; "
          f"CPU s: server {figures['cpu_s']['server']}, machine {figures['cpu_s']['machine']}; "
          f"{len(figures['problems'])} problems")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
