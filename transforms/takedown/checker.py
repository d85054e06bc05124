"""Is the content still there? One careful HTTP look at a notice's URL, never a download.

HEAD first, then (when HEAD says nothing useful) a GET for the first byte only (`Range: bytes=0-0`), whose
body is never read. Each hop is resolved once and connected to by address (so DNS cannot answer one thing
to the check and another to the connection), and refused when the address is loopback, private,
link-local, reserved or a cloud metadata address, unless that exact address:port is allowed (the tests'
local server). Redirects are followed by hand, each hop checked the same way, up to `MAX_REDIRECTS`.
Every check ends within `timeout_seconds` per hop, whatever the server does (hangs, drips, resets, sends
a huge header): a server that does not answer is `unreachable`, never `removed`.

Outcomes: `removed` (404 or 410), `available` (2xx, with the content type and length it declared),
`unreachable` (timeout, reset, refused, 5xx, an access refusal, a redirect loop, a malformed answer), and
`not_checkable` (the URL or a redirect target is one a machine must not fetch, with the reason).
"""
import dataclasses
import http.client
import ipaddress
import socket
import ssl
import threading
from urllib.parse import quote, urljoin, urlsplit

from transforms.takedown.urls import parse_url

MAX_REDIRECTS = 5
USER_AGENT = "tipline-takedown-check/1 (clearinghouse takedown follow-up; contact via the notice's sender)"
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})


@dataclasses.dataclass(frozen=True)
class CheckResult:
    status: str               # removed | available | unreachable | not_checkable
    reason: str
    http_status: int | None = None
    content_type: str | None = None
    content_length: int | None = None


@dataclasses.dataclass
class CheckPolicy:
    """How checks behave: per-hop timeout, the exact address:port pairs that may be private (tests and the
    local demo only), where to connect instead of DNS (like curl's --connect-to: "host:port" -> (address,
    port)), and extra certificate authorities to trust (a file of PEM certificates)."""
    timeout_seconds: float = 5.0
    allowed_private: frozenset = frozenset()
    connect_to: dict = dataclasses.field(default_factory=dict)
    ca_file: str | None = None
    user_agent: str = USER_AGENT


class Refused(Exception):
    """A hop a machine must not fetch: the check is `not_checkable`."""


def check_url(url, policy):
    """The `CheckResult` of one URL (see the module docstring); never raises for what a server does."""
    seen = set()
    for _ in range(MAX_REDIRECTS + 1):
        if url in seen:
            return CheckResult("unreachable", "redirect loop")
        seen.add(url)
        try:
            answer = _look(url, policy)
        except Refused as refused:
            return CheckResult("not_checkable", str(refused))
        except (OSError, http.client.HTTPException, ssl.SSLError, ValueError) as error:
            return CheckResult("unreachable", _failure_reason(error))
        status, headers = answer
        if status in (301, 302, 303, 307, 308) and headers.get("location"):
            url = urljoin(url, headers["location"])
            continue
        return _verdict(status, headers)
    return CheckResult("unreachable", f"more than {MAX_REDIRECTS} redirects")


def _failure_reason(error):
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, http.client.HTTPException):
        return f"malformed answer ({type(error).__name__})"
    return f"{type(error).__name__}"


def _verdict(status, headers):
    length = headers.get("content-length")
    length = int(length) if length and length.isdigit() else None
    content_range = headers.get("content-range", "")
    if content_range.rpartition("/")[2].isdigit():
        length = int(content_range.rpartition("/")[2])  # a ranged answer: the whole length is after the slash
    content_type = (headers.get("content-type") or "").split(";")[0].strip().lower() or None
    if status in (404, 410):
        return CheckResult("removed", f"HTTP {status}", status)
    if 200 <= status < 300:
        return CheckResult("available", f"HTTP {status}", status, content_type, length)
    if status in (401, 403, 451):
        return CheckResult("unreachable", f"access refused (HTTP {status})", status)
    return CheckResult("unreachable", f"HTTP {status}", status)


def _look(url, policy):
    """(status, lower-case headers) of HEAD, or of a first-byte GET when HEAD is refused or says nothing."""
    parsed = parse_url(url)
    if parsed.not_checkable:
        raise Refused(parsed.not_checkable)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address, port = _address(parsed.host, port, policy)
    status, headers = _request("HEAD", url, parsed, address, port, policy)
    if status in (405, 501) or (200 <= status < 300 and not headers.get("content-type")):
        status, headers = _request("GET", url, parsed, address, port, policy)
    return status, headers


def _address(host, port, policy):
    """(address, port) this hop connects to, refused when a machine must not fetch it."""
    fixed = policy.connect_to.get(f"{host}:{port}")
    if fixed:
        (candidates, port) = [fixed[0]], fixed[1]
    else:
        try:
            candidates = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        except (OSError, UnicodeError) as error:
            raise OSError(f"name does not resolve ({type(error).__name__})") from None
    for candidate in candidates:
        address = ipaddress.ip_address(candidate.split("%")[0])
        forbidden = _forbidden(address)
        if forbidden and f"{address}:{port}" not in policy.allowed_private:
            raise Refused(f"resolves to a {forbidden} address")
    return candidates[0], port


def _forbidden(address):
    """What kind of address a check must never reach, or None."""
    if str(address) in METADATA_ADDRESSES:
        return "cloud metadata"
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if address in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (carrier-grade NAT)"
    return None


def _request(method, url, parsed, address, port, policy):
    """One request to `address` (Host and SNI are the URL's host); the body is never read."""
    if parsed.scheme == "https":
        connection = _PinnedHTTPSConnection(parsed.host, port, address, timeout=policy.timeout_seconds,
                                            ca_file=policy.ca_file)
    else:
        connection = _PinnedHTTPConnection(parsed.host, port, address, timeout=policy.timeout_seconds)
    deadline = threading.Timer(policy.timeout_seconds * 2, connection.abort)  # a server that drips bytes
    deadline.start()
    try:
        headers = {"User-Agent": policy.user_agent, "Accept": "*/*"}
        if method == "GET":
            headers["Range"] = "bytes=0-0"
        connection.request(method, _target(url), headers=headers)
        response = connection.getresponse()
        if connection.aborted:
            raise socket.timeout("timed out")
        return response.status, {key.lower(): value for key, value in response.getheaders()}
    except OSError:
        if connection.aborted:
            raise socket.timeout("timed out") from None
        raise
    finally:
        deadline.cancel()
        connection.close()


def _target(url):
    """The request target of a URL: path and query, percent-encoded where it is not ASCII."""
    parts = urlsplit(url)
    return quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe="/?&=%:@!$'()*+,;~-._")


class _Pinned:
    """Connects to a resolved address while speaking to the URL's host name."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.aborted = False

    def _socket(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        return self.sock

    def abort(self):
        self.aborted = True
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _PinnedHTTPConnection(_Pinned, http.client.HTTPConnection):
    def connect(self):
        self._socket()


class _PinnedHTTPSConnection(_Pinned, http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout, ca_file=None):
        super().__init__(host, port, address, timeout)
        self.ca_file = ca_file

    def connect(self):
        context = ssl.create_default_context(cafile=self.ca_file)
        self.sock = context.wrap_socket(self._socket(), server_hostname=self.host)

