"""The one-time sign-in link `crucible serve` prints for the local user, as Jupyter prints its
token URL: it opens a browser session for the admin key once, within ten minutes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from service.core.one_time_tokens import OneTimeTokens
from service.resources.credentials import key_for_secret
from service.resources.fold import Resources
from service.resources.keys import ADMIN_KEY_FILE
from service.settings import Settings

SIGN_IN_LINK_PATH = "/sign-in/link"
SIGN_IN_LINK_SECONDS = 600


def local_sign_in_link(settings: Settings, state: Resources, links: OneTimeTokens[str]) -> str | None:
    """A new link for the admin key kept in the data directory; None if there is none, or it
    was revoked (the user then signs in with a key of their own)."""
    path = Path(settings.data_path) / ADMIN_KEY_FILE
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    key = key_for_secret(state, secret)
    if key is None:
        return None
    token = links.issue(key.id, SIGN_IN_LINK_SECONDS)
    return f"{_base_url(settings)}{SIGN_IN_LINK_PATH}?token={token}"


def _base_url(settings: Settings) -> str:
    host = settings.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{settings.port}"  # a name
    if address.is_unspecified:  # listening on every address: this machine's loopback reaches it
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{settings.port}"
