"""What the browser tests share: Debian's Chromium and a wait that works under the pages'
Content-Security-Policy.

Playwright's `wait_for_function` compiles its predicate with `new Function` inside the page,
which `script-src 'self'` (rightly) forbids; `page.evaluate` goes through the DevTools
protocol, which CSP does not govern, so the wait polls that instead."""

from __future__ import annotations

import shutil
import time

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def wait_until(page, expression: str, timeout: float = 15.0) -> None:
    """Poll a JavaScript expression until it is truthy, or fail with the expression named."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        time.sleep(0.1)
