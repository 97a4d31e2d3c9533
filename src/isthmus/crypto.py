"""Secrets: encryption of provider credentials at rest, gateway key material, password hashing.

The encryption key comes from ``ISTHMUS_SECRET_KEY`` (any string; a urlsafe-base64 32-byte value is used
as is, anything else goes through HKDF-SHA256) or from ``DATA_DIR/secret.key``, generated on first start
with mode 0600. Losing or changing it makes stored provider keys unreadable, so start-up checks it
against a canary stored in the database (``isthmus.store.canary``) and refuses to run on a mismatch.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from isthmus.errors import ConfigError

KEY_FILE_NAME = "secret.key"
GATEWAY_KEY_PREFIX = "sk-isthmus-"
ADMIN_TOKEN_PREFIX = "ist-admin-"
_CIPHERTEXT_VERSION = "v1"
_NONCE_BYTES = 12
# Bound into every ciphertext so a value encrypted for another purpose or format cannot be swapped in.
_AAD = b"isthmus-secretbox-v1"
_HKDF_SALT = b"isthmus-secret-key"
_HKDF_INFO = b"isthmus secretbox v1"

WRONG_KEY_HINT = (
    "set ISTHMUS_SECRET_KEY to the key the database was created with, or restore DATA_DIR/secret.key"
)


# --- Encryption at rest ---------------------------------------------------------------------------


def derive_key(material: str) -> bytes:
    """32 key bytes from what the operator configured.

    A urlsafe-base64 encoding of exactly 32 bytes (what ``generate_secret_key`` writes) is used as is;
    any other string is stretched with HKDF-SHA256, so a passphrase also works.
    """
    text = material.strip()
    if not text:
        raise ConfigError("the secret key is empty")
    raw = _b64decode(text)
    if raw is not None and len(raw) == 32:
        return raw
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return hkdf.derive(text.encode("utf-8"))


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def generate_secret_key() -> str:
    """A new key in the form ``derive_key`` uses directly (44 urlsafe-base64 characters)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def load_or_create_secret_key(data_dir: Path, env_value: str | None) -> bytes:
    """The encryption key: from the environment value if given, else from ``data_dir/secret.key``.

    The file is created on first start with mode 0600. Several workers may start at once: the file
    appears atomically (written aside, then hard-linked into place), so each reads the same key.
    """
    if env_value is not None and env_value.strip():
        return derive_key(env_value)
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        temp = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(generate_secret_key() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secret key file {path}: {exc}") from exc
    if not text.strip():
        raise ConfigError(f"the secret key file {path} is empty; {WRONG_KEY_HINT}")
    return derive_key(text)


class SecretBox:
    """AES-256-GCM with a random nonce; ciphertexts are ``v1:`` + urlsafe base64 (nonce + sealed data)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the secret key must be 32 bytes")
        self._aead = AESGCM(key)
        # A short fingerprint for logs and diagnostics; never enough to recover the key.
        self.fingerprint = hashlib.sha256(b"isthmus-key-fingerprint" + key).hexdigest()[:12]

    @classmethod
    def from_material(cls, material: str) -> SecretBox:
        return cls(derive_key(material))

    @classmethod
    def from_settings(cls, data_dir: Path, env_value: str | None) -> SecretBox:
        return cls(load_or_create_secret_key(data_dir, env_value))

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), _AAD)
        return f"{_CIPHERTEXT_VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str) -> str:
        version, sep, body = token.partition(":")
        if not sep or version != _CIPHERTEXT_VERSION:
            raise ConfigError(f"a stored secret has an unknown format (expected '{_CIPHERTEXT_VERSION}:…')")
        raw = _b64decode(body)
        if raw is None or len(raw) < _NONCE_BYTES + 16:
            raise ConfigError("a stored secret is corrupt (bad encoding or too short)")
        try:
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
        except InvalidTag:
            raise ConfigError(
                "cannot decrypt a stored secret: the secret key is not the one it was encrypted with; "
                + WRONG_KEY_HINT
            ) from None
        return plain.decode("utf-8")


def mask_secret(secret: str) -> str:
    """What audit entries and API answers show instead of a credential: long ones keep 3+4 characters."""
    if len(secret) >= 24:
        return secret[:3] + "…" + secret[-4:]
    return "…"


# --- Gateway keys and admin tokens ----------------------------------------------------------------


def generate_gateway_key() -> str:
    """``sk-isthmus-`` + 43 url-safe random characters (256 bits)."""
    return GATEWAY_KEY_PREFIX + secrets.token_urlsafe(32)


def generate_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_gateway_key(secret: str) -> str:
    """SHA-256 hex. Keys are long random strings, so a fast hash is enough and lookups stay O(1)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


hash_token = hash_gateway_key


def key_display_prefix(secret: str) -> str:
    """The start of a key, enough to recognise it in a list and never enough to matter.

    Generated keys show their fixed prefix plus 4 random characters. Operator-chosen secrets (which
    may be as short as 16 characters) show at most a quarter of their length, up to 6 characters.
    """
    for prefix in (GATEWAY_KEY_PREFIX, ADMIN_TOKEN_PREFIX):
        if secret.startswith(prefix) and len(secret) >= len(prefix) + 16:
            return secret[: len(prefix) + 4] + "…"
    return secret[: min(6, len(secret) // 4)] + "…"


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# --- Passwords -------------------------------------------------------------------------------------


@functools.cache
def _hasher() -> PasswordHasher:
    # Argon2id with OWASP's recommended 19 MiB / 2 passes / 1 lane rather than the library's 64 MiB:
    # as strong a choice by OWASP's table, and a login no longer costs the gateway 64 MiB of RSS.
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    # Verified against when a user has no password, so "no such user" costs as long as "wrong password".
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when the password matches. Takes the same time whether or not there is a hash to check."""
    candidate = password_hash or _dummy_hash()
    try:
        ok: bool = _hasher().verify(candidate, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    return ok and password_hash is not None


def password_needs_rehash(password_hash: str) -> bool:
    """True when the hash uses weaker parameters than today's: re-hash it after a successful login."""
    try:
        return _hasher().check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
