"""A stand-in for the web hosts of the demo's takedown notices: one HTTPS server on 127.0.0.1 answering for
every host the notices name, with a throwaway certificate for those names (made with the `openssl` command).

Each URL path is served until its removal day, then answers 404 (or 410), deterministically from the URL, so
successive follow-up runs show notices being removed, re-notified and escalated. For `tipline notices demo`
and its test only: the follow-up job reaches it through `--connect-to`, `--allow-private-hosts` and
`--ca-file`, never by changing how real hosts are checked.
"""
import hashlib
import http.server
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

NEVER = 99


def removal_day(url):
    """Day (1, 2 or never) after the notice on which the demo host takes the content down."""
    bucket = hashlib.sha256(url.encode("utf-8")).digest()[0] % 10
    return 1 if bucket < 4 else 2 if bucket < 7 else NEVER


class DemoHosts:
    """Serves `urls` over HTTPS on 127.0.0.1; `day` (settable) decides what is still there."""

    def __init__(self, urls):
        self.paths = {urlsplit(url).path or "/": removal_day(url) for url in urls}
        self.hosts = sorted({urlsplit(url).hostname for url in urls})
        self.day = 0
        self.folder = tempfile.TemporaryDirectory(prefix="tipline-demo-hosts-")
        self.cert = Path(self.folder.name, "cert.pem")
        self._make_certificate()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, Path(self.folder.name, "key.pem"))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]

    def _make_certificate(self):
        names = ",".join(f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}" for host in self.hosts)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=tipline demo hosts", "-addext", f"subjectAltName={names}",
                        "-keyout", str(Path(self.folder.name, "key.pem")), "-out", str(self.cert)],
                       check=True, capture_output=True)

    def _handler(self):
        hosts = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                removed = hosts.paths.get(self.path.split("?")[0], 0) <= hosts.day
                self.send_response(404 if removed else 200)
                self.send_header("Content-Type", "text/plain" if removed else "image/jpeg")
                self.send_header("Content-Length", "0" if removed else "48213")
                self.end_headers()

        return Handler

    def connect_to(self):
        """--connect-to values sending every notice host's port 443 here."""
        return [f"{host}:443:127.0.0.1:{self.port}" for host in self.hosts]

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.folder.cleanup()
