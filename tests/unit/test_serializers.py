"""Edge cases of caraway.protocol.serializers: accept lists, tags, errors, fallbacks."""

from __future__ import annotations

import collections
import dataclasses
import json
import pickle
import sys
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caraway.exceptions import (
    ContentDisallowed,
    ImproperlyConfigured,
    ProtocolError,
    SerializationError,
)
from caraway.protocol.serializers import dumps, dumps_json, loads, normalize_accept

JSON_ONLY = normalize_accept(["json"])


def _roundtrip(value: Any) -> Any:
    body, content_type, encoding = dumps(value)
    return loads(body, content_type, encoding, accept=JSON_ONLY)


def test_short_names_and_content_types_normalize_to_content_types() -> None:
    assert normalize_accept(["json", "pickle", "application/x-yaml"]) == {
        "application/json",
        "application/x-python-serialize",
        "application/x-yaml",
    }
    assert normalize_accept(["msgpack"]) == {"application/x-msgpack"}
    assert normalize_accept(None) == {"application/json"}
    assert normalize_accept("json") == {"application/json"}


def test_unknown_accept_name_is_a_configuration_error_listing_the_choices() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'xml'.*json, msgpack, pickle, yaml"):
        normalize_accept(["json", "xml"])


def test_unaccepted_content_type_is_refused_before_decoding() -> None:
    body = pickle.dumps(object())
    with pytest.raises(ContentDisallowed) as caught:
        loads(body, "application/x-python-serialize", "binary", accept=JSON_ONLY)
    assert "application/x-python-serialize" in str(caught.value)
    assert "['application/json']" in str(caught.value)


def test_pickle_round_trips_only_when_accepted() -> None:
    body, content_type, encoding = dumps({1, 2}, "pickle")
    assert (content_type, encoding) == ("application/x-python-serialize", "binary")
    assert loads(body, content_type, encoding, accept=normalize_accept(["pickle"])) == {1, 2}


def test_bad_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        loads(b"[1, 2", "application/json", "utf-8", accept=JSON_ONLY)


def test_bad_pickle_is_a_protocol_error() -> None:
    accept = normalize_accept(["pickle"])
    with pytest.raises(ProtocolError, match="cannot decode"):
        loads(b"not a pickle", "application/x-python-serialize", "binary", accept=accept)


def test_unencodable_value_names_its_type_and_the_way_out() -> None:
    with pytest.raises(SerializationError) as caught:
        dumps([1, {"s": {1, 2}}])
    message = str(caught.value)
    assert "'set' is not JSON serializable" in message
    assert "accept_content" in message and "serializer='pickle'" in message


def test_dataclass_is_not_silently_turned_into_an_object() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    with pytest.raises(SerializationError, match=r"'.*Point' is not JSON serializable"):
        dumps([Point(1)])


def test_object_with_a_json_reducer_is_encoded_by_it() -> None:
    class Money:
        def __json__(self) -> dict[str, Any]:
            return {"amount": 5}

    assert _roundtrip([Money()]) == [{"amount": 5}]


def test_unknown_serializer_is_a_configuration_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown serializer 'xml'"):
        dumps(1, "xml")


def test_msgpack_without_the_package_says_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # what an absent package imports as
    with pytest.raises(ImproperlyConfigured, match="pip install msgpack"):
        dumps([1], "msgpack")
    with pytest.raises(ProtocolError, match="pip install msgpack"):
        loads(b"\x91\x01", "application/x-msgpack", "binary", accept=normalize_accept(["msgpack"]))


def test_msgpack_round_trips_when_installed() -> None:
    pytest.importorskip("msgpack", reason="msgpack is a test extra: pip install -e '.[test]'")
    body, content_type, encoding = dumps([1, "a"], "msgpack")
    assert loads(body, content_type, encoding, accept=normalize_accept(["msgpack"])) == [1, "a"]


