"""A self-contained HTML report for people who do not run CAM Studio.

One ``.html`` file that opens offline in any browser and makes no network request: images are
embedded as ``data:`` URIs and the charts are interactive plotly figures whose library
(plotly.js, ~4.8 MB) is inlined once in the page's head. Interactive rather than pictures
because the reader can then hover a box for its quartiles, or a curve for the exact IoU at a
threshold, as on the pages; and because rendering plotly figures to pictures needs an extra
renderer (kaleido and a browser) that the project does not ship. The cost is the library:
the Compare page's default report (a 4-method grid, the timing chart and the threshold table)
measured 5.8 MB (7.0 MB with all nine methods), under the 10 MB aim.

What it shows, each part only when given: the model, layer, precision and the settings that
reproduce the page (as a table and as JSON, also machine-readable in
``<script id="camstudio-settings" type="application/json">``); the grid image; the timing
chart; the threshold table; and for evaluation results, the summary table, the best global
thresholds, the distribution and curve charts, the worst images and the skipped ones.

    >>> from camcore.visualize import png_bytes
    >>> write_report("compare.html", model="vgg_defect (demo)", layer="top_down56", precision="fp32",
    ...              settings={"method": "grad_cam", "threshold": 0.3}, grid_png=png_bytes(image)).name
    'compare.html'
    >>> from camcore import evaluation
    >>> table = evaluation.evaluate(evaluation.load_model_spec("vgg_defect"), evaluation.synthetic_items(2),
    ...                             methods=["grad_cam"], curve_steps=2, workers=1)
    >>> write_report("dataset.html", results=table).stat().st_size > 100_000   # plotly.js inlined
    True

The command line (``cam-studio report`` = ``python -m camcore.report``) writes the evaluation
part from a results file::

    cam-studio report RESULTS.parquet|csv --out report.html [--data-root DIR] [--no-maps]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from camcore.report_sections import EvaluationSections, ReportFigure, ReportImage, evaluation_sections

if TYPE_CHECKING:
    from camcore.evaluation.sources import LoadedImage

__all__ = ["ReportFigure", "ReportImage", "main", "report_html", "write_report"]

SETTINGS_ID = "camstudio-settings"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": "hover"}
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
 padding:0 24px 48px;color:#212529;line-height:1.45}
h1{margin:24px 0 4px}h2{margin-top:36px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
.meta{color:#6c757d;margin:0}table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{padding:4px 10px;border-bottom:1px solid #e9ecef;text-align:right}th{background:#f8f9fa}
td:first-child,th:first-child{text-align:left;white-space:nowrap}table.kv td{text-align:left}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #dee2e6}
figcaption{color:#495057;font-size:13px}.chart{margin:12px 0;border:1px solid #f1f3f5}
.worst{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.worst figure{margin:0}.note{background:#fff9db;border-left:4px solid #fab005;padding:6px 10px;margin:8px 0}
pre{background:#f8f9fa;padding:10px;overflow:auto;font-size:13px}.scroll{overflow-x:auto}
table.kv td{max-width:900px;word-break:break-word}summary{cursor:pointer;color:#1c7ed6}
"""


# ----------------------------------------------------------------------- pieces
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...``: an image the page carries itself."""
    return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode('ascii')}"


def _image(image: ReportImage, css: str = "report-image") -> str:
    return (f'<figure><img class="{css}" alt="{_esc(image.caption)}" src="{data_uri(image.data, image.mime)}">'
            f"<figcaption>{_esc(image.caption)}</figcaption></figure>")


def _number(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    """An HTML table of ``frame``, numbers to three decimals, every cell escaped."""
    frame = frame.reset_index() if index else frame
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_number(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(item: ReportFigure, number: int) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio

    figure = item.figure if isinstance(item.figure, go.Figure) else go.Figure(item.figure)
    chart = pio.to_html(figure, full_html=False, include_plotlyjs=False, div_id=f"chart-{number}",
                        config=PLOTLY_CONFIG)
    caption = f"<figcaption>{_esc(item.caption)}</figcaption>" if item.caption else ""
    return f'<div class="chart" data-title="{_esc(item.title)}">{chart}{caption}</div>'


def _settings_json(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, indent=2, default=str, ensure_ascii=False)


def _setting_text(value: Any) -> str:
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_number(v) for v in value) or "–"
    return _number(value) if not isinstance(value, dict) else json.dumps(value, default=str)


def _setup(model: str | None, layer: str | None, precision: str | None, settings: Mapping[str, Any] | None) -> str:
    rows = [(name, value) for name, value in (("Model", model), ("Layer", layer), ("Precision", precision)) if value]
    rows += [(str(k), _setting_text(v)) for k, v in (settings or {}).items()]
    parts = ['<section id="setup"><h2>Model and settings</h2>']
    if rows:
        parts.append('<div class="scroll"><table class="kv">'
                     + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table></div>")
    if settings:
        text = _settings_json(settings)
        embedded = text.replace("</", "<\\/")  # "</" cannot close the script: JSON allows the escaped slash
        parts.append("<details><summary>The settings that reproduce this page, as JSON</summary>"
                     f'<pre id="settings-json">{_esc(text)}</pre></details>'
                     f'<script type="application/json" id="{SETTINGS_ID}">{embedded}</script>')
    parts.append("</section>")
    return "".join(parts)


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>' if body else ""


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Count columns ("images", "defective images") as integers, not 12.000."""
    frame = frame.copy()
    for column in frame.columns:
        if "images" in str(column) and pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].round().astype("Int64")
    return frame


