"""Where subscription webhooks may go: public addresses only, unless the deployment allows an
internal receiver (`GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS`). Otherwise a consumer could make the
platform POST to its own network (a database on loopback, the sharing server itself, a
cloud metadata address) and read the answers back: a port scanner with the platform's reach.

The URL is checked when the subscription is made (`check_url`), and again at every delivery
where it counts: `transport` resolves the host once, checks every address it resolves to,
and connects to a checked address itself, so a name that resolves elsewhere later (DNS
rebinding) gets no request. Redirects are not followed (the sender's client) and proxies
from the environment are not used (a proxy would connect wherever it is told).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from govlake.core.errors import GovlakeError
from govlake.core.settings import Settings
from govlake.sharing.access import SharingError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Why an address is not public, in the order they are told (the first that fits).
_NOT_PUBLIC = (
    ("unspecified", "is_unspecified"),
    ("loopback", "is_loopback"),
    ("link-local", "is_link_local"),
    ("multicast", "is_multicast"),
    ("reserved", "is_reserved"),  # before private: Python counts 240.0.0.0/4 as both
    ("private", "is_private"),
)
_SETTING = "GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS"


class ReceiverRefused(GovlakeError):
    """The platform does not send webhooks to this address (raised while connecting)."""


@dataclass(frozen=True)
class Allowed:
    """The internal receivers a deployment allows: hosts (any port), host:port pairs and
    networks. Hosts are lower-case names or IP addresses as `ipaddress` writes them."""

    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowed:
        hosts: set[str] = set()
        host_ports: set[tuple[str, int]] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            try:
                if "/" in entry:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                    continue
                host, port = _host_port(entry)
            except ValueError as exc:
                raise ValueError(
                    f"{_SETTING}: {raw!r} is not a host, an IP address, a CIDR network or "
                    f"host:port ({exc})"
                ) from exc
            if port is None:
                hosts.add(host)
            else:
                host_ports.add((host, port))
        return cls(frozenset(hosts), frozenset(host_ports), tuple(networks))

    def names(self, host: str, port: int) -> bool:
        """Whether the URL's host (as written, any address) is allowed by name."""
        key = _canonical(host)
        return key in self.hosts or (key, port) in self.host_ports

    def covers(self, address: IPAddress, port: int) -> bool:
        """Whether this address is allowed though not public."""
        return (
            self.names(str(address), port)
            or any(address in network for network in self.networks)
            or (isinstance(address, ipaddress.IPv6Address) and self._mapped(address, port))
        )

    def _mapped(self, address: ipaddress.IPv6Address, port: int) -> bool:
        mapped = address.ipv4_mapped
        return mapped is not None and self.covers(mapped, port)


def _host_port(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `v6`, `[v6]` or `[v6]:port`."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError("text after the bracketed address")
        ipaddress.IPv6Address(host)
        return _canonical(host), _port(rest[1:]) if rest else None
    if entry.count(":") > 1:  # a bare IPv6 address
        return _canonical(str(ipaddress.IPv6Address(entry))), None
    host, colon, port = entry.partition(":")
    if not host:
        raise ValueError("no host")
    return _canonical(host), _port(port) if colon else None


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return port


def _canonical(host: str) -> str:
    host = host.strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def allowed(settings: Settings) -> Allowed:
    return Allowed.parse(settings.webhook_allowed_receivers)


def _embedded(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to: IPv4-mapped or 6to4. (NAT64's 64:ff9b::/96
    lies in ::/8, reserved: refused as such.)"""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address.sixtofour


def not_public(address: IPAddress) -> str | None:
    """Why `address` is not a public address (`loopback`, `private`, …), or None. An IPv6
    address that carries an IPv4 one (IPv4-mapped, 6to4) is judged by that one too."""
    inner = _embedded(address) if isinstance(address, ipaddress.IPv6Address) else None
    if inner is not None and (reason := not_public(inner)) is not None:
        return reason
    for reason, attribute in _NOT_PUBLIC:
        if getattr(address, attribute):
            return reason
    return None if address.is_global else "not globally routable"


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses `host` resolves to, in the resolver's order (an IP address: itself)."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _refusals(
    rules: Allowed, host: str, port: int, addresses: Sequence[IPAddress]
) -> list[tuple[IPAddress, str]]:
    if rules.names(host, port):
        return []
    return [
        (address, reason)
        for address in addresses
        if (reason := not_public(address)) is not None and not rules.covers(address, port)
    ]


def check_url(settings: Settings, url: str) -> None:
    """Refuse (`SharingError`) a webhook URL whose host is not a public receiver: an IP
    address that is not global, or a name that does not resolve to global addresses only;
    unless the deployment allows it. Call it on a URL that is already an http(s) URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    rules = allowed(settings)
    hint = (
        "webhooks go to public addresses only (an operator may allow an internal receiver "
        f"with {_SETTING})"
    )
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        refused = _refusals(rules, host, port, [literal])
        if refused:
            raise SharingError(f"webhook URL {url!r} names a {refused[0][1]} address: {hint}")
        return
    if rules.names(host, port):
        return
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):
        addresses = []
    if not addresses or _refusals(rules, host, port, addresses):
        # The same answer whether the name resolves to an internal address or not at all:
        # which internal names exist is no business of the consumer.
        raise SharingError(
            f"webhook URL {url!r}: {host} does not resolve to public addresses only: {hint}"
        )


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to checked addresses: the host is resolved here, once per connection,
    every address is checked, and the socket is opened to one of those addresses."""

    def __init__(self, rules: Allowed) -> None:
        self._rules = rules
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        refused = _refusals(self._rules, host, port, addresses)
        if refused:
            named = ", ".join(f"{address} ({reason})" for address, reason in refused)
            raise ReceiverRefused(f"{host} resolves to an address that is not public: {named}")
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise ReceiverRefused("webhooks are not sent to unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over `_PinnedBackend`. httpx takes no network backend, so the
    connection pool it builds is replaced by one that has it (same TLS checks: the
    certificate is verified against the URL's host name, not the address)."""

    def __init__(self, rules: Allowed) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_PinnedBackend(rules)
        )


def transport(settings: Settings) -> httpx.HTTPTransport:
    """The transport webhooks are sent through (give it to `httpx.Client(transport=…)`,
    which then also ignores proxy variables)."""
    return PinnedTransport(allowed(settings))
