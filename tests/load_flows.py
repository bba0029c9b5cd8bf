"""Concurrent browser sessions against one dashboard server: the flows of
``tests/test_browser_load.py`` (8 sessions, in ``make test``) and ``scripts/load_16.py``
(16 sessions, a benchmark).

Every session is a page of one headless Chromium, driving its own flow (a demo model, a
sample, an uploaded model and image, a method set, max_N moves, the Dataset page). The
flows run at the same time from one thread: each is a list of steps (an action, then a
condition that the page itself watches), and the driver visits every session in
turn, so the server sees all of them at once. Each session has its own marker - the image
(and model) its grid must show - checked when its grid is complete and again when every
session is done (no cross-talk).

Times are taken in the page: every step's condition is a JavaScript function that a small
watcher in the page checks whenever the page changes, noting (by the page's clock, which is this
machine's) when it started to hold. The driver only reads that note, so how long it takes
to visit 16 busy pages does not add to any figure.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

try:  # run by pytest (tests/ on the path) or as `python -m scripts.load_16` from the root
    import browser_helpers as browser
except ImportError:  # pragma: no cover - the script's import
    from tests import browser_helpers as browser

SETTLE_MS = 300  # a condition must hold this long (Streamlit's script state flickers between runs)

_IDLE_JS = """() => {
    const app = document.querySelector('[data-testid=stApp]');
    return !!app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
        && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector('[data-testid=stStatusWidget]')
        && !document.querySelector('[data-testid=stSkeleton]');
}"""
_FULL_GRID_JS = f"""() => document.querySelectorAll('[data-testid=stDownloadButton]').length >= {browser.DOWNLOADS}
    && document.querySelectorAll('{browser.FSC_PANELS} [data-testid=stImage] img').length >= {len(browser.ROWS)}
    && !document.querySelector('{browser.GRID} [data-testid=stProgress]')
    && ({_IDLE_JS})()"""
_HEADLINE_JS = """() => {
    const blocks = [...document.querySelectorAll('[data-testid=stMain] [data-testid=stMarkdownContainer]')];
    const found = blocks.find(b => b.innerText.includes(' · layer ') && b.innerText.includes('explaining'));
    return found ? found.innerText : '';
}"""
_GRID_TEXT_JS = f"() => (document.querySelector('{browser.GRID}') || {{innerText: ''}}).innerText"


def _all(*conditions: str) -> str:
    """A JavaScript condition that holds when every one of ``conditions`` (``() => bool``) does."""
    return "() => " + " && ".join(f"({c})()" for c in conditions)


def headline(page) -> str:
    return str(page.evaluate(_HEADLINE_JS))


def grid_text(page) -> str:
    return str(page.evaluate(_GRID_TEXT_JS))


# textContent, not innerText: checked on every change of every page, innerText would lay the
# page out each time
_HEADLINE_CONTENT_JS = _HEADLINE_JS.replace("innerText", "textContent")


def _headline_has(text: str) -> str:
    return f"() => ({_HEADLINE_CONTENT_JS})().includes({text!r})"


@dataclass
class Step:
    """Run ``act`` once, then wait until ``until`` (JavaScript, ``() => bool``, checked in the
    page) holds for SETTLE_MS; ``timed`` names the time from the step's start to the moment
    it began to hold in the session's timings."""

    name: str
    act: Callable | None
    until: str
    timed: str | None = None


@dataclass
class Session:
    name: str
    path: str  # URL path and query the session opens
    steps: list[Step]
    marker: Callable[[object], list[str]]  # problems with what the page shows, [] when right
    grid: bool = True  # a Compare session (its first full grid is timed)
    page: object = None
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    messages: int = 0  # websocket messages the page received from the server
    index: int = 0
    started: float = 0.0  # time.time() at the step's start (the page's Date.now() is on the same clock)
    done: bool = False


_CAPTIONS_JS = f"""() => [...document.querySelectorAll('{browser.GRID} [data-testid=stImageCaption]')]
    .map(c => c.innerText.trim())"""


def _expect(
    page, image: str, model: str, grid_has: tuple[str, ...] = (), grid_lacks: tuple[str, ...] = ()
) -> list[str]:
    """Problems with what the page shows: its image in the headline and the grid's input
    column, its model in the headline, panels captioned ``grid_has`` and none ``grid_lacks``."""
    problems = []
    top, grid = headline(page), grid_text(page)
    captions = set(page.evaluate(_CAPTIONS_JS))
    if image not in top or image not in grid:
        problems.append(f"not its image {image!r}: headline {top[:160]!r}")
    if model not in top:
        problems.append(f"not its model {model!r}: headline {top[:160]!r}")
    problems += [f"grid lacks {text!r}" for text in grid_has if text not in grid and text not in captions]
    problems += [f"grid shows {text!r}" for text in grid_lacks if text in captions]
    return problems