def _worst_columns(worst: pd.DataFrame) -> pd.DataFrame:
    """The worst-images table for a reader: method first, by label; bookkeeping columns out."""
    from camcore.evaluation.summary import WORST_BY
    from camcore.report_sections import label

    shown = worst.assign(method=worst["method"].map(label))
    metric = str(worst["worst_by"].iloc[0])
    order = ["method", "image_id", "class_name", "defective", metric, *WORST_BY, "p_target"]
    return shown[[c for c in dict.fromkeys(order) if c in shown.columns]]


def _evaluation(sections: EvaluationSections, worst_images: Sequence[ReportImage], notes: Sequence[str],
                start: int) -> list[str]:
    flags = "".join(f'<p class="note">⚠ {_esc(m)}: {_esc(reason)}.</p>' for m, reason in sections.flags.items())
    summary = (f"<p>{sections.images} images, model {_esc(sections.model)}, layer {_esc(sections.layer)}. "
               "Localization over the defective images; faithfulness and time over every image.</p>"
               + _table(_counts(sections.summary), index=True) + flags)
    charts = "".join(_figure(f, start + n) for n, f in enumerate(sections.figures))
    worst = "" if sections.worst.empty else _table(_worst_columns(sections.worst))
    pictures = "".join(_image(image, "worst-image") for image in worst_images)
    worst += (f'<div class="worst">{pictures}</div>' if pictures else "") + "".join(
        f'<p class="note">{_esc(n)}</p>' for n in notes)
    skipped = "" if sections.skipped.empty else _table(sections.skipped)
    return [
        _section("summary", "Summary per method", summary),
        _section("best-thresholds", "Best global thresholds", _table(_counts(sections.thresholds))),
        _section("distributions", "Distributions and curves", charts),
        _section("worst", "Worst images per method", worst),
        _section("skipped", "Images that could not be read", skipped),
    ]


# ----------------------------------------------------------------------- the page
def report_html(
    *,
    title: str = "CAM Studio report",
    model: str | None = None,
    layer: str | None = None,
    precision: str | None = None,
    settings: Mapping[str, Any] | None = None,
    grid_png: bytes | None = None,
    grid_caption: str = "",
    timing_figure: Any = None,
    threshold_table: pd.DataFrame | None = None,
    results: pd.DataFrame | EvaluationSections | None = None,
    worst_images: Sequence[ReportImage] = (),
    worst_notes: Sequence[str] = (),
    figures: Sequence[ReportFigure] = (),
    notes: Sequence[str] = (),
    created: dt.datetime | None = None,
) -> str:
    """The report as one HTML document (see the module docstring). The Compare page passes
    its grid PNG, timing figure (plotly), threshold table and settings; the Dataset page an
    evaluation ``results`` table (summaries built here with :mod:`camcore.evaluation`; or the
    :class:`~camcore.report_sections.EvaluationSections` already made of it) and the
    thumbnails of its worst images; ``figures`` and ``notes`` add charts and remarks."""
    sections = evaluation_sections(results) if isinstance(results, pd.DataFrame) else results
    model = model or (sections.model if sections else None)
    layer = layer or (sections.layer if sections else None)
    created = created or dt.datetime.now().astimezone()
    from plotly.offline import get_plotlyjs

    body = [f"<header><h1>{_esc(title)}</h1><p class=\"meta\">Written {created:%Y-%m-%d %H:%M %Z} by CAM Studio. "
            "This file is self-contained: it opens offline and loads nothing from the network.</p></header>",
            "".join(f'<p class="note">{_esc(n)}</p>' for n in notes), _setup(model, layer, precision, settings)]
    if grid_png is not None:
        body.append(_section("grid", "Maps", _image(ReportImage(grid_caption or "The comparison grid", grid_png),
                                                    "grid-image")))
    if timing_figure is not None:
        body.append(_section("timing", "Compute time", _figure(ReportFigure("Compute time", timing_figure), 0)))
    if threshold_table is not None:
        body.append(_section("thresholds", "Threshold table", _table(threshold_table)))
    if sections is not None:
        body += _evaluation(sections, worst_images, worst_notes, start=1)
    if figures:
        body.append(_section("charts", "More charts", "".join(_figure(f, 1000 + n) for n, f in enumerate(figures))))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_STYLE}</style>"
            f'<script id="plotly-bundle">{get_plotlyjs()}</script></head><body>'
            + "".join(body) + "</body></html>\n")


