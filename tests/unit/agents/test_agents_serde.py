import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agents.serde import RAW_TAG, ZSTD_TAG, ZstdCipher, make_serde

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=50)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=10), inner, max_size=8),
    max_leaves=40,
)


def test_cipher_tags_by_threshold():
    c = ZstdCipher(threshold=100)
    assert c.encrypt(b"x" * 99) == (RAW_TAG, b"x" * 99)
    tag, data = c.encrypt(b"x" * 1000)
    assert tag == ZSTD_TAG and len(data) < 100
    assert c.decrypt(tag, data) == b"x" * 1000
    with pytest.raises(ValueError, match="unknown"):
        c.decrypt("rot13", b"")


def test_serde_type_tags_compose_like_encrypted_serializer():
    serde = make_serde(threshold=64)
    assert serde.dumps_typed({"a": 1})[0] == "msgpack+raw"
    typ, blob = serde.dumps_typed({"a": "y" * 1000})
    assert typ == "msgpack+zstd"
    assert zstandard.ZstdDecompressor().decompress(blob)  # a real zstd frame
    assert serde.dumps_typed(None)[0] == "null+raw"
    assert serde.loads_typed(serde.dumps_typed(None)) is None


@settings(max_examples=20, deadline=None)
@given(value=json_values, pad=st.integers(0, 3000))
def test_serde_round_trip(value, pad):
    serde = make_serde()
    obj = {"v": value, "pad": "p" * pad}
    assert serde.loads_typed(serde.dumps_typed(obj)) == obj


def test_untagged_stock_payloads_still_load():
    stock = JsonPlusSerializer()
    obj = {"grades": {"q": {"score": 1.0, "feedback": "z" * 2000}}}
    assert make_serde().loads_typed(stock.dumps_typed(obj)) == obj


def test_corrupt_compressed_payload_raises():
    with pytest.raises(zstandard.ZstdError):
        make_serde().loads_typed(("msgpack+zstd", b"not zstd at all"))


def test_concurrent_use_from_threads_is_safe():
    serde = make_serde(threshold=16)
    payloads = [{"i": i, "text": os.urandom(64).hex() * (1 + i % 50)} for i in range(200)]
    barrier = threading.Barrier(8)

    def work(chunk: list[dict]) -> bool:
        barrier.wait()
        return all(serde.loads_typed(serde.dumps_typed(p)) == p for p in chunk)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, [payloads[i::8] for i in range(8)]))