def _shows(image: str, model: str, grid_has: tuple[str, ...] = (), grid_lacks: tuple[str, ...] = ()) -> str:
    """:func:`_expect` as a page condition: true when it would find no problem."""
    return f"""() => {{
        const top = ({_HEADLINE_CONTENT_JS})(), grid = ({_GRID_TEXT_JS.replace("innerText", "textContent")})();
        const captions = ({_CAPTIONS_JS.replace("innerText", "textContent")})();
        return top.includes({image!r}) && grid.includes({image!r}) && top.includes({model!r})
            && {list(grid_has)!r}.every(t => grid.includes(t) || captions.includes(t))
            && !{list(grid_lacks)!r}.some(t => captions.includes(t));
    }}"""


# The first steps of every Compare session: the first full grid, every tile drawn (the
# definition of scripts/bench_dashboard.py, whose first-grid times end there), then the rest
# of the page (the charts below the grid, the downloads); the flow goes on from the complete page.
def _first_grid_steps() -> list[Step]:
    return [Step("first grid", None, browser.GRID_DRAWN_JS, "first_grid"),
            Step("page complete", None, _FULL_GRID_JS, "first_page")]


# ------------------------------------------------------------------- the flows
def _select(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def _radio(page, key: str, text: str) -> None:
    page.locator(f".st-key-{key}").get_by_text(text, exact=True).click()


def _upload(page, key: str, path: Path) -> None:
    page.locator(f".st-key-{key} input[type=file]").set_input_files(str(path))


def _move_max_n(times: int) -> Callable:
    def act(page) -> None:
        for _ in range(times):
            browser.move_max_n(page)

    return act


def _caption_is(text: str) -> str:
    script = f"""() => {{
        const cap = document.querySelector('.st-key-faster_score_cam_header [data-testid=stCaptionContainer]');
        return !!cap && cap.innerText.startsWith({text!r}) && !cap.innerText.includes('computing');
    }}"""
    return _all(script, _FULL_GRID_JS)


def sample_session(n: int, texture: str, sample: str, extra: str = "") -> Session:
    """A bundled sample chosen through the URL."""
    return Session(
        f"{n:02d} sample {sample}", f"/?texture={texture.capitalize()}{extra}",
        _first_grid_steps(),
        lambda page: _expect(page, sample, "vgg_defect"),
    )


def model_session(n: int, texture: str, sample: str) -> Session:
    """Another demo model, chosen in the sidebar after the first grid."""
    return Session(
        f"{n:02d} resnet_defect on {sample}", f"/?texture={texture.capitalize()}",
        [*_first_grid_steps(),
         Step("other model", lambda page: _select(page, "Demo model", "resnet_defect"),
              _all(_headline_has("resnet_defect"), _FULL_GRID_JS), "change")],
        lambda page: _expect(page, sample, "resnet_defect"),
    )


def methods_session(n: int, texture: str, sample: str) -> Session:
    """Another method set: LayerCAM in, Score-CAM out."""

    def act(page) -> None:
        pills = page.locator(".st-key-methods")
        pills.get_by_role("button", name="LayerCAM", exact=True).click()
        pills.get_by_role("button", name="Score-CAM", exact=True).click()

    shown = {"grid_has": ("LayerCAM · overlay",), "grid_lacks": ("Score-CAM · overlay",)}

    def marker(page) -> list[str]:
        return _expect(page, sample, "vgg_defect", **shown)

    return Session(
        f"{n:02d} methods on {sample}", f"/?texture={texture.capitalize()}",
        [*_first_grid_steps(),
         Step("methods", act, _all(_FULL_GRID_JS, _shows(sample, "vgg_defect", **shown)), "change")],
        marker,
    )


def max_n_session(n: int, texture: str, sample: str, moves: int = 3) -> Session:
    """max_N moved with the keyboard after the first grid (the live fragment only)."""
    return Session(
        f"{n:02d} max_N on {sample}", f"/?texture={texture.capitalize()}",
        [*_first_grid_steps(),
         Step("max_N", _move_max_n(moves), _caption_is(f"max_N = {10 + moves} ·"), "change")],
        lambda page: _expect(page, sample, "vgg_defect", grid_has=(f"max_N = {10 + moves} ·",)),
    )


THRESHOLD_LABEL = "Heatmap threshold"
_THRESHOLD_SHOWN_JS = f"""() => {{
    const slider = [...document.querySelectorAll('[data-testid=stSlider]')]
        .find(s => s.innerText.includes({THRESHOLD_LABEL!r}));
    const value = slider && slider.querySelector('[data-testid=stSliderThumbValue]');
    return value ? value.innerText.trim() : '';
}}"""


def _move_threshold(key: str) -> Callable:
    def act(page) -> None:
        slider = page.get_by_role("slider", name=THRESHOLD_LABEL)
        slider.focus()
        slider.press(key)

    return act


def _threshold_is(value: str) -> str:
    return _all(f"() => ({_THRESHOLD_SHOWN_JS})() === {value!r}", _FULL_GRID_JS)


def cached_reader_session(n: int, moves: int = 4) -> Session:
    """The default page (the one ``cam-studio run`` warms), then only max_N and threshold
    moves: every map it asks for is already computed, so each move ("cached" timings) must
    not wait behind the other sessions' Score-CAMs."""
    steps = _first_grid_steps()
    steps += [Step(f"max_N {10 + k}", _move_max_n(1), _caption_is(f"max_N = {10 + k} ·"), f"cached_max_n_{k}")
              for k in range(1, moves + 1)]
    steps += [Step("threshold 0.55", _move_threshold("ArrowRight"), _threshold_is("0.55"), "cached_threshold_1"),
              Step("threshold 0.50", _move_threshold("ArrowLeft"), _threshold_is("0.50"), "cached_threshold_2")]
    return Session(
        f"{n:02d} cached reader", "/",
        steps,
        lambda page: _expect(page, "fractal_defective_1", "vgg_defect", grid_has=(f"max_N = {10 + moves} ·",)),
    )


def upload_session(n: int, folder: Path) -> Session:
    """A model file and an image uploaded by this session, named after it."""
    from camcore.visualize import png_bytes

    model_path = folder / f"load_model_{n:02d}.keras"
    image_path = folder / f"load_image_{n:02d}.png"
    if not model_path.exists():
        import keras

        keras.utils.set_random_seed(n)
        inputs = keras.Input((48, 48, 3), name="image")
        h = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(h)
        h = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h)).save(model_path)
        rng = np.random.default_rng(n)
        image_path.write_bytes(png_bytes(rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)))
    return Session(
        f"{n:02d} upload", "/",
        [*_first_grid_steps(),
         Step("model source", lambda page: _radio(page, "model_source", "Upload a model"), _IDLE_JS),
         Step("model", lambda page: _upload(page, "model_file", model_path),
              _all(_headline_has(model_path.name), _FULL_GRID_JS), "change"),
         Step("image source", lambda page: _radio(page, "image_source", "Upload an image"), _IDLE_JS),
         Step("image", lambda page: _upload(page, "image_file", image_path),
              _all(_headline_has(image_path.name), _FULL_GRID_JS), "change_image")],
        lambda page: _expect(page, image_path.name, model_path.name),
    )


