"""What a notice can say about the URL of publicly available content: its host, and whether a machine may
check it.

Hosts are parsed strictly: a URL a host could act on has an http(s) scheme, an ASCII host name or IP
address made of the characters a host can hold, and fits in 2 KB. Anything else is still a notice (an
analyst can read it), but `not_checkable`, with the reason, and its host is never guessed at or copied.
"""
import dataclasses
import ipaddress
import re
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
CHECKABLE_SCHEMES = ("http", "https")
HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


@dataclasses.dataclass(frozen=True)
class ParsedUrl:
    """A URL's scheme, host (lower case; None when it has none a notice could name) and port, and why a
    machine may not check it (None: it may)."""
    scheme: str | None
    host: str | None
    port: int | None
    not_checkable: str | None

    @property
    def host_is_ip(self):
        return self.host is not None and _ip(self.host) is not None


def parse_url(url):
    """The strict reading of a `locationOfFile` value (see the module docstring)."""
    if not isinstance(url, str) or not url.strip():
        return ParsedUrl(None, None, None, "no URL")
    if len(url) > MAX_URL_CHARS:
        return ParsedUrl(None, None, None, f"URL longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        raw_host, port = _raw_host(parts.netloc), parts.port
    except ValueError as error:
        return ParsedUrl(None, None, None, f"URL cannot be parsed ({type(error).__name__})")
    scheme = parts.scheme.lower() or None
    host, problem = _checked_host(raw_host)
    if host is None:
        return ParsedUrl(scheme, None, port, problem)
    if scheme not in CHECKABLE_SCHEMES:
        return ParsedUrl(scheme, host, port, f"scheme {scheme!r} is not http or https" if scheme else "no scheme")
    return ParsedUrl(scheme, host, port, problem)


def _raw_host(netloc):
    """The host part of a netloc exactly as written (no decoding, no lower-casing yet)."""
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[1:host.index("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _checked_host(raw):
    """(host, problem): the lower-case host, or None when it is missing or holds what no host can; an IDN
    host is named but not checked (its Unicode form could spoof another)."""
    if not raw:
        return None, "no host"
    ip = _ip(raw)
    if ip is not None:
        return str(ip), None
    if not raw.isascii():
        return None, "host is not ASCII (an internationalised name): an analyst checks it"
    host = raw.lower().rstrip(".")
    if not HOST_NAME.match(host):
        return None, "host holds characters a host name cannot"
    if any(label.startswith("xn--") for label in host.split(".")):
        return host, "punycode (internationalised) host: an analyst checks it"
    return host, None


def _ip(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
