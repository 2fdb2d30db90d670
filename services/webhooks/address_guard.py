"""Where webhooks may be sent (the SSRF guard).

A merchant chooses the URL, so without a guard a webhook is a way to make our network POST to itself:
loopback, private networks, the cloud metadata service. Two checks:

- `check_url`: the URL's syntax and scheme (https; http only with the development loopback allowance),
  no userinfo, no fragment, sane lengths and port; an IP literal is checked at once.
- `resolve_and_check`: resolve the host and require every address to be public (or inside an
  allowlisted CIDR). Run at creation/update and again at send time; the sender then connects to the
  checked address itself (no second lookup, so DNS rebinding cannot swap the address in between).

Refusals say which class of address was refused, never the address a hostname resolved to (that would
let a caller map our internal DNS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

from services.runtime.config import env_list, env_str
from services.runtime.faults import InvalidArgument

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
# (host, port) -> the addresses it resolves to; tests inject one, production uses getaddrinfo.
Resolver = Callable[[str, int], Awaitable[Iterable[str | IPAddress]]]

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
RESOLVE_TIMEOUT_SECONDS = 5.0
DEFAULT_PORTS = {"https": 443, "http": 80}

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_CGNAT = IPv4Network("100.64.0.0/10")
_THIS_NETWORK = IPv4Network("0.0.0.0/8")
_IPV4_METADATA = IPv4Address("169.254.169.254")
_IPV6_METADATA = IPv6Address("fd00:ec2::254")
_NAT64 = IPv6Network("64:ff9b::/96")  # the well-known NAT64 prefix: its last 32 bits are an IPv4 address


class UrlRefused(InvalidArgument):
    """A webhook URL (or an address it resolves to) we will not send to. A 4xx at creation/update; a
    failed attempt at send time. `refusal` is the human reason."""

    def __init__(self, refusal: str):
        super().__init__(f"url refused: {refusal}", field="url", reason="WEBHOOK_URL_REFUSED")
        self.refusal = refusal


@dataclass(frozen=True)
class AddressPolicy:
    allow_loopback: bool = False  # development: http:// and loopback addresses let through
    allowed_networks: tuple[IPNetwork, ...] = ()  # allowed even though not public

    @classmethod
    def from_env(cls) -> AddressPolicy:
        allow = env_str("FISCAL_WEBHOOK_ALLOW_LOOPBACK", "0").strip().lower()
        if allow not in {"0", "1", "true", "false", "yes", "no", ""}:
            raise SystemExit(f"FISCAL_WEBHOOK_ALLOW_LOOPBACK must be 0 or 1, got {allow!r}")
        networks: list[IPNetwork] = []
        for cidr in env_list("FISCAL_WEBHOOK_ALLOWED_NETWORKS"):
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise SystemExit(f"FISCAL_WEBHOOK_ALLOWED_NETWORKS: {cidr!r} is not a CIDR") from None
        return cls(allow_loopback=allow in {"1", "true", "yes"}, allowed_networks=tuple(networks))

    def allowlisted(self, ip: IPAddress) -> bool:
        return any(ip.version == network.version and ip in network for network in self.allowed_networks)


@dataclass(frozen=True)
class ParsedUrl:
    url: str  # as given (stored and shown)
    scheme: str  # https or http
    host: str  # lower case, IPv6 without brackets, IDN as ASCII (punycode)
    port: int  # explicit or the scheme's default
    target: str  # path and query: what goes on the request line
    literal: IPAddress | None  # the host when it is an IP address

    @property
    def host_header(self) -> str:
        """The Host header (and TLS SNI is `host`) when connecting to a checked address."""
        name = f"[{self.host}]" if self.literal is not None and self.literal.version == 6 else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with `address` in place of the host: connect there, send Host/SNI = `host`."""
        name = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{name}:{self.port}{self.target}"


def _parse_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _ascii_host(host: str) -> str:
    if not host:
        raise UrlRefused("the URL has no host")
    if len(host) > MAX_HOST_LENGTH:
        raise UrlRefused(f"the host is longer than {MAX_HOST_LENGTH} characters")
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UrlRefused("the host is not a valid host name") from None
    labels = ascii_host.removesuffix(".").split(".")
    if len(ascii_host) > MAX_HOST_LENGTH or not all(_LABEL.match(label) for label in labels):
        raise UrlRefused("the host is not a valid host name")
    # "127.1", "2130706433", "0x7f.0.0.1": resolvers read these as IPv4 addresses; no real name ends in
    # a numeric label, so refuse them rather than guess how a resolver will read them.
    if _NUMERIC_LABEL.match(labels[-1]):
        raise UrlRefused("the host is neither a dotted IPv4 address nor a host name")
    return ascii_host


