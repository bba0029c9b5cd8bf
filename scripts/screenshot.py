"""The README's screenshots of the Compare page, at 1600×1000.

    python -m scripts.screenshot [--out assets/screenshot.png] [--height 1000]
    python -m scripts.screenshot --second-model [--out assets/compare_two_models.png]

Serves the dashboard on a free local port, opens it in headless Chromium (Debian's
``/usr/bin/chromium`` or ``$CHROMIUM``) and saves the picture once every column is drawn:
by default with every registered method selected; with ``--second-model``, the default
demo against the next demo model ("Compare with a second model", the four default methods).
"""

from __future__ import annotations

import argparse

from tests import browser_helpers as browser


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="default: assets/screenshot.png, or "
                        "assets/compare_two_models.png with --second-model")
    parser.add_argument("--height", type=int, default=1000, help="viewport height (e.g. 3000 for the whole page)")
    parser.add_argument("--second-model", action="store_true", help="compare the default demo with a second model")
    args = parser.parse_args(argv)
    out = args.out or ("assets/compare_two_models.png" if args.second_model else "assets/screenshot.png")
    with browser.serve() as url, browser.open_browser(1600, args.height) as (_, new_page):
        page = new_page()
        page.goto(url)
        browser.wait_full_grid(page)
        if args.second_model:
            from camcore.methods import ORIGINAL_STUDY

            browser.switch_on_second_model(page)
            browser.wait_pair_grid(page, ORIGINAL_STUDY)
        else:
            browser.select_all_methods(page)
        page.mouse.move(0, 0)
        page.screenshot(path=out)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
