"""What the browser tests and benchmarks/ui.py share: where Chromium is, how it is started,
and how a browser context signs in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}
# What Chromium needs as root in a container with no network beyond this machine: without the
# background-networking flags it keeps trying to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Each new window (a browser context) otherwise builds the address bar's popup, a WebUI
    # page in a renderer of its own: about 1 CPU second per context, beside the page under
    # test on the same two cores. A headless window has no address bar to show it in.
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxFullPopup,WebUIOmniboxAimPopup",
]


def sign_in(context: Any, secret: str) -> None:
    """A session for `secret` in a browser context (its pages share the cookie), as the sign-in
    page opens one."""
    answer = context.request.post("/api/v1/sessions", data={"api_key": secret})
    assert answer.status == 201, answer.text()