def write_report(path: str | os.PathLike[str], **parts: Any) -> Path:
    """Write :func:`report_html` (``**parts``: its keyword arguments) to ``path``; return it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(report_html(**parts), encoding="utf-8")
    os.replace(temporary, path)
    return path


# ------------------------------------------------------------------ command line
def _run_settings(results_path: Path) -> dict[str, Any] | None:
    """The evaluation's configuration from the journal beside the results file, if it is there."""
    from camcore.evaluation.journal import journal_path

    journal = journal_path(results_path)
    try:
        with open(journal, encoding="utf-8") as handle:
            header = json.loads(handle.readline())
    except (OSError, json.JSONDecodeError):
        return None
    return header.get("config") if isinstance(header, dict) else None


def _map_maker(
    model_key: str, layer: str, config: Mapping[str, Any]
) -> Callable[[pd.Series, "LoadedImage"], np.ndarray | None]:
    """``compute_map`` for the worst images: the results' model, loaded once with the run's
    preprocessing and input size (ValueError when it cannot be loaded here, e.g. an
    in-memory model)."""
    from camcore.explainer import Explainer
    from camcore.loading import load_model

    size = config.get("input_size")  # used only by a model that accepts any size
    loaded = load_model(model_key, preprocessing=config.get("preprocessing"), input_size=tuple(size) if size else None)
    explainer = Explainer(loaded.model)

    def compute(row: pd.Series, image: "LoadedImage") -> np.ndarray | None:
        if str(row["method"]) in ("sobel", "random"):
            return None
        x = loaded.preprocess(image.image)
        return explainer.compute(str(row["method"]), x, layer, int(row["target_class"]), config.get("max_n")).cam

    return compute


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cam-studio report",
                                     description="Write a self-contained HTML report of an evaluation results file.")
    parser.add_argument("results", type=Path, help="results file of python -m camcore.evaluate (.parquet or .csv)")
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--data-root", action="append", default=[], metavar="DIR",
                        help="folder the evaluated images may be read from, for the worst images (repeatable); "
                        "generated sets need none")
    parser.add_argument("--worst", type=int, default=3, help="worst images per method (default 3)")
    parser.add_argument("--no-maps", action="store_true", help="worst images without their maps (no model load)")
    return parser


def _worst_pictures(sections: EvaluationSections, config: Mapping[str, Any] | None, roots: Sequence[str],
                    maps: bool) -> tuple[list[ReportImage], list[str]]:
    from camcore.report_sections import render_worst_images, row_opener

    notes: list[str] = []
    compute = None
    if maps and not sections.worst.empty:
        try:
            compute = _map_maker(sections.model, sections.layer, config or {})
        except (ValueError, FileNotFoundError) as exc:
            notes.append(f"The worst images are shown without their maps: the model could not be loaded ({exc}).")
    pictures, failed = render_worst_images(sections.worst, row_opener(roots), compute)
    return pictures, notes + failed


def main(argv: Sequence[str] | None = None) -> int:
    """``cam-studio report``: 0 when the report is written, 2 for a bad results file."""
    args = _parser().parse_args(argv)
    from camcore.evaluation.results import read_results

    try:
        table = read_results(args.results)
        sections = evaluation_sections(table, worst_n=args.worst)
    except (ValueError, OSError) as exc:
        print(f"error: {args.results}: {exc}", file=sys.stderr)
        return 2
    config = _run_settings(args.results)
    pictures, notes = _worst_pictures(sections, config, args.data_root, not args.no_maps)
    settings = {"results": str(args.results), **(config or {})}
    path = write_report(args.out, title=f"CAM Studio evaluation: {sections.model}", settings=settings,
                        precision=(config or {}).get("precision"), results=sections, worst_images=pictures,
                        worst_notes=notes)
    print(f"report: {path} ({path.stat().st_size / 2**20:.1f} MB, {len(pictures)} worst images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
