"""Can this machine reach a download server? Asked before tfds downloads, so that a machine without network access
fails in seconds with a message saying how to prepare the data elsewhere, instead of after minutes of tfds's
retries and connection timeouts.

One TCP connection to the server of the first URL (or to the proxy that would carry it), with a timeout on the name
lookup and on the connection. Standard library only.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request

TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def connection_target(url: str) -> tuple[str, int]:
    """(host, port) a download of `url` connects to first: the proxy for its scheme, if one is set, else its server."""
    parsed = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parsed.hostname or "", parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 443)


def _resolve(host: str, port: int, timeout_s: float) -> list:
    """getaddrinfo with a timeout (it has none of its own, and an unreachable name server can take ~30 s)."""
    found: dict = {}

    def lookup():
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            found["error"] = error

    worker = threading.Thread(target=lookup, daemon=True)  # Daemon: a hung lookup does not hold the exit.
    worker.start()
    worker.join(timeout_s)
    if "error" in found:
        raise found["error"]
    if "addresses" not in found:
        raise TimeoutError(f"no answer to the name lookup within {timeout_s:.0f} s")
    return found["addresses"]


def unreachable_reason(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when a connection to the server of `url` (or its proxy) opens within timeout_s, else why it did not."""
    host, port = connection_target(url)
    try:
        last: OSError = ConnectionError("the name has no address")
        for family, kind, proto, _, address in _resolve(host, port, timeout_s):
            with socket.socket(family, kind, proto) as connection:
                connection.settimeout(timeout_s)
                try:
                    connection.connect(address)
                    return None
                except OSError as refused:
                    last = refused
        raise last
    except OSError as error:
        return f"{host}:{port}: {error.strerror or error}"
