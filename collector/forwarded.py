"""Forwarded headers: the browser's host, scheme and address behind a reverse proxy.

A proxy that terminates TLS forwards what the browser asked for in ``Forwarded`` (RFC 7239)
or in ``X-Forwarded-Host``/``-Proto``/``-For`` (the de-facto headers nginx and others set).
Anyone can send those headers, so :func:`via` reads them only on connections from the
addresses a web UI trusts as its proxies; from anywhere else they are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import Message

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: a host name or address with an optional port, as ``Host`` carries it
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?$")
#: one ``name=value`` pair of a ``Forwarded`` header and what follows it (RFC 7239 section 4)
_FORWARDED_PAIR = re.compile(r'\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)=("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*([;,]|$)')


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``); ValueError naming a bad one."""
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return tuple(out)


def _address(text: str | None) -> str | None:
    """The IP address in a ``for=`` node or an ``X-Forwarded-For`` entry (port and brackets off)."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:4711
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # 192.0.2.4:4711
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None  # "unknown", an obfuscated "_node", or garbage


def _trusted(address: str | None, trusted: Sequence[Network]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in trusted)


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` header, nearest proxy last; [] when it is malformed."""
    elements: list[dict[str, str]] = [{}]
    pos = 0
    while pos < len(value):
        m = _FORWARDED_PAIR.match(value, pos)
        if m is None:
            return []
        name, raw, sep = m.group(1).lower(), m.group(2), m.group(3)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elements[-1][name] = raw
        if sep == ",":
            elements.append({})
        pos = m.end()
        if not sep:
            break
    return [e for e in elements if e]


@dataclass(frozen=True)
class Via:
    """Who asked, under which name: as a trusted proxy tells it, else as the connection says."""

    client: str  # the browser's address (the peer's, unless a trusted proxy named another)
    host: str  # the host[:port] the browser asked for
    scheme: str  # "http" or "https"
    forwarded_host: bool  # ``host`` came from a trusted proxy, not from ``Host``


def via(peer: str, headers: Message[str, str], trusted: Sequence[Network]) -> Via:
    """The request's origin, honouring forwarded headers only from ``trusted`` peers.

    The chain of addresses is read from the right (the nearest proxy's entry) past every
    trusted proxy; the first address that is not one is the client, and its hop's ``host``
    and ``proto`` are the ones the browser used. ``X-Forwarded-Host``/``-Proto``: their last
    value (what the nearest proxy set). ``Forwarded`` is preferred when both are sent.
    """
    own = Via(peer, headers.get("Host", ""), "http", False)
    if not _trusted(peer, trusted):
        return own
    client, host, proto = peer, None, None
    forwarded = parse_forwarded(", ".join(headers.get_all("Forwarded") or []))
    if forwarded:
        hop: dict[str, str] = {}
        for hop in reversed(forwarded):
            address = _address(hop.get("for"))
            if address is None:
                break
            client = address
            if not _trusted(address, trusted):
                break
        host, proto = hop.get("host"), hop.get("proto")
    else:
        chain = [a for h in headers.get_all("X-Forwarded-For") or [] for a in h.split(",") if a.strip()]
        for entry in reversed(chain):
            address = _address(entry)
            if address is None:
                break
            client = address
            if not _trusted(address, trusted):
                break
        host = _last(headers.get_all("X-Forwarded-Host"))
        proto = _last(headers.get_all("X-Forwarded-Proto"))
    scheme = proto.strip().lower() if proto and proto.strip().lower() in ("http", "https") else "http"
    if host and _HOST.match(host.strip()):
        return Via(client, host.strip(), scheme, True)
    return Via(client, own.host, scheme, False)


def _last(values: list[str] | None) -> str | None:
    items = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    return items[-1] if items else None
