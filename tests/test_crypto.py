"""Secrets at rest, key material and password hashing."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from isthmus.crypto import (
    GATEWAY_KEY_PREFIX,
    KEY_FILE_NAME,
    SecretBox,
    derive_key,
    generate_gateway_key,
    generate_secret_key,
    hash_gateway_key,
    hash_password,
    key_display_prefix,
    load_or_create_secret_key,
    password_needs_rehash,
    verify_password,
)
from isthmus.errors import ConfigError


def test_round_trip_and_fresh_nonce_per_encryption() -> None:
    box = SecretBox(os.urandom(32))
    secret = "sk-ant-api03-ünïcødé-" + "x" * 200
    first, second = box.encrypt(secret), box.encrypt(secret)
    assert first.startswith("v1:") and second.startswith("v1:")
    assert first != second
    assert secret not in first
    assert box.decrypt(first) == secret
    assert box.decrypt(second) == secret
    assert box.decrypt(box.encrypt("")) == ""


def test_wrong_key_is_a_clear_config_error() -> None:
    token = SecretBox(os.urandom(32)).encrypt("upstream-key")
    with pytest.raises(ConfigError, match="secret key is not the one"):
        SecretBox(os.urandom(32)).decrypt(token)


def test_tampered_or_foreign_ciphertexts_are_rejected() -> None:
    box = SecretBox(os.urandom(32))
    token = box.encrypt("upstream-key")
    raw = bytearray(base64.urlsafe_b64decode(token[3:]))
    raw[-1] ^= 1
    with pytest.raises(ConfigError):
        box.decrypt("v1:" + base64.urlsafe_b64encode(bytes(raw)).decode())
    with pytest.raises(ConfigError, match="unknown format"):
        box.decrypt("v9:" + token[3:])
    with pytest.raises(ConfigError, match="corrupt"):
        box.decrypt("v1:AAAA")


def test_key_material_base64_is_used_as_is_and_passphrases_are_stretched() -> None:
    raw = os.urandom(32)
    encoded = base64.urlsafe_b64encode(raw).decode()
    assert derive_key(encoded) == raw
    assert derive_key(encoded.rstrip("=")) == raw
    token = SecretBox(raw).encrypt("hello")
    assert SecretBox.from_material(encoded).decrypt(token) == "hello"

    passphrase = "correct horse battery staple"
    derived = derive_key(passphrase)
    assert len(derived) == 32
    assert derived == derive_key(passphrase)
    assert derived != derive_key(passphrase + "!")
    assert derived != hashlib.sha256(passphrase.encode()).digest()
    with pytest.raises(ConfigError):
        derive_key("   ")


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    first = load_or_create_secret_key(data_dir, None)
    key_file = data_dir / KEY_FILE_NAME
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_or_create_secret_key(data_dir, None) == first
    assert derive_key(key_file.read_text()) == first
    # No leftovers from the write-aside-then-link dance.
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME]


def test_environment_key_wins_over_the_file(tmp_path: Path) -> None:
    from_file = load_or_create_secret_key(tmp_path, None)
    env_value = generate_secret_key()
    from_env = load_or_create_secret_key(tmp_path, env_value)
    assert from_env == derive_key(env_value)
    assert from_env != from_file
    assert load_or_create_secret_key(tmp_path, "  ") == from_file


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(load_or_create_secret_key(tmp_path, None))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert len(set(results)) == 1


def test_empty_key_file_fails_start_up(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_or_create_secret_key(tmp_path, None)


def test_gateway_keys_are_long_random_and_hashed_with_sha256() -> None:
    keys = {generate_gateway_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(GATEWAY_KEY_PREFIX)
        body = key[len(GATEWAY_KEY_PREFIX) :]
        assert len(body) >= 40
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    key = next(iter(keys))
    digest = hash_gateway_key(key)
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert len(digest) == 64 and digest != hash_gateway_key(key + "x")


def test_display_prefix_reveals_little() -> None:
    key = generate_gateway_key()
    shown = key_display_prefix(key)
    assert shown.endswith("…")
    assert key.startswith(shown[:-1])
    assert len(shown) - 1 <= len(GATEWAY_KEY_PREFIX) + 4
    chosen = "my-fixed-secret-value"
    shown = key_display_prefix(chosen)
    assert chosen.startswith(shown[:-1])
    assert len(shown) - 1 <= len(chosen) // 4


def test_password_hash_and_verify() -> None:
    hashed = hash_password("s3cret passphrase")
    assert hashed.startswith("$argon2id$")
    assert "s3cret" not in hashed
    assert verify_password("s3cret passphrase", hashed)
    assert not verify_password("s3cret passphrasE", hashed)
    assert not verify_password("", hashed)
    assert not verify_password("anything", None)
    assert not verify_password("anything", "not-a-hash")
    assert not password_needs_rehash(hashed)


def test_weaker_hashes_still_verify_but_ask_for_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("pw-123456")
    assert verify_password("pw-123456", weak)
    assert password_needs_rehash(weak)
