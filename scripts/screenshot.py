"""The README's screenshot: the Compare page with every method, at 1600×1000.

    python -m scripts.screenshot [--out assets/screenshot.png] [--full-page]

Serves the dashboard on a free local port, opens it in headless Chromium (Debian's
``/usr/bin/chromium`` or ``$CHROMIUM``), selects every registered method and saves the
picture once every column is drawn.
"""

from __future__ import annotations

import argparse

from tests import browser_helpers as browser


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="assets/screenshot.png")
    parser.add_argument("--height", type=int, default=1000, help="viewport height (e.g. 3000 for the whole page)")
    args = parser.parse_args(argv)
    with browser.serve() as url, browser.open_browser(1600, args.height) as (_, new_page):
        page = new_page()
        page.goto(url)
        browser.wait_full_grid(page)
        browser.select_all_methods(page)
        page.mouse.move(0, 0)
        page.screenshot(path=args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