def dataset_session(n: int, folder: Path) -> Session:
    """The Dataset page: a results file loaded, its charts drawn."""
    results = folder / f"load_results_{n:02d}.csv"
    if not results.exists():
        _write_results(results)

    charts = _all("() => document.querySelectorAll('.js-plotly-plot').length >= 5", _IDLE_JS)
    navigation = "() => document.querySelectorAll('[data-testid=stSidebarNav] a').length >= 2"
    offered = "() => document.body.innerText.includes('Load a results file')"

    def marker(page) -> list[str]:
        heading = page.get_by_role("heading", name=f"Results: {results.name}")
        return [] if heading.count() == 1 else [f"no heading 'Results: {results.name}'"]

    def open_page(page) -> None:
        # through the navigation, as users arrive (a typed /dataset URL makes Streamlit's
        # frontend probe /dataset/_stcore/... first: two harmless 404s in the console)
        page.locator("[data-testid=stSidebarNav] a", has_text="Dataset").click()

    return Session(
        f"{n:02d} dataset", "/",
        [Step("navigation", None, navigation),
         Step("page", open_page, _all(offered, _IDLE_JS)),
         Step("results source", lambda page: _radio(page, "ds_source", "Load a results file"), _IDLE_JS),
         Step("results", lambda page: _upload(page, "ds_upload", results), charts, "charts")],
        marker, grid=False,
    )