def test_yaml_round_trips_and_loads_only_safe_yaml() -> None:
    import yaml  # a test extra: CI has it, so this never skips there

    accept = normalize_accept(["yaml"])
    body, content_type, encoding = dumps({"a": [1, "b"], "n": None}, "yaml")
    assert content_type == "application/x-yaml" and yaml.safe_load(body) == {
        "a": [1, "b"],
        "n": None,
    }
    assert loads(body, content_type, encoding, accept=accept) == {"a": [1, "b"], "n": None}
    unsafe = b"!!python/object/apply:os.system ['true']"
    with pytest.raises(Exception, match="python/object"):
        loads(unsafe, "application/x-yaml", "utf-8", accept=accept)


def test_real_uuid_is_tagged_but_a_uuid_shaped_string_stays_a_string() -> None:
    text = "00000000-0000-0000-0000-000000000001"
    value = {"s": text, "nested": [(1, uuid.UUID(text))]}
    body, _, _ = dumps(value)
    assert json.loads(body)["nested"][0][1] == {
        "__type__": "uuid",
        "__value__": {"hex": "0" * 31 + "1"},
    }
    assert _roundtrip(value) == {"s": text, "nested": [[1, uuid.UUID(text)]]}
    assert json.loads(dumps([text])[0]) == [text]


def test_a_uuid_inside_dict_and_list_subclasses_is_found_and_tagged() -> None:
    """The walk looks for UUIDs in containers of any dict/list/tuple type, not only the
    exact ones (header values a receiver or a caller built as an OrderedDict...)."""

    class Items(list[Any]):
        pass

    text = "00000000-0000-0000-0000-000000000002"
    headers = collections.OrderedDict(ids=Items([uuid.UUID(text)]))
    tagged = {"__type__": "uuid", "__value__": {"hex": "0" * 31 + "2"}}
    assert json.loads(dumps_json({"h": headers}, uuids_only_in=(headers,))) == {
        "h": {"ids": [tagged]}
    }


def test_big_integers_and_integer_keys_encode_like_pythons_json() -> None:
    assert _roundtrip({1: 2**70}) == {"1": 2**70}


def test_nan_from_a_python_peer_is_read() -> None:
    value = loads(b"[NaN, 1]", "application/json", "utf-8", accept=JSON_ONLY)
    assert value[0] != value[0] and value[1] == 1


def test_only_objects_with_exactly_the_two_tag_keys_are_decoded() -> None:
    body = b'[{"__type__": "date", "__value__": "2030-01-02", "x": 1}]'
    assert loads(body, "application/json", "utf-8", accept=JSON_ONLY) == [
        {"__type__": "date", "__value__": "2030-01-02", "x": 1}
    ]


def test_unknown_tag_is_left_as_data() -> None:
    body = b'{"a": {"__type__": "frobnicator", "__value__": 1}}'
    decoded = loads(body, "application/json", "utf-8", accept=JSON_ONLY)
    assert decoded == {"a": {"__type__": "frobnicator", "__value__": 1}}


def test_bad_tag_value_is_a_protocol_error() -> None:
    body = b'[{"__type__": "datetime", "__value__": "yesterday"}]'
    with pytest.raises(ProtocolError, match="'datetime'"):
        loads(body, "application/json", "utf-8", accept=JSON_ONLY)


def test_json_in_another_text_encoding_is_recoded() -> None:
    body = '["caf\u00e9"]'.encode("latin-1")
    assert loads(body, "application/json", "latin-1", accept=JSON_ONLY) == ["caf\u00e9"]


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=16)
    | st.uuids()
    | st.datetimes(timezones=st.just(timezone.utc))
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_values)
def test_json_round_trip_preserves_values_and_types(value: Any) -> None:
    assert _roundtrip(value) == value


def test_naive_datetime_keeps_no_offset_like_kombu() -> None:
    naive = datetime(2030, 1, 2, 3, 4, 5)
    assert json.loads(dumps([naive])[0]) == [
        {"__type__": "datetime", "__value__": "2030-01-02T03:04:05"}
    ]
    assert _roundtrip([naive]) == [naive]


def test_integers_beyond_64_bits_decode_exactly() -> None:
    body = b"[-9223372036854775809, 123456789012345678901234567890, 1.5]"
    decoded = loads(body, "application/json", "utf-8", accept=JSON_ONLY)
    assert decoded == [-9223372036854775809, 123456789012345678901234567890, 1.5]
    assert all(type(value) is int for value in decoded[:2])
