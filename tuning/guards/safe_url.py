"""Where a shared app may send a request whose address a visitor typed: public hosts only.

A base URL is checked after DNS (every address the name resolves to) and again for every request, so a
redirect can't lead there either; the request then goes to the address that was checked, so a DNS answer
that changes in between (DNS rebinding) can't either. Refused: loopback, private, link-local (the cloud
metadata service), shared (CGNAT), multicast, reserved and unspecified addresses, and those hidden in IPv6
(IPv4-mapped, 6to4, Teredo, NAT64). The owner may open chosen internal endpoints with
KANTELE_ALLOWED_ENDPOINTS=host:port,... (e.g. a vLLM server beside the app).

gradio's safehttpx does the same for async GETs only; the openai client needs a sync transport for POSTs.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import httpx2

from tuning.errors import KanteleError

ALLOWED_ENDPOINTS_ENV = "KANTELE_ALLOWED_ENDPOINTS"
# Names of cloud metadata services, refused before DNS (the addresses they resolve to are refused too).
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
# NAT64 gateways forward 64:ff9b::a.b.c.d to the IPv4 address a.b.c.d: judge it by that address.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
DEFAULT_PORTS = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(KanteleError, ValueError):  # noqa: N818 -- named for what the visitor sees
    """A URL points into this app's own network; the message names the host and how the owner may allow it."""


def allowed_endpoints() -> set[tuple[str, int]]:
    """The (host, port) pairs the owner opened with KANTELE_ALLOWED_ENDPOINTS, hosts in lower case."""
    allowed = set()
    for entry in filter(None, (part.strip() for part in os.environ.get(ALLOWED_ENDPOINTS_ENV, "").split(","))):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise AddressRefused(f"{ALLOWED_ENDPOINTS_ENV} entry '{entry}' is not host:port -- write e.g. "
                                 "127.0.0.1:8000 or [::1]:8000, several separated by commas")
        allowed.add((_bare(host), int(port)))
    return allowed


def _bare(host: str) -> str:
    """A host as compared: lower case, no IPv6 brackets, no trailing dot."""
    return host.strip().strip("[]").rstrip(".").lower()


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, Teredo client, NAT64); None if none."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)


def is_public(address: Address) -> bool:
    """True for an address on the public internet; an IPv6 address carrying an IPv4 one is judged by that."""
    address = embedded_ipv4(address) or address
    # is_global alone lets multicast and (in Python < 3.13) some reserved and site-local ranges through.
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_loopback
                                      or address.is_link_local or address.is_private or address.is_unspecified
                                      or getattr(address, "is_site_local", False))


def public_addresses(host: str, port: int) -> list[str] | None:
    """Every address host resolves to, when all are public (to connect to one of them); None when the owner
    allowed host:port as it is. AddressRefused otherwise, and OSError when the name doesn't resolve."""
    name = _bare(host)
    if not name:  # getaddrinfo("") may mean this machine
        raise ValueError("the URL names no host")
    if (name, port) in allowed_endpoints():
        return None
    if name in METADATA_HOSTS:
        raise AddressRefused(_refusal(host, port, "is a cloud metadata service"))
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    addresses = [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%")[0])  # drop an IPv6 zone ("fe80::1%eth0")
        except ValueError:
            raise AddressRefused(_refusal(host, port, "resolves to something not an IP address")) from None
        if not is_public(address):
            # Not which address: that would make the app a lookup service for its own network's names.
            where = "" if _literal(name) == address else "resolves to an address that "
            raise AddressRefused(_refusal(host, port, f"{where}is not a public internet address"))
    if not addresses:
        raise AddressRefused(_refusal(host, port, "has no IPv4 or IPv6 address"))
    return list(dict.fromkeys(addresses))


def _literal(name: str) -> Address | None:
    """The IP address a host name spells, if it is one."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _refusal(host: str, port: int, why: str) -> str:
    endpoint = f"[{_bare(host)}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"'{host}' {why}: this app is shared, so it only calls public endpoints -- use a public URL, or (the "
            f"app's owner) allow this one with {ALLOWED_ENDPOINTS_ENV}={endpoint}")


def check_url(url: str) -> None:
    """AddressRefused unless url's host is public or allowed (OSError when it doesn't resolve, ValueError when
    it isn't a URL); connects nowhere."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as error:
        raise ValueError(f"not a URL: {error}") from None
    public_addresses(parsed.host, parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0))


class ReplyTooLarge(httpx2.ReadError):
    """An endpoint's reply went past this app's cap on reply size; the message says so and what to do."""


class _CappedStream(httpx2.SyncByteStream):
    """A reply body that stops being read once it passes `limit` bytes: a visitor's endpoint could otherwise
    stream gigabytes into the server's memory (the client reads a whole reply before parsing it)."""

    def __init__(self, inner: httpx2.SyncByteStream, limit: int, request: httpx2.Request) -> None:
        self._inner, self._limit, self._request = inner, limit, request

    def __iter__(self):
        read = 0
        for chunk in self._inner:
            read += len(chunk)
            if read > self._limit:
                raise ReplyTooLarge(f"the endpoint's reply passed {self._limit / 2**20:,.0f} MB, this app's limit -- "
                                    "ask for fewer pairs per batch, or use another endpoint", request=self._request)
            yield chunk

    def close(self) -> None:
        """Close the underlying stream."""
        self._inner.close()


class PublicOnlyTransport(httpx2.BaseTransport):
    """An httpx2 transport that checks every request's host (redirects included) before connecting, then
    connects to the address it checked; the Host header, TLS name (SNI) and certificate check keep the name."""

    def __init__(self, inner: httpx2.BaseTransport | None = None, max_reply_bytes: int | None = None) -> None:
        self._inner = inner or httpx2.HTTPTransport()
        self._max_reply_bytes = max_reply_bytes

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Refuse (AddressRefused) or send the request to the checked address."""
        url = request.url
        try:
            addresses = public_addresses(url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0))
        except OSError as exc:  # the name doesn't resolve: a connection error, as the client would have raised
            raise httpx2.ConnectError(f"can't resolve '{url.host}': {exc}", request=request) from None
        if addresses is None:
            return self._capped(self._inner.handle_request(request), request)
        # A new request, not the visitor's one edited: the client builds redirects from the request it sent.
        pinned = httpx2.Request(request.method, url.copy_with(host=addresses[0]), headers=request.headers,
                                stream=request.stream, extensions={**request.extensions, "sni_hostname": url.host})
        return self._capped(self._inner.handle_request(pinned), request)

    def _capped(self, response: httpx2.Response, request: httpx2.Request) -> httpx2.Response:
        if self._max_reply_bytes is not None:
            response.stream = _CappedStream(response.stream, self._max_reply_bytes, request)
        return response

    def close(self) -> None:
        """Close the pooled connections."""
        self._inner.close()
