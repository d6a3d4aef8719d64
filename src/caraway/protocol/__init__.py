"""The wire: Celery protocol v2 messages, kombu's Redis envelope, result documents.

Sans-I/O and golden-tested against captures of real Celery traffic (tests/vectors);
no other package builds or parses headers, envelopes or result documents.
"""

from caraway.protocol.envelope import Unpacked, mark_redelivered, pack, unpack
from caraway.protocol.message import (
    Message,
    TaskMessage,
    decode,
    default_origin,
    encode,
    parse_datetime,
    peek_eta,
    peek_id,
    safe_repr,
)
from caraway.protocol.results import (
    ResultRef,
    decode_document,
    encode_document,
    exception_from_dict,
    exception_to_dict,
    group_tuple,
    parse_group_tuple,
    parse_result_tuple,
    result_document,
    result_tuple,
)
from caraway.protocol.serializers import dumps, loads, normalize_accept

__all__ = [
    "Message",
    "ResultRef",
    "TaskMessage",
    "Unpacked",
    "decode",
    "decode_document",
    "default_origin",
    "dumps",
    "encode",
    "encode_document",
    "exception_from_dict",
    "exception_to_dict",
    "group_tuple",
    "loads",
    "mark_redelivered",
    "normalize_accept",
    "pack",
    "parse_datetime",
    "parse_group_tuple",
    "parse_result_tuple",
    "peek_eta",
    "peek_id",
    "result_document",
    "result_tuple",
    "safe_repr",
    "unpack",
]
