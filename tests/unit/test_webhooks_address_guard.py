"""The SSRF guard (services/webhooks/address_guard.py) at the address-check level: every refused class
of address, the allowlist, and URL rules. No traffic leaves the process; resolvers are injected."""

from __future__ import annotations

import ipaddress

import pytest

from services.runtime.faults import InvalidArgument
from services.webhooks.address_guard import (
    AddressPolicy,
    UrlRefused,
    address_refusal,
    check_url,
    resolve_and_check,
)

STRICT = AddressPolicy()
DEV = AddressPolicy(allow_loopback=True)


@pytest.mark.parametrize(("address", "named"), [
    ("127.0.0.1", "loopback"),
    ("127.5.6.7", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fd00:ec2::254", "metadata"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved"),  # documentation range
    ("2001:db8::1", "reserved"),
    ("fec0::1", "site-local"),
])
def test_non_public_addresses_are_refused_naming_their_class(address, named):
    refusal = address_refusal(ipaddress.ip_address(address), STRICT)
    assert refusal is not None and named in refusal


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                     "172.32.0.1", "100.128.0.1", "::ffff:93.184.215.14"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(ipaddress.ip_address(address), STRICT) is None


def test_loopback_only_with_the_allowance():
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert address_refusal(ipaddress.ip_address(address), DEV) is None
    # The allowance is for loopback only: private and metadata stay refused.
    for address in ("10.0.0.1", "169.254.169.254", "fd00:ec2::254"):
        assert address_refusal(ipaddress.ip_address(address), DEV) is not None


def test_an_allowlisted_cidr_is_allowed():
    policy = AddressPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),
                                             ipaddress.ip_network("fd00:1::/64")))
    assert address_refusal(ipaddress.ip_address("10.20.3.4"), policy) is None
    assert address_refusal(ipaddress.ip_address("::ffff:10.20.3.4"), policy) is None
    assert address_refusal(ipaddress.ip_address("fd00:1::5"), policy) is None
    assert address_refusal(ipaddress.ip_address("10.21.0.1"), policy) is not None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), policy) is not None


