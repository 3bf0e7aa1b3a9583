import hashlib

import pytest

from ich.data.pseudonyms import MIN_KEY_LENGTH, PSEUDONYM_KEY_ENV, PseudonymKeyError, pseudonym, pseudonym_key


def test_pseudonym_is_keyed_hmac_sha256():
    key = b"0123456789abcdef-key"
    # HMAC-SHA256 written out (RFC 2104): H((K ^ opad) || H((K ^ ipad) || message)), key padded to 64 bytes.
    block = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + b"MRN-0042").digest()
    expected = "P" + hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).hexdigest()[:24]
    assert pseudonym("MRN-0042", key) == expected
    assert pseudonym("MRN-0042", b"another-key-0123456") != expected
    assert pseudonym("", key) == ""


def test_pseudonym_key_comes_from_the_environment_only_when_on():
    assert pseudonym_key(False, {}) is None
    assert pseudonym_key(True, {PSEUDONYM_KEY_ENV: "k" * MIN_KEY_LENGTH}) == b"k" * MIN_KEY_LENGTH
    with pytest.raises(PseudonymKeyError, match=rf"{PSEUDONYM_KEY_ENV} must hold a secret of at least 16 .*received 0"):
        pseudonym_key(True, {})
    with pytest.raises(PseudonymKeyError, match="received 5"):
        pseudonym_key(True, {PSEUDONYM_KEY_ENV: "short"})
    assert issubclass(PseudonymKeyError, ValueError)
