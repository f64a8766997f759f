"""Browser origins: what ``ALLOWED_ORIGINS`` accepts and how a request's ``Origin`` matches.

An origin is ``scheme://host[:port]`` (RFC 6454). Two spellings of one origin
are equal once serialized as browsers do: scheme and host in lower case,
an international host in its ASCII (punycode) form, the scheme's default port
left out. So ``HTTPS://App.Example.com:443`` in the setting matches the
``https://app.example.com`` a browser sends.

An entry may start its host with ``*.`` to allow every subdomain, at any
depth, of the rest (``https://*.example.com`` allows ``https://a.example.com``
and ``https://a.b.example.com``, not ``https://example.com``: list that too).
A wildcard anywhere else, a path, a query, a user name, a bad port or
characters no host has can never match a browser's ``Origin``, so they are
refused when the setting is read.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["normalize_origin", "origin_matches"]

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def normalize_origin(text: str, *, wildcard: bool = False) -> str:
    """The serialized form of the origin ``text``; ``ValueError`` if it is not one.

    ``wildcard``: allow a leading ``*.`` label (a setting's entry, not a request's).
    """
    if text == "null":  # what sandboxed frames and file:// pages send
        return text
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError("not an origin like https://app.example.com")
    if rest.endswith("/") and "/" not in rest[:-1]:
        raise ValueError("an origin has no path; drop the trailing '/'")
    if any(char in rest for char in "/?#"):
        raise ValueError("an origin has no path, query or fragment")
    if "@" in rest:
        raise ValueError("an origin has no user name")
    if rest.startswith("["):  # an IPv6 literal
        host, bracket, port = rest[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError("an IPv6 host is written [2001:db8::1]")
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        port = port[1:]
    else:
        host, _, port = rest.partition(":")
        host = _hostname(host, wildcard=wildcard)
    if port:
        if not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{port!r} is not a port from 1 to 65535")
        port = str(int(port))
        if _DEFAULT_PORTS.get(scheme) == port:
            port = ""  # https://a.com:443 is https://a.com
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def _hostname(host: str, *, wildcard: bool) -> str:
    prefix = ""
    if wildcard and host.startswith("*."):
        prefix, host = "*.", host[2:]
    if "*" in host:
        raise ValueError(
            "a wildcard can only be the whole first label, as in https://*.example.com"
        )
    try:
        # lower case, and an international name in the ASCII form browsers send
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"{host!r} is not a host name") from None
    labels = ascii_host.split(".")
    if not ascii_host or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} is not a host name")
    return prefix + ascii_host


def origin_matches(origin: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's ``Origin`` is one of ``allowed`` (entries as `normalize_origin`
    returned them, wildcards included)."""
    if origin in allowed:  # what a browser sends is already serialized
        return True
    try:
        origin = normalize_origin(origin)
    except ValueError:
        return False
    if origin in allowed:
        return True
    for entry in allowed:
        prefix, star, suffix = entry.partition("*")
        if star and origin.startswith(prefix) and origin.endswith(suffix):
            labels = origin[len(prefix) : len(origin) - len(suffix)]
            # at least one label, and nothing but labels (no port, no bracket)
            if labels and not any(char in labels for char in ":[]"):
                return True
    return False
