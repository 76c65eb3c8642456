"""Gateway keys: the private key that signs, and the key directory that checks.

A gateway signs the hash of every block (and of every checkpoint) with its own Ed25519 key;
recorders and ``collector verify`` hold only public keys, so nothing central can forge a
gateway's records. The key directory is also the register of gateways:

``<gateway-id>.pub``
    PEM ``PUBLIC KEY`` blocks, one per Ed25519 key the gateway has used (a rotation appends
    the new key; the old ones stay, so old blocks still verify).
``<gateway-id>.hmac``
    For set-ups that sign with a shared secret (HMAC-SHA256): the secret, as text. Whoever
    holds it can forge that gateway's blocks; prefer Ed25519.
``register.yaml`` (optional)
    ``gateways: {gw-1: {site: plant-a, line: L1, stations: [st-10], retired: false}}`` binds
    each gateway to where it may publish from.

Why Ed25519 through ``cryptography``: small keys and signatures, deterministic signing (no
random number generator to get wrong on a headless box), about 20 µs to sign and 60 µs to
check here, and OpenSSL underneath, kept up to date by Debian and PyPI alike.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collector.errors import CollectorError

HMAC_KEY_ID = "hmac"
_GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


class KeyFileError(CollectorError):
    """A key that cannot be loaded or used (missing file, wrong type, bad permissions)."""


class Signer(Protocol):
    """What seals blocks: names its key and signs a 32-byte digest."""

    @property
    def key_id(self) -> str: ...

    def sign(self, digest: bytes) -> str: ...


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """The key id: the first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Ed25519Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self._key_id = fingerprint(self.public_key)

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, digest: bytes) -> str:
        return self._key.sign(digest).hex()

    @classmethod
    def from_file(cls, path: str | Path) -> Ed25519Signer:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
        return cls(key)


class HmacSigner:
    """Schema version 1's shared-secret signature, kept for existing set-ups."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise KeyFileError("the HMAC signing key is empty")
        self._secret = secret

    @property
    def key_id(self) -> str:
        return HMAC_KEY_ID

    def sign(self, digest: bytes) -> str:
        return hmac.new(self._secret, digest, hashlib.sha256).hexdigest()


def generate(gateway_id: str, directory: str | Path) -> tuple[Path, Path, str]:
    """A new key pair for a gateway: ``<id>.key`` (private, mode 0600) and ``<id>.pub``.

    An existing ``.pub`` is appended to (a rotation); an existing ``.key`` is never
    overwritten. Returns (private path, public path, key id).
    """
    if not _GATEWAY_ID.match(gateway_id):
        raise KeyFileError(f"{gateway_id!r} is not a gateway id (letters, digits, '_', '.', '-')")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{gateway_id}.key"
    public_path = directory / f"{gateway_id}.pub"
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{private_path} exists: move it away first (a key is never overwritten)") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(public_path, "ab") as fh:
        fh.write(public_pem)
    return private_path, public_path, fingerprint(key.public_key())


@dataclass
class GatewayEntry:
    """One gateway of the register: its keys, and where it may publish from."""

    id: str
    public_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    hmac_secret: bytes | None = None
    site: str | None = None
    line: str | None = None
    stations: frozenset[str] | None = None  # None: not bound to stations by the register
    retired: bool = False


class SignatureInvalid(CollectorError):
    """A signature that does not verify, or a key the register does not know."""


class KeyRing:
    """The register of gateways and their public keys (a key directory)."""

    def __init__(self, gateways: dict[str, GatewayEntry], source: str = "(in memory)") -> None:
        self.gateways = gateways
        self.source = source

    def __contains__(self, gateway_id: object) -> bool:
        return gateway_id in self.gateways

    def get(self, gateway_id: str) -> GatewayEntry | None:
        return self.gateways.get(gateway_id)

    def verify(self, gateway_id: str, key_id: str | None, digest: bytes, signature: str | None) -> None:
        """Raise :class:`SignatureInvalid` unless ``signature`` is the gateway's over ``digest``."""
        entry = self.gateways.get(gateway_id)
        if entry is None:
            raise SignatureInvalid(f"gateway {gateway_id!r} is not in the register {self.source}")
        if key_id is None or signature is None:
            raise SignatureInvalid("unsigned")
        if key_id == HMAC_KEY_ID:
            if entry.hmac_secret is None:
                raise SignatureInvalid(f"no HMAC key for gateway {gateway_id!r} in {self.source}")
            expected = hmac.new(entry.hmac_secret, digest, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, signature):
                raise SignatureInvalid("HMAC signature does not match")
            return
        public = entry.public_keys.get(key_id)
        if public is None:
            raise SignatureInvalid(f"key {key_id} is not one of gateway {gateway_id!r}'s keys")
        try:
            public.verify(bytes.fromhex(signature), digest)
        except (InvalidSignature, ValueError):
            raise SignatureInvalid(f"signature does not match key {key_id}") from None

    @classmethod
    def load(cls, directory: str | Path) -> KeyRing:
        """Read a key directory. Raises :class:`KeyFileError` naming the file and the reason."""
        directory = Path(directory)
        if not directory.is_dir():
            raise KeyFileError(f"key directory {directory} does not exist")
        gateways: dict[str, GatewayEntry] = {}
        for path in sorted(directory.iterdir()):
            gid, suffix = path.stem, path.suffix
            if suffix not in (".pub", ".hmac"):
                continue
            if not _GATEWAY_ID.match(gid):
                raise KeyFileError(f"{path}: {gid!r} is not a gateway id")
            entry = gateways.setdefault(gid, GatewayEntry(gid))
            data = path.read_bytes()
            if suffix == ".hmac":
                entry.hmac_secret = data.strip()
                if not entry.hmac_secret:
                    raise KeyFileError(f"{path}: empty HMAC key")
                continue
            blocks = _PEM_BLOCK.findall(data)
            if not blocks:
                raise KeyFileError(f"{path}: no PEM public key in it")
            for block in blocks:
                try:
                    key = serialization.load_pem_public_key(block)
                except ValueError as exc:
                    raise KeyFileError(f"{path}: unreadable public key ({exc})") from None
                if not isinstance(key, Ed25519PublicKey):
                    raise KeyFileError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
                entry.public_keys[fingerprint(key)] = key
        register = directory / "register.yaml"
        if register.exists():
            _apply_register(register, gateways)
        return cls(gateways, str(directory))


def _apply_register(path: Path, gateways: dict[str, GatewayEntry]) -> None:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    listed = data.get("gateways") if isinstance(data, dict) else None
    if not isinstance(listed, dict):
        raise KeyFileError(f"{path}: expected 'gateways:' mapping gateway ids to their site, line and stations")
    for gid, spec in listed.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise KeyFileError(f"{path}: gateways.{gid}: expected a mapping")
        entry = gateways.get(str(gid))
        if entry is None:
            raise KeyFileError(f"{path}: gateways.{gid}: no {gid}.pub or {gid}.hmac beside the register")
        unknown = set(spec) - {"site", "line", "stations", "retired"}
        if unknown:
            raise KeyFileError(f"{path}: gateways.{gid}: unknown key(s) {', '.join(sorted(unknown))}")
        entry.site = None if spec.get("site") is None else str(spec["site"])
        entry.line = None if spec.get("line") is None else str(spec["line"])
        if spec.get("stations") is not None:
            entry.stations = frozenset(str(s) for s in spec["stations"])
        entry.retired = bool(spec.get("retired", False))