def _write_results(path: Path) -> None:
    """A real results file: a tiny model on 5 generated 64-px images (about a second)."""
    import keras

    from camcore import evaluation as ev

    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    spec = ev.ModelSpec.from_model(model, "unit", key="demo:vgg_defect")
    ev.evaluate(spec, ev.synthetic_items(5, seed=3, size=64, defect_rate=0.8), out=path, curve_steps=4, max_n=2)


# Eight different flows; sessions 9..16 repeat them on other samples.
SAMPLES = [("fractal", "fractal_defective_1"), ("grain", "grain_defective_1"), ("blotch", "blotch_defective_1"),
            ("speckle", "speckle_defective_1"), ("woven", "woven_defective_1"), ("brushed", "brushed_defective_1")]


def sessions(count: int, folder: Path) -> list[Session]:
    """``count`` sessions (8 or 16), every one with its own flow or sample."""
    made: list[Session] = []
    for n in range(1, count + 1):
        kind = (n - 1) % 8
        texture, sample = SAMPLES[(n - 1 + (n - 1) // 8) % len(SAMPLES)]
        if kind == 0 or (kind == 1 and n > 8):
            made.append(sample_session(n, texture, sample))
        elif kind == 1:
            made.append(cached_reader_session(n))
        elif kind == 2:
            made.append(model_session(n, texture, sample))
        elif kind == 3:
            made.append(methods_session(n, texture, sample))
        elif kind == 4:
            made.append(max_n_session(n, texture, sample, moves=3))
        elif kind == 5:
            made.append(upload_session(n, folder))
        elif kind == 6:
            made.append(max_n_session(n, texture, sample, moves=5))
        else:
            made.append(dataset_session(n, folder))
    return made


# ------------------------------------------------------------------ the driver
def _watch(session: Session) -> None:
    page = session.page
    page.on("console", lambda message: session.errors.append(f"console: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: session.errors.append(f"pageerror: {error}"))

    def count(socket) -> None:
        def received(_payload) -> None:
            session.messages += 1

        socket.on("framereceived", received)

    page.on("websocket", count)
    page.on("response", lambda response: session.errors.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400 else None)


def _exceptions(page) -> int:
    return page.locator("[data-testid=stException]").count()


# Chromium's per-page counters (CDP Performance.getMetrics) that say what a renderer spent its time on
RENDERER_METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "LayoutCount",
                    "RecalcStyleCount", "Nodes", "JSHeapUsedSize")


def run(url: str, new_page: Callable, flows: list[Session], timeout_s: float = 600.0,
        renderer_metrics: bool = False) -> dict:
    """Drive every session's flow at once; returns the figures and the problems found (and,
    with ``renderer_metrics``, each page's :data:`RENDERER_METRICS` at the end)."""
    probes = {}
    for session in flows:
        session.page = new_page()
        _watch(session)
        if renderer_metrics:
            probes[session.name] = session.page.context.new_cdp_session(session.page)
            probes[session.name].send("Performance.enable")
    start = time.monotonic()
    for session in flows:  # every session asks at once; the server queues the work
        session.started = time.time()
        session.page.goto(url + session.path, wait_until="commit")
    problems: list[str] = []
    while not all(s.done for s in flows):
        if time.monotonic() - start > timeout_s:
            stuck = [f"{s.name} at {s.steps[s.index].name}" for s in flows if not s.done]
            problems.append(f"timeout after {timeout_s:.0f} s: {stuck}")
            break
        for session in flows:
            if not session.done:
                _advance(session, problems)
        time.sleep(0.25)  # the watchers in the pages take the times; this only moves the flows on
    wall = time.monotonic() - start
    for session in flows:  # every page still shows its own image: no cross-talk
        if session.done:
            problems += [f"{session.name}: {p}" for p in session.marker(session.page)]
        if _exceptions(session.page):
            problems.append(f"{session.name}: the page shows an exception")
        problems += [f"{session.name}: {e}" for e in session.errors]
    figures = {"wall_s": wall, "problems": problems,
               "sessions": {s.name: {**s.timings, "messages": s.messages} for s in flows},
               **percentiles(flows)}
    if renderer_metrics:
        figures["renderer_metrics"] = {}
        for name, probe in probes.items():
            counters = probe.send("Performance.getMetrics")["metrics"]
            figures["renderer_metrics"][name] = {c["name"]: c["value"] for c in counters
                                                 if c["name"] in RENDERER_METRICS}
    return figures


# In the page: check the step's condition whenever the page changes (a DOM mutation, an
# image decoded) and once a second besides, and note, by Date.now(), when it began to hold
# once it has held SETTLE_MS. A timer checking ten times a second cost 16 waiting pages
# ~0.2 CPU-s a second between them, on the cores the server needs.
POLL_MS = 1000
_WATCHER_JS = """([step, settle, poll]) => {
    const state = {step, since: null, held: null};
    if (window.__loadStep && window.__loadStep.stop) window.__loadStep.stop();
    window.__loadStep = state;
    let timer = null, queued = false;
    const check = () => {
        queued = false;
        if (state.held !== null) return;
        let holds = false;
        try { holds = !!(CONDITION)(); } catch (error) { holds = false; }
        const now = Date.now();
        if (!holds) state.since = null;
        else if (state.since === null) state.since = now;
        if (holds && now - state.since >= settle) { state.held = state.since; state.stop(); return; }
        clearTimeout(timer);
        timer = setTimeout(check, holds ? settle - (now - state.since) + 5 : poll);
    };
    const soon = () => { if (!queued) { queued = true; queueMicrotask(check); } };
    const observer = new MutationObserver(soon);
    observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
    document.addEventListener('load', soon, true);  // an image decoded (it mutates nothing)
    state.stop = () => {
        observer.disconnect();
        document.removeEventListener('load', soon, true);
        clearTimeout(timer);
    };
    check();
}"""
_HELD_JS = """(step) => {
    const state = window.__loadStep;
    return state && state.step === step ? (state.held === null ? -1 : state.held) : null;
}"""


def _held_at(session: Session) -> float | None:
    """When (time.time()) the current step's condition began to hold, None while it has not:
    starts the page's watcher for the step when it runs none (a new step, a reloaded page)."""
    page = session.page
    try:
        held = page.evaluate(_HELD_JS, session.index)
        if held is None:
            until = session.steps[session.index].until
            page.evaluate(_WATCHER_JS.replace("CONDITION", until), [session.index, SETTLE_MS, POLL_MS])
            return None
    except Exception:  # noqa: BLE001 - a page between two documents: ask again on the next visit
        return None
    return None if held < 0 else held / 1000


def _advance(session: Session, problems: list[str]) -> None:
    held = _held_at(session)
    if held is None:
        return
    step = session.steps[session.index]
    if step.timed:
        session.timings[step.timed] = max(0.0, held - session.started)
    session.index += 1
    if session.index == len(session.steps):
        session.done = True  # its grid must be its own now, and still when all are done
        problems += [f"{session.name} when done: {p}" for p in session.marker(session.page)]
        return
    following = session.steps[session.index]
    if following.act is not None:  # a step without an action goes on timing from the last one's start
        session.started = time.time()
        try:
            following.act(session.page)
        except Exception as exc:  # noqa: BLE001 - reported, the session stops here
            problems.append(f"{session.name}: {following.name} failed: {type(exc).__name__}: {exc}")
            session.done = True


def percentiles(flows: list[Session]) -> dict:
    """p50 / p95 / max of the time to the first full grid (and to the complete first page) over
    the Compare sessions, p50 / p95 of the changes and of the moves on cached maps."""
    firsts = sorted(s.timings["first_grid"] for s in flows if s.grid and "first_grid" in s.timings)
    pages = sorted(s.timings["first_page"] for s in flows if s.grid and "first_page" in s.timings)
    changes = sorted(v for s in flows for k, v in s.timings.items() if k.startswith("change"))
    cached = sorted(v for s in flows for k, v in s.timings.items() if k.startswith("cached"))
    return {"first_grid_p50_s": quantile(firsts, 0.5), "first_grid_p95_s": quantile(firsts, 0.95),
            "first_grid_max_s": max(firsts) if firsts else float("nan"),
            "first_page_p50_s": quantile(pages, 0.5), "first_page_p95_s": quantile(pages, 0.95),
            "change_p50_s": quantile(changes, 0.5), "change_p95_s": quantile(changes, 0.95),
            "cached_change_p50_s": quantile(cached, 0.5), "cached_change_p95_s": quantile(cached, 0.95),
            "cached_changes": len(cached), "grids": len(firsts)}


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of sorted ``values`` (inclusive method); NaN when there are none."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1])
