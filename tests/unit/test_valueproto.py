"""The hand-written wire decoding agrees with Feast's own protobuf and key serialization."""

from __future__ import annotations

import numpy as np
import pytest

from feature_store.online.valueproto import (
    decode_float_list_into,
    decode_timestamp,
    decode_value,
    float_list_header,
    serialize_string_entity_key,
)

feast_protos = pytest.importorskip("feast.protos.feast.types.Value_pb2")


def _v(**kw: object) -> bytes:
    return feast_protos.Value(**kw).SerializeToString()


def test_scalars_and_lists_round_trip() -> None:
    V = feast_protos
    cases = [
        (_v(int64_val=-42), -42),
        (_v(int64_val=2**62), 2**62),
        (_v(int32_val=-7), -7),
        (_v(double_val=3.25), 3.25),
        (_v(string_val="héllo"), "héllo"),
        (_v(bool_val=True), True),
        (_v(string_list_val=V.StringList(val=["a", "", "ü"])), ["a", "", "ü"]),
        (_v(int64_list_val=V.Int64List(val=[1, -2, 2**40])), [1, -2, 2**40]),
        (_v(bytes_val=b"\x00\x01"), b"\x00\x01"),
    ]
    for raw, expected in cases:
        assert decode_value(raw) == expected
    assert decode_value(b"") is None
    assert decode_value(None) is None


def test_float_lists_fast_and_slow_paths() -> None:
    V = feast_protos
    vec = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    raw = _v(float_list_val=V.FloatList(val=vec.tolist()))
    np.testing.assert_array_equal(decode_value(raw), vec)
    out = np.zeros(64, dtype=np.float32)
    assert decode_float_list_into(raw, out)
    np.testing.assert_array_equal(out, vec)
    assert raw.startswith(float_list_header(64))
    assert not decode_float_list_into(raw, np.zeros(32, dtype=np.float32))
    doubles = _v(double_list_val=V.DoubleList(val=[1.5, -2.0]))
    np.testing.assert_array_equal(decode_value(doubles), [1.5, -2.0])


def test_timestamp() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp(seconds=1_700_000_000, nanos=500_000_000).SerializeToString()
    assert decode_timestamp(ts).timestamp() == 1_700_000_000.5
    assert decode_timestamp(None) is None


def test_entity_key_matches_feast() -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    for value in ("u1", "ü-ñ", "", "x" * 300):
        ek = EntityKey(join_keys=["user_id"], entity_values=[feast_protos.Value(string_val=value)])
        assert serialize_string_entity_key("user_id", value) == serialize_entity_key(ek, 3)


def test_redis_field_hash_matches_feast() -> None:
    from feast.infra.online_stores.helpers import _mmh3

    from feature_store.online.redis import feast_field_hash

    for name in ("lte_avg__v1:lte", "recent_items__v12:item_ids"):
        view, feat = name.split(":")
        assert feast_field_hash(view, feat) == _mmh3(name)


def test_packed_and_string_lists_at_the_edges() -> None:
    """The vectorised varint decoder and the short-string fast path agree with protobuf on extremes:
    negatives (10-byte varints), int64 bounds, empty lists, strings on both sides of 128 bytes."""
    V = feast_protos
    rng = np.random.default_rng(1)
    ints = [0, 1, -1, 127, 128, -(2**63), 2**63 - 1, 2**35, *rng.integers(-(2**62), 2**62, 200).tolist()]
    assert decode_value(_v(int64_list_val=V.Int64List(val=ints))) == ints
    assert decode_value(_v(int32_list_val=V.Int32List(val=[-5, 0, 2**31 - 1]))) == [-5, 0, 2**31 - 1]
    assert decode_value(_v(bool_list_val=V.BoolList(val=[True, False, True]))) == [True, False, True]
    strings = ["", "i0042", "x" * 127, "y" * 128, "z" * 300, "ü" * 70]
    assert decode_value(_v(string_list_val=V.StringList(val=strings))) == strings
    assert decode_value(_v(int64_list_val=V.Int64List(val=[]))) in ([], None)


def test_truncated_packed_varints_are_refused() -> None:
    from feature_store.online.valueproto import _packed_varints

    with pytest.raises(ValueError, match="truncated"):
        _packed_varints(b"\x80\x80", signed=True)
