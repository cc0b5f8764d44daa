"""Guard against server-side request forgery for outgoing webhooks.

A webhook URL is typed in by a user, so without a guard it is a way to make the server call its own admin
endpoints, the cloud metadata service or the LAN. :func:`check_target` parses the URL, resolves the host once,
and refuses unless every address is globally routable or inside a network the operator allowed
(``STRIDECARE_WEBHOOK_ALLOWED_NETWORKS``). The caller must then connect to the returned addresses, never to
the host name again: a second DNS lookup is exactly what a rebinding attacker waits for.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import httpx

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ALLOW_HINT = "allow it with STRIDECARE_WEBHOOK_ALLOWED_NETWORKS if it is intended"

_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
# Deprecated "IPv4-compatible" addresses (::a.b.c.d): ipaddress calls them global, stacks may route to v4.
_IPV4_COMPATIBLE = IPv6Network("::/96")
# Letters, digits, hyphen, underscore (seen in real internal names) and dots; IDNA has already been applied.
_LABEL = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
# Characters that different URL parsers disagree about; a webhook URL never needs them.
_SUSPICIOUS_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class ForbiddenTarget(Exception):
    """The target may not be contacted; ``reason`` is one line, safe to show to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TargetUnresolvable(Exception):
    """The host name did not resolve (a transient DNS failure or a typo); not a policy refusal."""


@dataclass(frozen=True, slots=True)
class CheckedTarget:
    """A URL whose every resolved address passed the policy, and what is needed to connect to them."""

    url: httpx.URL
    host: str  # ASCII host as written in the URL (IDNA applied, no brackets)
    port: int
    addresses: tuple[IPAddress, ...]  # resolver order; all checked
    host_header: str
    sni_hostname: str | None  # None when the URL names an IP address: TLS then verifies the address itself

    def url_for(self, address: IPAddress) -> httpx.URL:
        """The request URL with the host replaced by ``address``, so the HTTP client performs no lookup."""
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            # Same destination, but works where IPv6 sockets are disabled.
            address = address.ipv4_mapped
        return self.url.copy_with(host=str(address), port=self.port)


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse the operator's allowed networks; raise ``ValueError`` naming the bad entry."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        text = cidr.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            message = f"STRIDECARE_WEBHOOK_ALLOWED_NETWORKS: {text!r} is not a network: {exc}"
            raise ValueError(message) from None
    return tuple(networks)


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, IPv4-compatible), or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def parse_ipv4_loose(text: str) -> IPv4Address | None:
    """Parse the IPv4 spellings ``inet_aton`` accepts (``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``).

    Returns None when ``text`` is not written as a number at all; raises ``ForbiddenTarget`` when it looks
    like one but is malformed (``256.1.1.1``, ``1.2.3.4.5``), because resolvers disagree on what those mean.
    """
    parts = text.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    if not parts or not _NUMERIC_LABEL_RE.match(parts[-1]):
        return None
    values: list[int] = []
    for part in parts:
        try:
            if part[:2] in ("0x", "0X"):
                values.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part[1:], 8))
            else:
                values.append(int(part, 10))
        except ValueError:
            raise ForbiddenTarget(f"host {text!r} is a malformed IP address") from None
    if len(values) > 4 or any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise ForbiddenTarget(f"host {text!r} is a malformed IP address")
    number = 0
    for value in values[:-1]:
        number = number * 256 + value
    number = (number << (8 * (5 - len(values)))) + values[-1]
    return IPv4Address(number)


def _is_public(ip: IPAddress) -> bool:
    # is_global alone misses multicast (224/4 counts as "global" for ipaddress); the rest is belt and braces.
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or (isinstance(ip, IPv6Address) and ip.is_site_local)
    )


def _in_any(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def check_address(ip: IPAddress, allowed: Sequence[IPNetwork], *, host: str | None = None) -> None:
    """Raise ``ForbiddenTarget`` unless ``ip`` is public or inside an allowed network.

    An IPv6 address that embeds an IPv4 one is judged by the IPv4 address, which is where packets end up.
    """
    effective: IPAddress = ip
    if isinstance(ip, IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            effective = inner
    if _in_any(effective, allowed) or _in_any(ip, allowed):
        return
    if _is_public(effective):
        return
    shown = str(ip) if effective == ip else f"{ip} (IPv4 {effective})"
    where = f"host {host!r} resolves to {shown}" if host else f"address {shown}"
    raise ForbiddenTarget(f"{where}, which is not a public address; {ALLOW_HINT}")


def check_target(url: str, allowed: Sequence[IPNetwork]) -> CheckedTarget:
    """Parse ``url``, resolve its host once and check every address; raise ``ForbiddenTarget`` if any fails.

    Raises ``TargetUnresolvable`` when the name does not resolve. The result carries the checked addresses:
    connect to those (see :meth:`CheckedTarget.url_for`) and send ``host_header`` / ``sni_hostname``.
    """
    if _SUSPICIOUS_CHARS.search(url):
        raise ForbiddenTarget("the URL contains whitespace, control characters or backslashes")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ForbiddenTarget(f"the URL is malformed ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise ForbiddenTarget(f"scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https")
    if parsed.userinfo:
        # "http://trusted@evil/" and friends exist to fool people and parsers; webhooks need no credentials.
        raise ForbiddenTarget("the URL may not contain a user name or password")
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses, sni = check_host(host, port, allowed)
    return CheckedTarget(
        url=parsed,
        host=host,
        port=port,
        addresses=addresses,
        host_header=parsed.netloc.decode("ascii"),
        sni_hostname=sni,
    )


def check_host(host: str, port: int, allowed: Sequence[IPNetwork]) -> tuple[tuple[IPAddress, ...], str | None]:
    """Resolve ``host`` once (an IP literal, in any encoding, as itself) and check every address; returns the
    addresses and the name to verify TLS against (None for a literal). Raises ``ForbiddenTarget`` or
    ``TargetUnresolvable``. Every channel that reaches a host an athlete typed in uses this one guard."""
    host = host.strip("[]") if host.startswith("[") else host
    if not host:
        raise ForbiddenTarget("the URL has no host")
    if "%" in host:
        raise ForbiddenTarget("IPv6 zone identifiers are not allowed")
    if not 0 < port < 65536:
        raise ForbiddenTarget(f"port {port} is not allowed")
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = parse_ipv4_loose(host)
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
        sni: str | None = None
    else:
        if not _HOSTNAME_RE.match(host):
            raise ForbiddenTarget(f"host {host!r} is not a valid host name")
        addresses = _resolve(host, port)
        sni = host.rstrip(".")
    for address in addresses:
        check_address(address, allowed, host=sni)
    return addresses, sni


def _resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(f"host {host!r} does not resolve ({exc})") from None
    found: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        if "%" in text:
            raise ForbiddenTarget(f"host {host!r} resolves to a scoped (link-local) address {text}")
        address = ipaddress.ip_address(text)
        if address not in found:
            found.append(address)
    if not found:
        raise TargetUnresolvable(f"host {host!r} has no IPv4 or IPv6 address")
    return tuple(found)
