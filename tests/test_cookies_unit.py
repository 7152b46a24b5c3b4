"""RFC 9018 server cookies: the published vectors (Appendix A), both SipHash
implementations, and the verify/renew rules of :class:`gslb.dns.cookies.Cookies`."""

from __future__ import annotations

import os

import pytest

from gslb.dns import cookies
from gslb.dns.cookies import BadCookie, Cookies, address_bytes, server_cookie

S1 = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
S2 = bytes.fromhex("445536bcd2513298075a5d379663c962")
OLD4 = bytes.fromhex("dd3bdf9344b678b185a6f5cb60fca715")

VECTORS = [  # RFC 9018 Appendix A: secret, client cookie, client address, time, server cookie
    (S1, "2464c4abcf10c957", "198.51.100.100", 1559731985, "010000005cf79f111f8130c3eee29480"),
    (S1, "2464c4abcf10c957", "198.51.100.100", 1559734385, "010000005cf7a871d4a564a1442aca77"),
    (S1, "fc93fc62807ddb86", "203.0.113.203", 1559734700, "010000005cf7a9acf73a7810aca2381e"),
    (
        S2,
        "22681ab97d52c298",
        "2001:db8:220:1:59de:d0f4:8769:82b8",
        1559741961,
        "010000005cf7c609a6bb79d16625507a",
    ),
]


@pytest.mark.parametrize("impl", [cookies.siphash24, cookies.siphash24_py], ids=["c", "python"])
@pytest.mark.parametrize(("secret", "client", "ip", "at", "want"), VECTORS)
def test_rfc9018_vectors(impl: object, secret: bytes, client: str, ip: str, at: int, want: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(cookies, "siphash24", impl)
    assert server_cookie(secret, bytes.fromhex(client), address_bytes(ip), at).hex() == want


def test_the_two_siphash_implementations_agree() -> None:
    for n in range(0, 70):
        key, data = os.urandom(16), os.urandom(n)
        assert cookies.siphash24(key, data) == cookies.siphash24_py(key, data), n


def fresh(secret: bytes, client: str, ip: str, at: int) -> str:
    """The option a fresh cookie makes at ``at``: stamped with the time rounded down to
    five minutes (every worker, node and the C loop make the same one meanwhile)."""
    return client + server_cookie(secret, bytes.fromhex(client), address_bytes(ip), at - at % 300).hex()


def test_a_client_cookie_alone_gets_a_fresh_server_cookie() -> None:
    c = Cookies((S1,))
    valid, opt = c.check(bytes.fromhex("2464c4abcf10c957"), address_bytes("198.51.100.100"), 1559731985)
    assert not valid and opt.hex() == fresh(S1, "2464c4abcf10c957", "198.51.100.100", 1559731985)
    assert int.from_bytes(opt[12:16], "big") == 1559731800  # 1559731985 rounded down to 300 s
    # and the same cookie for the rest of those five minutes, from another Cookies too
    assert Cookies((S1,)).check(opt[:8], address_bytes("198.51.100.100"), 1559732099)[1] == opt


def test_a_valid_cookie_is_kept_then_renewed_after_half_an_hour() -> None:
    c = Cookies((S1,))
    addr = address_bytes("198.51.100.100")
    opt = bytes.fromhex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    assert c.check(opt, addr, 1559731985 + 60) == (True, opt)
    # 40 minutes later (A.2): still valid, and answered with a renewed cookie
    valid, new = c.check(opt, addr, 1559734385)
    assert valid and new.hex() == fresh(S1, "2464c4abcf10c957", "198.51.100.100", 1559734385)
    # past an hour, or from another address, or with another secret: not ours
    assert not c.check(opt, addr, 1559731985 + 3601)[0]
    assert not c.check(opt, address_bytes("198.51.100.101"), 1559731985 + 60)[0]
    assert not Cookies((S2,)).check(opt, addr, 1559731985 + 60)[0]
    assert not c.check(opt, addr, 1559731985 - 301)[0]  # more than 5 minutes ahead of our clock


def test_rotation_accepts_the_old_secret_and_renews_with_the_new() -> None:
    """A.4: the cookie the old secret made is valid while the old secret is listed,
    and the reply carries a cookie made with the new one."""
    addr = address_bytes("2001:db8:220:1:59de:d0f4:8769:82b8")
    opt = bytes.fromhex("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    valid, new = Cookies((S2, OLD4)).check(opt, addr, 1559741961)
    assert valid and new.hex() == fresh(
        S2, "22681ab97d52c298", "2001:db8:220:1:59de:d0f4:8769:82b8", 1559741961
    )
    assert not Cookies((S2,)).check(opt, addr, 1559741961)[0]


def test_reserved_octets_are_part_of_the_hash() -> None:
    c = Cookies((S1,))
    opt = bytes.fromhex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    addr = address_bytes("203.0.113.203")
    valid, new = c.check(opt, addr, 0x5CF78F71 + 10)
    assert valid and new != opt and new[8:12] == b"\x01\0\0\0"  # renewed in the standard layout
    assert not c.check(opt[:9] + b"\0" + opt[10:], addr, 0x5CF78F71 + 10)[0]


@pytest.mark.parametrize("n", [0, 1, 7, 9, 15, 41, 60])
def test_malformed_lengths(n: int) -> None:
    with pytest.raises(BadCookie):
        Cookies((S1,)).check(b"\x01" * n, address_bytes("192.0.2.1"), 1559731985)


def test_fresh_cookies_are_reused_and_hashes_bounded() -> None:
    c = Cookies((S1,))
    addr = address_bytes("192.0.2.1")
    first = c.check(b"12345678", addr, 1_000_000)[1]
    assert c.check(b"12345678", addr, 1_000_100)[1] == first  # within 5 minutes: the same
    assert c.check(b"12345678", addr, 1_000_400)[1] != first  # then a new timestamp
    opt = c.check(b"12345678", addr, 1_000_400)[1]
    before = c.stats.hashes
    for i in range(50):
        assert c.check(opt, addr, 1_000_400 + i)[0]
    assert c.stats.hashes - before == 1  # verified once, then remembered


def test_ipv4_mapped_addresses_hash_as_ipv4() -> None:
    assert address_bytes("::ffff:198.51.100.100") == address_bytes("198.51.100.100")
