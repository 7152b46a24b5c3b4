"""DNSSEC keys: one Combined Signing Key per zone, kept in a PEM file.

ECDSA P-256 with SHA-256 (algorithm 13, RFC 8624's recommendation) by default,
Ed25519 (algorithm 15) as an option. The private key is read from a PEM file
(PKCS#8, unencrypted) outside the zone directory; nothing here logs or returns
it. From the key come the DNSKEY record (flags 257: zone key + secure entry
point, as a CSK is both), its key tag (RFC 4034 appendix B) and the DS record
for the parent (digest type 2, SHA-256, RFC 4509).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ECDSAP256SHA256 = 13
ED25519 = 15
ALGORITHMS = {"ecdsa-p256": ECDSAP256SHA256, "ed25519": ED25519}
CSK_FLAGS = 257  # ZONE (256) + SEP (1)
DS_SHA256 = 2


class KeyError_(ValueError):
    """A key file that cannot be used (one line: the path and why)."""


PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A zone's CSK: what signs, and what the zone publishes about it."""

    algorithm: int
    dnskey: bytes  # DNSKEY rdata (wire)
    tag: int
    _key: PrivateKey

    def sign(self, data: bytes) -> bytes:
        """The DNSSEC signature of ``data`` (ECDSA: r || s, 32 octets each, RFC 6605)."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:  # never show the key
        return f"SigningKey(algorithm={self.algorithm}, tag={self.tag})"


def generate(algorithm: str = "ecdsa-p256") -> bytes:
    """A new private key as PEM (PKCS#8)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ecdsa-p256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_new(path: Path, algorithm: str = "ecdsa-p256") -> None:
    """Write a new key to ``path``, readable by its owner only; an existing file is an
    error (a key is never overwritten by accident)."""
    pem = generate(algorithm)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load(path: str | Path) -> SigningKey:
    """The signing key in a PEM file; KeyError_ with one line when it cannot be used."""
    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise KeyError_(f"cannot read DNSSEC key {path}: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        why = "it is encrypted" if "password" in str(e).lower() else "not a PEM private key"
        raise KeyError_(f"DNSSEC key {path}: {why}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        nums = key.public_key().public_numbers()
        alg, public = ECDSAP256SHA256, nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        alg = ED25519
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raise KeyError_(f"DNSSEC key {path}: only ECDSA P-256 and Ed25519 keys are supported")
    dnskey = struct.pack("!HBB", CSK_FLAGS, 3, alg) + public
    return SigningKey(alg, dnskey, key_tag(dnskey), key)


def key_tag(dnskey: bytes) -> int:
    """RFC 4034 appendix B."""
    acc = 0
    for i, b in enumerate(dnskey):
        acc += b if i & 1 else b << 8
    acc += (acc >> 16) & 0xFFFF
    return acc & 0xFFFF


def ds(owner: bytes, dnskey: bytes) -> bytes:
    """The DS rdata (SHA-256) of a DNSKEY owned by ``owner`` (lowercase wire name)."""
    digest = hashlib.sha256(owner.lower() + dnskey).digest()
    return struct.pack("!HBB", key_tag(dnskey), dnskey[3], DS_SHA256) + digest
