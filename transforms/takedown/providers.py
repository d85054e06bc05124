"""Who a notice goes to: the provider that hosts the content, and where it is hosted.

The provider of a named host is its registrable domain (the Public Suffix List, shipped offline by
`publicsuffixlist`): `cdn3.files.example.co.uk` -> `example.co.uk`. The provider of an IP-address host is
the organisation that announces it (the ASN database), else `AS<number>`, else `ip:<address>`. The
hosting country comes from the GeoIP City database for an IP host, or for a name when a resolver is
configured (none by default: a notice must not wait on DNS); unknown stays unknown.
"""
import functools
import socket

from publicsuffixlist import PublicSuffixList


@functools.cache
def _suffix_list():
    return PublicSuffixList()


def registrable_domain(host):
    """`example.co.uk` for `a.b.example.co.uk`; the host itself when it is a public suffix or has none."""
    return _suffix_list().privatesuffix(host) or host


def provider_of(parsed, network):
    """The provider to notify for a `ParsedUrl` (None when it names no host); `network` is the ASN lookup of
    an IP host ({"asn", "asOrganization"}), or None."""
    if parsed.host is None:
        return None
    if not parsed.host_is_ip:
        return registrable_domain(parsed.host)
    network = network or {}
    if network.get("asOrganization"):
        return network["asOrganization"]
    if network.get("asn"):
        return f"AS{network['asn']}"
    return f"ip:{parsed.host}"


class SystemResolver:
    """Resolves host names with the system resolver, once per name per worker (a pluggable resolver: any
    object with `address_of(host) -> str | None`)."""

    def __init__(self, timeout_seconds=2.0):
        self.timeout_seconds = timeout_seconds
        self.address_of = functools.lru_cache(maxsize=65536)(self._address_of)

    def _address_of(self, host):
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.timeout_seconds)
        try:
            return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
        except (OSError, UnicodeError, IndexError):
            return None
        finally:
            socket.setdefaulttimeout(previous)