def check_url(url: str, policy: AddressPolicy) -> ParsedUrl:
    """Syntax and scheme rules (no DNS). Raises UrlRefused."""
    if not url:
        raise UrlRefused("a URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UrlRefused("the URL contains whitespace or control characters")
    if "#" in url:
        raise UrlRefused("the URL has a fragment")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced or invalid [IPv6] host
        raise UrlRefused("the URL is malformed") from None
    try:
        port = parts.port
    except ValueError:
        raise UrlRefused("the URL's port is not a number from 1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlRefused("the URL must be https://")
    if scheme == "http" and not policy.allow_loopback:
        raise UrlRefused("the URL must be https:// (http:// only on loopback in development mode)")
    if "@" in parts.netloc:
        raise UrlRefused("the URL has userinfo (user:password@)")
    if port == 0:
        raise UrlRefused("the URL's port is not a number from 1 to 65535")
    raw_host = parts.hostname or ""
    if "%" in raw_host:
        raise UrlRefused("the URL's host has an IPv6 zone")
    literal = _parse_literal(raw_host)
    if literal is None and parts.netloc.startswith("["):
        raise UrlRefused("the URL's host is not a valid IPv6 address")
    host = str(literal) if literal is not None else _ascii_host(raw_host)
    parsed = ParsedUrl(url=url, scheme=scheme, host=host, port=port or DEFAULT_PORTS[scheme],
                       target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""), literal=literal)
    if literal is not None:
        _check_addresses(parsed, [literal], policy)
    return parsed


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4): it reaches that IPv4 host."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _ipv4_refusal(ip: IPv4Address, policy: AddressPolicy) -> str | None:
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "an unspecified (0.0.0.0/8) address"
    if ip.is_loopback:
        return None if policy.allow_loopback else "a loopback address"
    if ip == _IPV4_METADATA:
        return "the cloud metadata address (link-local)"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _CGNAT:
        return "a shared (CGNAT 100.64.0.0/10) address"
    if ip in IPv4Network("10.0.0.0/8") or ip in IPv4Network("172.16.0.0/12") or ip in IPv4Network("192.168.0.0/16"):
        return "a private address"
    if not ip.is_global or ip.is_reserved:
        return "a reserved (non-public) address"
    return None


def _ipv6_refusal(ip: IPv6Address, policy: AddressPolicy) -> str | None:
    if ip.is_unspecified:
        return "an unspecified (::) address"
    if ip.is_loopback:
        return None if policy.allow_loopback else "a loopback address"
    if ip == _IPV6_METADATA:
        return "the cloud metadata address (fd00:ec2::254)"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in IPv6Network("fc00::/7"):
        return "a private (unique local) address"
    if ip.is_site_local:
        return "a site-local address"
    if not ip.is_global or ip.is_reserved:
        return "a reserved (non-public) address"
    return None


def address_refusal(ip: IPAddress, policy: AddressPolicy) -> str | None:
    """Why we will not send to `ip` (naming the class of address), or None when we may."""
    if policy.allowlisted(ip):
        return None
    if isinstance(ip, IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            if policy.allowlisted(embedded):
                return None
            inner = _ipv4_refusal(embedded, policy)
            return f"an IPv4-embedding IPv6 address of {inner}" if inner else None
        return _ipv6_refusal(ip, policy)
    return _ipv4_refusal(ip, policy)


def _is_loopback(ip: IPAddress) -> bool:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _check_addresses(parsed: ParsedUrl, addresses: list[IPAddress], policy: AddressPolicy) -> None:
    what = "the host is" if parsed.literal is not None else "the host resolves to"
    for ip in addresses:
        refusal = address_refusal(ip, policy)
        if refusal is not None:
            raise UrlRefused(f"{what} {refusal}")
    if parsed.scheme == "http" and not all(_is_loopback(ip) for ip in addresses):
        raise UrlRefused("http:// is allowed only for loopback addresses (development mode); use https://")


async def _getaddrinfo(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_and_check(parsed: ParsedUrl, policy: AddressPolicy, resolver: Resolver | None = None,
                            timeout: float = RESOLVE_TIMEOUT_SECONDS) -> list[IPAddress]:
    """Every address `parsed.host` resolves to, each allowed by `policy` (else UrlRefused). The sender
    connects to one of these, not to the name."""
    if parsed.literal is not None:
        addresses: list[IPAddress] = [parsed.literal]
    else:
        try:
            async with asyncio.timeout(timeout):
                raw = await (resolver or _getaddrinfo)(parsed.host, parsed.port)
        except TimeoutError:
            raise UrlRefused("the host did not resolve in time") from None
        except (OSError, UnicodeError):  # socket.gaierror is an OSError
            raise UrlRefused("the host does not resolve") from None
        addresses = []
        for item in raw:
            ip = item if isinstance(item, IPv4Address | IPv6Address) else _parse_literal(str(item).split("%")[0])
            if ip is None:
                raise UrlRefused("the host resolves to something that is not an IP address")
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise UrlRefused("the host does not resolve")
    _check_addresses(parsed, addresses, policy)
    return addresses
