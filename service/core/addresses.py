"""Network addresses and web origins as values: `--trusted-proxies` and `--allowed-origins`
parsed once, by the settings that check them and the requests that use them."""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (scheme, host, port) with the scheme's default port filled in: two spellings of one
# origin (`http://a`, `http://A:80`) compare equal.
Origin = tuple[str, str, int]

DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=8)
def parse_networks(text: str | None) -> tuple[Network, ...]:
    """`10.0.0.1, 192.168.0.0/16, ::1` as networks; ValueError naming a bad entry."""
    networks = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
    return tuple(networks)


@functools.lru_cache(maxsize=8)
def parse_origins(text: str | None) -> frozenset[Origin]:
    """`https://ui.example:8443, http://localhost:3000` as origins; ValueError naming a bad entry."""
    origins = set()
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        origin = origin_of(part)
        if origin is None or urlsplit(part).path not in ("", "/"):
            raise ValueError(f"{part!r} is not an origin: expected http(s)://host[:port]")
        origins.add(origin)
    return frozenset(origins)


def origin_of(url: str) -> Origin | None:
    """The origin of a URL (an Origin or Referer header), or None when it has none (`null`)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]