def test_policy_from_env(monkeypatch):
    monkeypatch.delenv("FISCAL_WEBHOOK_ALLOW_LOOPBACK", raising=False)
    monkeypatch.delenv("FISCAL_WEBHOOK_ALLOWED_NETWORKS", raising=False)
    assert AddressPolicy.from_env() == AddressPolicy()
    monkeypatch.setenv("FISCAL_WEBHOOK_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("FISCAL_WEBHOOK_ALLOWED_NETWORKS", "10.20.0.0/16, fd00:1::/64")
    policy = AddressPolicy.from_env()
    assert policy.allow_loopback
    assert policy.allowed_networks == (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00:1::/64"))
    monkeypatch.setenv("FISCAL_WEBHOOK_ALLOWED_NETWORKS", "10.20.0.0/99")
    with pytest.raises(SystemExit):
        AddressPolicy.from_env()


def test_a_public_https_url_parses():
    parsed = check_url("https://Hooks.Example.com:8443/in/fiscal?tenant=7", STRICT)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.target) == ("https", "hooks.example.com", 8443,
                                                                       "/in/fiscal?tenant=7")
    assert parsed.literal is None and parsed.host_header == "hooks.example.com:8443"
    assert parsed.url_for(ipaddress.ip_address("93.184.215.14")) == "https://93.184.215.14:8443/in/fiscal?tenant=7"
    plain = check_url("https://example.com", STRICT)
    assert (plain.port, plain.target, plain.host_header) == (443, "/", "example.com")
    assert plain.url_for(ipaddress.ip_address("2606:4700::1")) == "https://[2606:4700::1]:443/"


def test_http_is_refused_without_the_loopback_allowance():
    with pytest.raises(UrlRefused, match="https"):
        check_url("http://127.0.0.1:9000/hook", STRICT)
    with pytest.raises(UrlRefused, match="https"):
        check_url("http://example.com/hook", STRICT)
    assert check_url("http://127.0.0.1:9000/hook", DEV).literal == ipaddress.ip_address("127.0.0.1")
    with pytest.raises(UrlRefused, match="loopback"):
        check_url("http://93.184.215.14/hook", DEV)  # http is for loopback only, even in development


@pytest.mark.parametrize(("url", "why"), [
    ("https://user:pw@example.com/", "userinfo"),
    ("https://user@example.com/", "userinfo"),
    ("https://example.com/#frag", "fragment"),
    ("https://example.com:0/", "port"),
    ("https://example.com:65536/", "port"),
    ("https://example.com:http/", "port"),
    ("ftp://example.com/", "https"),
    ("file:///etc/passwd", "https"),
    ("example.com/hook", "https"),
    ("", "required"),
    ("https://" + "a" * 2050 + ".com/", "2048"),
    ("https://" + ("a" * 60 + ".") * 5 + "com/", "253"),
    ("https:///path", "no host"),
    ("https://exa mple.com/", "whitespace"),
    ("https://bad_host.example.com/", "host name"),
    ("https://127.1/", "IPv4"),
    ("https://2130706433/", "IPv4"),
    ("https://0x7f.0.0.1/", "IPv4"),
    ("https://[fe80::1%25eth0]/", "zone"),
    ("https://[::1/", "malformed"),
    ("https://127.0.0.1/", "loopback"),
    ("https://[::ffff:10.0.0.1]/", "private"),
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
])
def test_bad_urls_are_refused_with_a_reason(url, why):
    with pytest.raises(UrlRefused, match=why) as refused:
        check_url(url, STRICT)
    assert isinstance(refused.value, InvalidArgument) and refused.value.field == "url"


def fixed_resolver(*answers: str):
    calls: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return list(answers)

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def test_a_hostname_resolving_to_loopback_is_refused():
    parsed = check_url("https://rebind.example.com/hook", STRICT)
    resolver = fixed_resolver("127.0.0.1")
    with pytest.raises(UrlRefused, match="resolves to a loopback") as refused:
        await resolve_and_check(parsed, STRICT, resolver)
    assert "127.0.0.1" not in refused.value.message  # the class, never the resolved address
    assert resolver.calls == [("rebind.example.com", 443)]


async def test_one_bad_address_among_good_ones_refuses_the_host():
    parsed = check_url("https://mixed.example.com/", STRICT)
    with pytest.raises(UrlRefused, match="metadata"):
        await resolve_and_check(parsed, STRICT, fixed_resolver("93.184.215.14", "169.254.169.254"))


async def test_public_addresses_come_back_deduplicated():
    parsed = check_url("https://hooks.example.com/", STRICT)
    addresses = await resolve_and_check(parsed, STRICT,
                                        fixed_resolver("93.184.215.14", "2606:4700::1", "93.184.215.14"))
    assert addresses == [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("2606:4700::1")]


async def test_http_to_a_name_needs_loopback_only_addresses():
    parsed = check_url("http://localhost:9000/hook", DEV)
    assert await resolve_and_check(parsed, DEV, fixed_resolver("127.0.0.1", "::1")) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    with pytest.raises(UrlRefused, match="loopback"):
        await resolve_and_check(parsed, DEV, fixed_resolver("127.0.0.1", "93.184.215.14"))


async def test_a_literal_address_is_not_resolved():
    parsed = check_url("http://127.0.0.1:9000/hook", DEV)
    resolver = fixed_resolver("10.0.0.1")
    assert await resolve_and_check(parsed, DEV, resolver) == [ipaddress.ip_address("127.0.0.1")]
    assert resolver.calls == []
    with pytest.raises(UrlRefused, match="loopback"):
        await resolve_and_check(parsed, STRICT, resolver)  # the policy at send time may be stricter


async def test_a_name_that_does_not_resolve_is_refused():
    async def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    parsed = check_url("https://nowhere.example.com/", STRICT)
    with pytest.raises(UrlRefused, match="does not resolve"):
        await resolve_and_check(parsed, STRICT, failing)
    with pytest.raises(UrlRefused, match="does not resolve"):
        await resolve_and_check(parsed, STRICT, fixed_resolver())


async def test_the_default_resolver_refuses_localhost():
    # getaddrinfo on "localhost" answers from /etc/hosts: no traffic leaves the machine.
    parsed = check_url("https://localhost/hook", STRICT)
    with pytest.raises(UrlRefused, match="loopback"):
        await resolve_and_check(parsed, STRICT)
