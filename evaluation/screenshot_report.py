"""A screenshot of a report as a browser shows it: headless Chromium (Debian's ``chromium`` package).

Usage::

    python -m evaluation.screenshot_report REPORT_DIR/report.html --out report.png [--width 1280] [--height 2000]

Look at the PNG: thumbnails one size, prompts cut to three lines, table and plot above the samples.
Install the browser with ``apt-get install -y chromium`` (about 30 s here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from typing import Sequence

from evaluation.errors import EvaluationError, run_cli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: str, png_path: str, width: int = 1280, height: int = 2000, browser: str | None = None,
               timeout: float = 120) -> str:
    """Render ``html_path`` in headless Chromium at ``width`` x ``height`` CSS pixels into ``png_path``."""
    browser = browser or find_browser()
    if browser is None:
        raise EvaluationError(f"no Chromium found (looked for {', '.join(BROWSERS)}): apt-get install -y chromium")
    if not os.path.isfile(html_path):
        raise EvaluationError(f"report not found: {html_path}")
    png_path = os.path.abspath(png_path)
    if os.path.exists(png_path):
        os.remove(png_path)  # so that an old screenshot is never taken for this one
    # A profile of its own: no state from (or to) a user's browser, and it works as root (--no-sandbox).
    with tempfile.TemporaryDirectory(prefix="t2i-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--force-device-scale-factor=1", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--screenshot={png_path}", "file://" + os.path.abspath(html_path)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EvaluationError(f"{browser} did not finish the screenshot in {timeout:.0f} s") from None
    if not os.path.isfile(png_path):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EvaluationError(f"{browser} wrote no screenshot (exit {proc.returncode}): {last}")
    return png_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.screenshot_report", description=__doc__.split("\n")[0])
    p.add_argument("html", help="report.html")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2000)
    args = p.parse_args(argv)
    print(screenshot(args.html, args.out, args.width, args.height))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
