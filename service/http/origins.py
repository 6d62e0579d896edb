"""Where a request comes from: the scheme, host and address its client used, and
whether a browser page's Origin is this service's own.

Behind a reverse proxy that terminates TLS, the connection the service sees is the
proxy's, in plain HTTP. The proxy's `X-Forwarded-Proto`, `-Host` and `-For` headers say
what the client used, but any client can send those headers too: they are believed only
on connections from an address of `--trusted-proxies` (none by default).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aiohttp import web

from service.core.addresses import DEFAULT_PORTS, Network, Origin, origin_of, parse_networks, parse_origins
from service.http.appkeys import SETTINGS

# A Host header's value: a name or IPv4 address, or a bracketed IPv6 address, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_VIEW: web.RequestKey[ClientView] = web.RequestKey("client_view")


@dataclass(frozen=True, slots=True)
class ClientView:
    """The request as its client made it: `scheme` and `host` (host[:port]) of the URL it
    asked for, and its `address` (None when the transport does not say)."""

    scheme: str
    host: str
    address: str | None


def client_view(request: web.Request) -> ClientView:
    """The scheme, host and address the client used, through trusted proxies' headers."""
    view = request.get(_VIEW)
    if view is None:
        view = request[_VIEW] = _view_of(request)
    return view


def _view_of(request: web.Request) -> ClientView:
    peer = request.remote
    view = ClientView(request.scheme, request.host, peer)
    networks = parse_networks(request.app[SETTINGS].trusted_proxies)
    if not networks or not _within(peer, networks):
        return view
    headers = request.headers
    # With several proxies, each one's value is appended: the last is the one the proxy
    # that connected to us wrote, the only one whose author we know.
    proto = _last(headers.get("X-Forwarded-Proto")).lower()
    host = _last(headers.get("X-Forwarded-Host"))
    return ClientView(
        proto if proto in DEFAULT_PORTS else view.scheme,
        host if _HOST.fullmatch(host) else view.host,
        _forwarded_for(headers.get("X-Forwarded-For"), peer, networks),
    )


def _last(header: str | None) -> str:
    return (header or "").rpartition(",")[2].strip()


def _within(address: str | None, networks: tuple[Network, ...]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _forwarded_for(header: str | None, peer: str | None, networks: tuple[Network, ...]) -> str | None:
    """The client's address: the last hop of X-Forwarded-For that is not a trusted proxy
    (earlier hops were written by whoever sent the request, and prove nothing)."""
    hops = [h.strip() for h in (header or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _within(hop, networks):
            return hop
    return hops[0] if hops else peer


def is_https(request: web.Request) -> bool:
    """Whether the client reached the service over TLS (directly, or through a trusted proxy)."""
    return client_view(request).scheme == "https"


def own_origin(request: web.Request) -> Origin | None:
    view = client_view(request)
    return origin_of(f"{view.scheme}://{view.host}")


def origin_allowed(request: web.Request, url: str) -> bool:
    """Whether a page at `url` (an Origin or Referer) is this service's own, or one of
    `--allowed-origins` (a UI served from another port or host)."""
    origin = origin_of(url)
    if origin is None:
        return False
    return origin == own_origin(request) or origin in parse_origins(request.app[SETTINGS].allowed_origins)


def describe(origin: Origin | None) -> str:
    if origin is None:
        return "unknown"
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if DEFAULT_PORTS[scheme] == port else f":{port}")
