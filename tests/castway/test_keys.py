"""Stream keys are random, shown once, and stored only as a hash."""

from castway.keys import STREAM_KEY_PREFIX, generate_stream_key, hash_stream_key


def test_keys_are_unique_and_url_safe() -> None:
    keys = {generate_stream_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(STREAM_KEY_PREFIX)
        assert key.replace("_", "").replace("-", "").isalnum()


def test_the_stored_hash_is_not_the_key_and_tells_keys_apart() -> None:
    key = generate_stream_key()
    stored = hash_stream_key(key)
    assert key not in stored
    assert hash_stream_key(key) == stored
    assert hash_stream_key(key + "x") != stored
