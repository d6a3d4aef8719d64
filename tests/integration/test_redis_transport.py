"""The Redis transport against a real server: Celery's key layout, claims, leases, parking."""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from caraway.brokers.contracts import Delivery, Revocations
from caraway.brokers.redis.admin import RedisAdmin
from caraway.brokers.redis.backend import RedisBackend
from caraway.brokers.redis.transport import RedisTransport
from caraway.clients.redis import HeldConnection, KeyWatch, connect, parse_redis_url
from caraway.exceptions import BrokerConnectionError, BrokerError, ImproperlyConfigured
from caraway.protocol.envelope import unpack
from caraway.protocol.message import Message
from tests.helpers import wait_until

pytestmark = pytest.mark.redis

MakeMessage = Callable[..., Message]
SEP = "\x06\x16"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.message.headers["id"] for d in deliveries]


def ids_of(messages: list[Message]) -> list[str]:
    return [m.headers["id"] for m in messages]


def test_publish_pushes_a_kombu_envelope_with_a_unique_tag(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    first, second = make_message(), make_message()
    transport.publish(first, queue="q")
    transport.publish(second, queue="q")

    stored = raw.lrange(f"{prefix}q", 0, -1)
    envelopes = [json.loads(item) for item in stored]
    # LPUSH: the newest message is at the left end
    assert [e["headers"]["id"] for e in envelopes] == [second.headers["id"], first.headers["id"]]
    props = envelopes[1]["properties"]
    assert props["delivery_info"] == {"exchange": "", "routing_key": "q"}
    assert props["body_encoding"] == "base64"
    assert props["priority"] == 0
    tags = {e["properties"]["delivery_tag"] for e in envelopes}
    assert len(tags) == 2
    assert all(uuid.UUID(tag).version == 4 for tag in tags)
    assert unpack(stored[1]).message.body == first.body


def test_declaring_a_queue_writes_both_binding_tables_once(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    transport.publish(make_message(), queue="lopri")
    member = f"lopri{SEP}{SEP}lopri".encode()
    assert raw.smembers(f"{prefix}_kombu.binding.lopri") == {member}
    assert raw.smembers(f"{prefix}_kombu.binding_permanent.lopri") == {member}

    # once per queue per transport: a second publish does not write the tables again
    raw.delete(f"{prefix}_kombu.binding.lopri")
    transport.publish(make_message(), queue="lopri")
    assert raw.exists(f"{prefix}_kombu.binding.lopri") == 0


def test_binding_member_matches_the_celery_capture(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    vector = json.loads((VECTORS / "redis-queue-lopri.json").read_text())
    transport.publish(make_message(), queue="lopri")
    for key in ("_kombu.binding.lopri", "_kombu.binding_permanent.lopri"):
        expected = {m.encode() for m in vector["redis_keys"][key]["value"]}
        assert raw.smembers(prefix + key) == expected


def test_priorities_land_in_kombu_bucket_keys(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
    admin: RedisAdmin,
) -> None:
    vector = json.loads((VECTORS / "redis-priority.json").read_text())
    captured = {k for k in vector["redis_keys"] if not k.startswith("_kombu")}
    for priority in (0, 1, 3, 5, 6, 9):
        transport.publish(make_message(priority=priority), queue="celery")
    ours = {k.decode()[len(prefix) :] for k in raw.keys(f"{prefix}celery*")}
    assert ours == captured == {"celery", f"celery{SEP}3", f"celery{SEP}6", f"celery{SEP}9"}
    assert raw.llen(f"{prefix}celery{SEP}3") == 2
    assert admin.size("celery") == 6


def test_fetch_serves_the_lower_bucket_first_and_fifo_within_a_bucket(
    transport: RedisTransport, make_message: MakeMessage
) -> None:
    published = [make_message(priority=p) for p in (9, 0, 6, 0, 3)]
    transport.publish_many([(m, "q") for m in published])
    got = transport.fetch(["q"], limit=10, timeout=1, owner="n/1")
    order = [published[i].headers["id"] for i in (1, 3, 4, 2, 0)]
    assert ids(got) == order


def test_fetch_takes_bucket_zero_of_every_queue_before_higher_buckets(
    transport: RedisTransport, make_message: MakeMessage
) -> None:
    low_a, high_b = make_message(priority=6), make_message(priority=0)
    transport.publish(low_a, queue="a")
    transport.publish(high_b, queue="b")
    got = transport.fetch(["a", "b"], limit=2, timeout=1, owner="n/1")
    assert ids(got) == [high_b.headers["id"], low_a.headers["id"]]
    assert [d.queue for d in got] == ["b", "a"]


def test_fetch_returns_at_most_limit_and_leaves_the_rest(
    transport: RedisTransport, make_message: MakeMessage, admin: RedisAdmin
) -> None:
    transport.publish_many([(make_message(), "q") for _ in range(5)])
    assert len(transport.fetch(["q"], limit=3, timeout=1, owner="n/1")) == 3
    assert admin.size("q") == 2


def test_claim_is_recorded_where_celery_looks_for_it(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
    admin: RedisAdmin,
) -> None:
    transport.publish(make_message(), queue="q")
    before = time.time()
    (delivery,) = transport.fetch(["q"], limit=1, timeout=1, owner="node/7")

    record = json.loads(raw.hget(f"{prefix}unacked", delivery.tag) or b"null")
    assert record[1:] == ["", "q"]
    assert record[0]["properties"]["delivery_tag"] == delivery.tag
    score = raw.zscore(f"{prefix}unacked_index", delivery.tag)
    assert score is not None and before - 1 <= score <= time.time() + 1
    assert raw.smembers(f"{prefix}caraway.owner.node/7") == {delivery.tag.encode()}
    assert admin.size("q") == 0
    assert delivery.delivery_count == 1 and not delivery.redelivered


def test_ack_removes_every_trace_of_the_claim(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    transport.publish_many([(make_message(), "q") for _ in range(3)])
    deliveries = transport.fetch(["q"], limit=3, timeout=1, owner="n/1")
    deliveries[0].ack()
    transport.ack_many(deliveries[1:])
    for key in ("unacked", "unacked_index", "caraway.claims", "caraway.owner.n/1"):
        assert raw.exists(prefix + key) == 0, key
    assert transport.recover("n/1") == 0


def test_requeue_puts_the_message_next_in_line_marked_redelivered(
    transport: RedisTransport, make_message: MakeMessage
) -> None:
    first, second = make_message(), make_message()
    transport.publish_many([(first, "q"), (second, "q")])
    (delivery,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    delivery.requeue()
    (again,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    assert again.message.headers["id"] == first.headers["id"]
    assert again.redelivered
    assert again.delivery_count == 2


def test_killed_consumer_messages_come_back_by_recover(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage
) -> None:
    victim, survivor = make_transport(), make_transport()
    victim.publish_many([(make_message(), "q") for _ in range(3)])
    taken = victim.fetch(["q"], limit=2, timeout=1, owner="host/100")
    assert len(taken) == 2  # ... and the consumer dies without acking

    assert survivor.recover("host/100") == 2
    back = survivor.fetch(["q"], limit=5, timeout=1, owner="host/101")
    assert set(ids(taken)) <= set(ids(back))
    assert all(d.redelivered for d in back if d.message.headers["id"] in ids(taken))
    assert survivor.recover("host/100") == 0


def test_recover_leaves_other_owners_claims_alone(
    transport: RedisTransport, make_message: MakeMessage, admin: RedisAdmin
) -> None:
    transport.publish_many([(make_message(), "q") for _ in range(2)])
    transport.fetch(["q"], limit=1, timeout=1, owner="a/1")
    transport.fetch(["q"], limit=1, timeout=1, owner="b/1")
    assert transport.recover("a/1") == 1
    assert admin.size("q") == 1


def test_visibility_sweep_restores_stale_claims_but_not_renewed_ones(
    make_transport: Callable[..., RedisTransport],
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
) -> None:
    transport = make_transport(visibility_timeout=30)
    dead, alive = make_message(), make_message()
    transport.publish_many([(dead, "q"), (alive, "q")])
    (lost,) = transport.fetch(["q"], limit=1, timeout=1, owner="gone/1")
    (held,) = transport.fetch(["q"], limit=1, timeout=1, owner="live/1")
    # both claims are older than the visibility timeout ...
    old = time.time() - 60
    raw.zadd(f"{prefix}unacked_index", {lost.tag: old, held.tag: old})
    transport.renew("live/1")  # ... but the live owner renews its own

    assert transport.restore_visible() == 1
    (back,) = transport.fetch(["q"], limit=5, timeout=1, owner="other/1")
    assert back.message.headers["id"] == dead.headers["id"]
    assert back.redelivered
    assert raw.hexists(f"{prefix}unacked", held.tag)


def test_sweep_stands_aside_while_another_consumer_holds_the_mutex(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    transport.publish(make_message(), queue="q")
    (claim,) = transport.fetch(["q"], limit=1, timeout=1, owner="gone/1")
    raw.zadd(f"{prefix}unacked_index", {claim.tag: time.time() - 7200})
    raw.set(f"{prefix}unacked_mutex", "celery-token", px=60000)
    assert transport.restore_visible() == 0
    assert raw.get(f"{prefix}unacked_mutex") == b"celery-token"
    raw.delete(f"{prefix}unacked_mutex")
    assert transport.restore_visible() == 1
    assert raw.exists(f"{prefix}unacked_mutex") == 0


def test_sweep_restores_a_claim_celery_left_behind(
    transport: RedisTransport, raw: redis.Redis, prefix: str
) -> None:
    vector = json.loads((VECTORS / "redis-unacked.json").read_text())
    (tag, record) = next(iter(vector["during_execution"]["unacked"]["value"].items()))
    raw.hset(f"{prefix}unacked", tag, record)
    raw.zadd(f"{prefix}unacked_index", {tag: time.time() - 7200})

    assert transport.restore_visible() == 1
    (back,) = transport.fetch(["celery"], limit=1, timeout=1, owner="n/1")
    assert back.tag == tag
    assert back.redelivered
    assert back.message.headers["task"] == "wtasks.slow"


def test_restore_follows_the_binding_table_of_a_named_exchange(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
    admin: RedisAdmin,
) -> None:
    transport.publish(make_message(), queue="video", exchange="media", routing_key="media.video")
    assert raw.smembers(f"{prefix}_kombu.binding.media") == {f"media.video{SEP}{SEP}video".encode()}
    (claim,) = transport.fetch(["video"], limit=1, timeout=1, owner="gone/1")
    assert (claim.exchange, claim.routing_key) == ("media", "media.video")
    raw.zadd(f"{prefix}unacked_index", {claim.tag: time.time() - 7200})
    assert transport.restore_visible() == 1
    assert admin.size("video") == 1


def test_parked_message_keeps_its_envelope_and_returns_when_due(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    eta_header = "2030-01-01T00:00:00+00:00"
    transport.publish(make_message(eta=eta_header), queue="q")
    (delivery,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    envelope = delivery.state.raw
    delivery.park(time.time() + 0.3)

    assert raw.hexists(f"{prefix}unacked", delivery.tag) == 0
    (member,) = raw.zrange(f"{prefix}caraway.schedule", 0, -1)
    assert member.endswith(envelope)
    assert transport.fetch(["q"], limit=1, timeout=0.05, owner="n/1") == []

    start = time.monotonic()
    (back,) = transport.fetch(["q"], limit=1, timeout=3, owner="n/1")
    assert time.monotonic() - start < 1.5
    assert back.tag == delivery.tag
    assert back.message.headers["eta"] == eta_header
    assert raw.zcard(f"{prefix}caraway.schedule") == 0


def test_due_parked_message_is_promoted_exactly_once_with_two_fetchers(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage, admin: RedisAdmin
) -> None:
    producer = make_transport()
    producer.publish_many([(make_message(), "q") for _ in range(4)])
    parked = producer.fetch(["q"], limit=4, timeout=1, owner="p/1")
    due = time.time() + 0.2
    for delivery in parked:
        delivery.park(due)

    fetchers = [make_transport(), make_transport()]
    results: list[list[Delivery]] = [[], []]

    def consume(index: int) -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sum(map(len, results)) < 4:
            results[index] += fetchers[index].fetch(["q"], limit=1, timeout=0.3, owner=f"f/{index}")

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    got = ids(results[0]) + ids(results[1])
    assert sorted(got) == sorted(ids(parked))  # each once, none lost
    assert admin.size("q") == 0


def test_dead_letters_keep_the_reason_and_can_be_requeued_or_purged(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
    admin: RedisAdmin,
) -> None:
    first, second = make_message(), make_message()
    transport.publish_many([(first, "q"), (second, "q")])
    a, b = transport.fetch(["q"], limit=2, timeout=1, owner="n/1")
    a.dead_letter("kept killing its child")
    b.dead_letter("undecodable")
    assert raw.hlen(f"{prefix}unacked") == 0

    letters = admin.dead_letters()
    assert [(d.queue, d.reason) for d in letters] == [
        ("q", "kept killing its child"),
        ("q", "undecodable"),
    ]
    assert letters[0].message.headers["id"] == first.headers["id"]
    assert letters[0].failed_at == pytest.approx(time.time(), abs=5)

    assert admin.requeue_dead_letters([letters[0].id]) == 1
    assert ids(transport.fetch(["q"], limit=5, timeout=1, owner="n/1")) == [first.headers["id"]]
    assert admin.purge_dead_letters() == 1
    assert admin.dead_letters() == []


def test_envelope_without_a_tag_is_set_aside_not_lost_or_retried(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    admin: RedisAdmin,
) -> None:
    raw.lpush(f"{prefix}q", b'{"body": "e30=", "properties": {}}')
    with caplog.at_level("ERROR", logger="caraway.brokers.redis.transport"):
        assert transport.fetch(["q"], limit=1, timeout=0.05, owner="n/1") == []
    (letter,) = admin.dead_letters()
    assert "delivery_tag" in letter.reason
    assert letter.queue == "q"
    # never silent: one line naming the dead letter's id
    assert f"as dead letter(s) {letter.id} " in caplog.text


def test_purge_and_size_cover_every_priority_bucket(
    transport: RedisTransport, make_message: MakeMessage, admin: RedisAdmin
) -> None:
    transport.publish_many([(make_message(priority=p), "q") for p in (0, 3, 6, 9, 9)])
    assert admin.size("q") == 5
    assert admin.purge("q") == 5
    assert admin.size("q") == 0


def test_idle_fetch_wakes_when_a_message_arrives(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage
) -> None:
    consumer, producer = make_transport(polling_interval=5), make_transport()
    message = make_message()
    timer = threading.Timer(0.2, lambda: producer.publish(message, queue="q"))
    timer.start()
    try:
        start = time.monotonic()
        got = consumer.fetch(["q"], limit=1, timeout=4, owner="n/1")
        elapsed = time.monotonic() - start
    finally:
        timer.join()
    assert ids(got) == [message.headers["id"]]
    assert elapsed < 1.5  # woken by the blocking wait, not the 5 s re-check


def test_fetch_on_an_empty_queue_returns_nothing_after_the_timeout(
    transport: RedisTransport,
) -> None:
    start = time.monotonic()
    assert transport.fetch(["q"], limit=4, timeout=0.3, owner="n/1") == []
    assert 0.25 <= time.monotonic() - start < 2


def test_claim_whose_reply_was_lost_is_released_before_the_next_claim(
    transport: RedisTransport, make_message: MakeMessage
) -> None:
    message = make_message()
    transport.publish(message, queue="q")
    # The script runs but its reply never arrives (connection dropped mid-fetch).
    transport._run_claim(["q"], 1, "n/1", "f" * 32)
    transport._doubtful.add(("n/1", "f" * 32))

    (got,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    assert got.message.headers["id"] == message.headers["id"]
    assert not got.redelivered  # nobody saw it the first time
    assert transport._doubtful == set()


def test_unreachable_redis_raises_broker_connection_error() -> None:
    transport = RedisTransport(
        "redis://127.0.0.1:1/0", options={"max_retries": 1, "socket_connect_timeout": 0.5}
    )
    try:
        with pytest.raises(BrokerConnectionError, match=r"127\.0\.0\.1:1"):
            transport.fetch(["q"], limit=1, timeout=0.1, owner="n/1")
    finally:
        transport.close()


def test_global_keyprefix_applies_to_every_key(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    transport.publish(make_message(), queue="q")
    (delivery,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    delivery.park(time.time() + 60)
    names: set[Any] = {k.decode() for k in raw.keys(f"{prefix}*")}
    assert {f"{prefix}_kombu.binding.q", f"{prefix}caraway.schedule"} <= names
    assert raw.exists("caraway.schedule", "_kombu.binding.q") == 0


def test_claimed_envelope_that_cannot_be_unpacked_is_dead_lettered(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    admin: RedisAdmin,
) -> None:
    envelope = {
        "body": "not base64!",
        "headers": {"task": "x", "id": "1"},
        "properties": {"delivery_tag": "t-1", "body_encoding": "base64"},
    }
    raw.lpush(f"{prefix}q", json.dumps(envelope))
    with caplog.at_level("ERROR", logger="caraway.brokers.redis.transport"):
        assert transport.fetch(["q"], limit=1, timeout=0.05, owner="n/1") == []
    (letter,) = admin.dead_letters()
    assert letter.reason.startswith("cannot unpack envelope")
    assert "message t-1 on queue 'q' is not a usable envelope" in caplog.text
    assert raw.hlen(f"{prefix}unacked") == 0
    assert raw.scard(f"{prefix}caraway.owner.n/1") == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://:s3cret@cache:6380/4",
            {
                "kind": "tcp",
                "host": "cache",
                "port": 6380,
                "db": 4,
                "password": "s3cret",
                "tls": False,
            },
        ),
        (
            "rediss://user:pw@h/2?ssl_cert_reqs=CERT_NONE",
            {"tls": True, "db": 2, "username": "user"},
        ),
        (
            "redis+socket:///run/redis.sock?virtual_host=3",
            {"kind": "unix", "path": "/run/redis.sock", "db": 3},
        ),
        (
            "sentinel://:pw@s1:26379/1;sentinel://s2:26380",
            {
                "kind": "sentinel",
                "db": 1,
                "password": "pw",
                "sentinels": (("s1", 26379), ("s2", 26380)),
            },
        ),
    ],
)
def test_celery_redis_urls_are_understood(url: str, expected: dict[str, Any]) -> None:
    target = parse_redis_url(url)
    assert {name: getattr(target, name) for name in expected} == expected
    assert "s3cret" not in target.redacted() and "pw" not in target.redacted()


def test_sentinel_without_master_name_says_how_to_fix_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        connect("sentinel://127.0.0.1:26379")


def test_tls_options_from_broker_use_ssl_reach_the_client() -> None:
    client = connect(
        "rediss://127.0.0.1:6379/0", {"ssl": {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca"}}
    )
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert kwargs["ssl_ca_certs"] == "/ca"
    finally:
        client.close()


# -- producer-side parking, the schedule listing and revocations ------------------------


def test_publish_parked_message_is_listed_soonest_first_and_delivered_when_due(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
    admin: RedisAdmin,
) -> None:
    later, sooner = make_message(), make_message(priority=6)
    now = time.time()
    transport.publish_parked(later, queue="q", eta=now + 60)
    transport.publish_parked(sooner, queue="q", eta=now + 0.3)

    assert raw.llen(f"{prefix}q") == 0
    listed = admin.scheduled()
    assert [(queue, m.headers["id"]) for _, queue, m in listed] == [
        ("q", sooner.headers["id"]),
        ("q", later.headers["id"]),
    ]
    assert listed[0][0] == pytest.approx(now + 0.3, abs=0.001)
    assert admin.scheduled(limit=1)[0][2].headers["id"] == sooner.headers["id"]
    # the queue is declared as a publish declares it, so Celery can restore to it
    assert raw.scard(f"{prefix}_kombu.binding.q") == 1

    (delivery,) = transport.fetch(["q"], limit=2, timeout=3, owner="n/1")
    assert delivery.message.headers["id"] == sooner.headers["id"]
    assert delivery.message.properties["priority"] == 6
    assert [m.headers["id"] for _, _, m in admin.scheduled()] == [later.headers["id"]]


def test_scheduled_names_the_queue_of_a_parked_delivery_from_a_priority_bucket(
    transport: RedisTransport, make_message: MakeMessage, admin: RedisAdmin
) -> None:
    message = make_message(priority=9)
    transport.publish(message, queue="hi")
    (delivery,) = transport.fetch(["hi"], limit=1, timeout=1, owner="n/1")
    delivery.park(time.time() + 60)

    ((_eta, queue, listed),) = admin.scheduled()
    assert queue == "hi"
    assert listed.headers["id"] == message.headers["id"]


def test_revoked_ids_live_under_the_global_prefix_until_they_expire(
    transport: RedisTransport, raw: redis.Redis, prefix: str, admin: RedisAdmin
) -> None:
    assert isinstance(admin, Revocations)
    assert admin.revoked_ids() == []
    admin.record_revoked(["a", "b"], expires=0.2)
    admin.record_revoked(["c"], expires=60)

    assert sorted(admin.revoked_ids()) == ["a", "b", "c"]
    assert raw.zcard(f"{prefix}caraway.revoked") == 3
    deadline = time.monotonic() + 3
    while "a" in admin.revoked_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admin.revoked_ids() == ["c"]

    # expired ids are swept from the zset by the next write, not only hidden on read
    admin.record_revoked([], expires=60)
    assert raw.zrange(f"{prefix}caraway.revoked", 0, -1) == [b"c"]


def test_publishes_from_many_threads_all_arrive(
    transport: RedisTransport, make_message: MakeMessage
) -> None:
    sent: list[str] = []

    def send() -> None:
        for _ in range(50):
            message = make_message()
            transport.publish(message, queue="q")
            sent.append(message.headers["id"])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    got = transport.fetch(["q"], limit=500, timeout=1, owner="n/1")
    assert sorted(ids(got)) == sorted(sent)
    assert len(sent) == 200


def test_publish_reconnects_after_the_server_drops_the_held_connection(
    transport: RedisTransport, raw: redis.Redis, make_message: MakeMessage, admin: RedisAdmin
) -> None:
    transport.publish(make_message(), queue="q")
    held = transport._held._conn
    held.send_command("CLIENT", "ID")
    client_id = int(held.read_response())
    # only this connection: the server is shared with other tests
    assert raw.client_kill_filter(_id=str(client_id)) == 1

    transport.publish(make_message(), queue="q")
    assert admin.size("q") == 2


def test_a_script_the_server_does_not_know_is_loaded_on_first_use(redis_url: str) -> None:
    client = connect(redis_url)
    held = HeldConnection(client)
    try:
        marker = uuid.uuid4().hex  # a source no one has loaded yet
        sha = held.script(f"return '{marker}'")
        assert client.script_exists(sha) == [False]
        (reply,) = held.run([held.evalsha(sha, [], [])])
        assert reply in (marker.encode(), marker)
    finally:
        held.close()
        client.close()


def test_ack_then_fetch_acks_and_claims_in_one_round_trip(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    transport.publish_many([(make_message(), "q") for _ in range(4)])
    first = transport.fetch(["q"], limit=2, timeout=1, owner="n/1")
    trips: list[int] = []
    run = transport._held.run

    def counted(commands: Any, **kwargs: Any) -> Any:
        trips.append(len(commands))
        return run(commands, **kwargs)

    transport._held.run = counted  # type: ignore[method-assign]
    second = transport.ack_then_fetch(first, ["q"], limit=2, timeout=0, owner="n/1")
    assert len(second) == 2 and trips == [2]  # one ACK script and the claim, one round trip
    for delivery in first:
        assert not raw.hexists(prefix + "unacked", delivery.tag)
        assert not raw.sismember(prefix + "caraway.owner.n/1", delivery.tag)
    assert all(raw.hexists(prefix + "unacked", d.tag) for d in second)


def test_a_claim_whose_acks_failed_is_handed_back_before_the_next_claim(
    transport: RedisTransport, raw: redis.Redis, prefix: str, make_message: MakeMessage
) -> None:
    transport.publish_many([(make_message(), "q") for _ in range(2)])
    (held,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/2")
    raw.delete(prefix + "caraway.owner.n/2")
    raw.set(prefix + "caraway.owner.n/2", "not a set")  # the ack script fails (WRONGTYPE)
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        transport.ack_then_fetch([held], ["q"], limit=1, timeout=0, owner="n/1")
    assert raw.scard(prefix + "caraway.owner.n/1") == 1  # the claim did go through...
    (again,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    assert not again.redelivered  # ...and was handed back before the next claim
    assert raw.scard(prefix + "caraway.owner.n/1") == 1


def test_held_connection_send_reads_its_replies_later_and_in_order(raw: redis.Redis) -> None:
    held = HeldConnection(
        redis.Redis.from_url(
            f"redis://127.0.0.1:6379/{raw.connection_pool.connection_kwargs['db']}"
        )
    )
    key = f"t{uuid.uuid4().hex}"
    try:
        read = held.send([("SET", key, "1"), ("INCR", key)])
        # using the connection before reading must not mix the two batches' replies up
        assert held.run([("GET", key)]) == [b"2"]
        assert read() == [b"OK", 2]
        read_error = held.send([("INCR", key), ("HGET", key, "x")])
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            read_error()
        assert held.run([("GET", key)]) == [b"3"]  # the connection stayed in step
    finally:
        raw.delete(key)
        held.close()
        held.client.close()


@pytest.fixture
def counted_polls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``can_read`` poll of a redis-py connection, on a runner of any CPU count."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    polls: list[float] = []
    can_read = redis.connection.Connection.can_read

    def counted(self: Any, timeout: float = 0) -> bool:
        polls.append(timeout)
        return can_read(self, timeout)

    monkeypatch.setattr(redis.connection.Connection, "can_read", counted)
    return polls


def test_a_publish_polls_for_its_reply_unless_reply_spin_is_0(
    make_transport: Callable[..., RedisTransport],
    make_message: MakeMessage,
    admin: RedisAdmin,
    counted_polls: list[float],
) -> None:
    spinning, off = make_transport(reply_spin=1.0), make_transport(reply_spin=0)
    for transport in (spinning, off):
        transport.publish(make_message(), queue="q")  # the pool checks a connection it lends
    counted_polls.clear()
    spinning.publish(make_message(), queue="q")
    assert counted_polls and set(counted_polls) == {0}  # polled, never waited in can_read
    counted_polls.clear()
    off.publish(make_message(), queue="q")
    assert counted_polls == []
    assert admin.size("q") == 4
    with pytest.raises(ImproperlyConfigured, match="reply_spin must be a number of seconds"):
        make_transport(reply_spin=-1)


def test_the_result_store_takes_reply_spin_from_its_transport_options(
    redis_url: str, prefix: str, raw: redis.Redis, counted_polls: list[float]
) -> None:
    stores = [
        RedisBackend(redis_url, options={"global_keyprefix": prefix, "reply_spin": spin})
        for spin in (1.0, 0)
    ]
    try:
        polls = []
        for n, store in enumerate(stores):
            store.store(f"warm-up-{n}", b"{}", state="SUCCESS", expires=60)
            counted_polls.clear()
            assert store.store(f"t{n}", b'{"status": "SUCCESS"}', state="SUCCESS", expires=60)
            polls.append(len(counted_polls))
            assert raw.get(f"{prefix}celery-task-meta-t{n}") == b'{"status": "SUCCESS"}'
        assert polls[0] > 0 and polls[1] == 0
    finally:
        for store in stores:
            store.close()


def test_held_connection_keeps_several_sends_outstanding_and_reads_each_in_order(
    raw: redis.Redis,
) -> None:
    """A batch's results and then its chord counts go out before either is read."""
    db = raw.connection_pool.connection_kwargs["db"]
    held = HeldConnection(redis.Redis.from_url(f"redis://127.0.0.1:6379/{db}"))
    key = f"t{uuid.uuid4().hex}"
    try:
        first = held.send([("SET", key, "1"), ("INCR", key)])
        second = held.send([("INCR", key), ("GET", key)])
        third = held.send([("INCR", key)])
        assert second() == [3, b"3"]  # reading a later send reads the earlier ones first
        assert first() == [b"OK", 2]
        assert held.run([("GET", key)]) == [b"4"]  # run reads what is still owed first
        assert third() == [4]
        # a connection dropped with replies owed fails every outstanding reader
        lost = [held.send([("INCR", key)]), held.send([("INCR", key)])]
        held._conn.disconnect()  # the socket goes before either reply is read
        with pytest.raises(redis.ConnectionError):
            lost[0]()
        with pytest.raises(redis.ConnectionError):
            lost[1]()
        assert held.run([("SET", key, "9")]) == [b"OK"]  # a fresh connection
    finally:
        raw.delete(key)
        held.close()
        held.client.close()


@pytest.mark.parametrize(
    ("separators", "extra_headers"),
    [
        ((", ", ": "), {}),  # kombu's json.dumps
        ((",", ":"), {}),  # compact, as orjson writes it
        ((", ", ": "), {"delivery_tag": "decoy", "exchange": "decoy"}),  # keys seen twice
        ((", ", ": "), {"note": 'quoted \\"delivery_tag\\": \\"decoy\\"'}),
    ],
)
def test_a_claim_reads_the_tag_and_routing_from_properties_whatever_the_spelling(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
    separators: tuple[str, str],
    extra_headers: dict[str, str],
) -> None:
    message = make_message()
    transport.publish(message, queue="q")
    envelope = json.loads(raw.rpop(f"{prefix}q"))  # type: ignore[arg-type]
    envelope["headers"].update(extra_headers)
    envelope["properties"]["delivery_tag"] = "tag-1"
    envelope["properties"]["delivery_info"] = {"exchange": "ex", "routing_key": "rk"}
    raw.lpush(f"{prefix}q", json.dumps(envelope, separators=separators))
    (got,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    assert got.tag == "tag-1"
    held = json.loads(raw.hget(f"{prefix}unacked", "tag-1"))  # type: ignore[arg-type]
    assert held[1:] == ["ex", "rk"]  # what kombu restores it by
    got.ack()
    assert raw.hlen(f"{prefix}unacked") == 0


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")])
def test_a_claim_skipping_the_body_is_not_fooled_by_keys_quoted_in_it(
    transport: RedisTransport,
    raw: redis.Redis,
    prefix: str,
    make_message: MakeMessage,
    separators: tuple[str, str],
) -> None:
    # a text body (no body_encoding) holding escaped quotes and decoy keys: the claim skips
    # the body up to its first quote, which here is an escaped one inside it
    message = make_message()
    transport.publish(message, queue="q")
    envelope = json.loads(raw.rpop(f"{prefix}q"))  # type: ignore[arg-type]
    decoys = {"delivery_tag": "decoy", "exchange": "decoy", "routing_key": "decoy"}
    envelope["body"] = json.dumps([[], decoys, {}])
    del envelope["properties"]["body_encoding"]
    envelope["properties"]["delivery_tag"] = "tag-2"
    envelope["properties"]["delivery_info"] = {"exchange": "ex", "routing_key": "rk"}
    raw.lpush(f"{prefix}q", json.dumps(envelope, separators=separators))
    (got,) = transport.fetch(["q"], limit=1, timeout=1, owner="n/1")
    assert got.tag == "tag-2"
    assert got.message.body == envelope["body"].encode()
    held = json.loads(raw.hget(f"{prefix}unacked", "tag-2"))  # type: ignore[arg-type]
    assert held[1:] == ["ex", "rk"]
    got.ack()


def test_pack_commands_speaks_resp_as_redis_py_does() -> None:
    from caraway.clients.redis import _pack_commands_py, pack_commands

    conn = redis.Connection()
    commands = [
        ("SET", "k", b"\x00bytes\r\n", 7, -2.5, "ünïcode"),
        ("EVALSHA", "a" * 40, 2, "k1", "k2", 1e-7, 10**20),
    ]
    assert pack_commands(commands) == b"".join(conn.pack_commands(commands))
    assert _pack_commands_py(commands) == pack_commands(commands)  # hiredis's and ours
    with pytest.raises(redis.DataError, match="cannot send bool"):
        pack_commands([("SET", "k", True)])


def test_pack_commands_writes_a_float_subclass_as_its_value() -> None:
    """hiredis would write numpy's float64 as ``np.float64(1.5)``: such values take the
    Python packer, which writes what ``float()`` gives."""
    from caraway.clients.redis import pack_commands

    class Scaled(float):
        def __repr__(self) -> str:
            return f"Scaled({float(self)})"

    assert (
        pack_commands([("SET", "k", Scaled(1.5))]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n"
    )


@pytest.mark.parametrize(("watched", "expected"), [(True, 1), (False, 3)])
def test_an_idle_loop_claims_once_per_wait_and_still_sees_a_new_message_at_once(
    make_transport: Callable[..., RedisTransport],
    make_message: MakeMessage,
    watched: bool,
    expected: int,
) -> None:
    transport = make_transport(polling_interval=0.3)
    if not watched:
        transport._watch = None  # as where the server cannot watch keys: it polls
    claims: list[float] = []
    claim_once = transport._claim_once

    def counted(*args: Any, **kwargs: Any) -> Any:
        claims.append(time.monotonic())
        return claim_once(*args, **kwargs)

    transport._claim_once = counted  # type: ignore[method-assign]
    # an idle consumer's loop: a claim with the results' flush, then a fetch that waits
    assert transport.ack_then_fetch((), ["idle"], limit=4, timeout=0.0, owner="o") == []
    assert transport.fetch(["idle"], limit=4, timeout=0.3, owner="o") == []
    assert transport.fetch(["idle"], limit=4, timeout=0.3, owner="o") == []
    # polling, one claim per wait, not one before each wait as well (it was 5 here);
    # watched, one in all: nothing changed in the lists since the first
    assert len(claims) == expected
    # a message arriving while the loop waits is still taken at once
    message = make_message()
    sender = make_transport()
    threading.Timer(0.1, lambda: sender.publish(message, queue="idle")).start()
    started = time.monotonic()
    got = transport.fetch(["idle"], limit=4, timeout=2.0, owner="o")
    assert ids(got) == [message.headers["id"]]
    assert time.monotonic() - started < 0.3


def test_a_worker_in_use_sees_a_message_on_a_list_it_is_not_blocking_on_at_once(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage
) -> None:
    transport = make_transport(polling_interval=2.0)
    sender = make_transport()
    sender.publish(make_message(), queue="q")
    assert len(transport.fetch(["q"], limit=4, timeout=1.0, owner="o")) == 1
    # in use a moment ago: a message on another of the queue's lists (a priority bucket;
    # another queue is the same) is not left until the wait ends (the whole second here)
    message = make_message(priority=9)
    threading.Timer(0.2, lambda: sender.publish(message, queue="q")).start()
    started = time.monotonic()
    got = transport.fetch(["q"], limit=4, timeout=1.0, owner="o")
    assert ids(got) == [message.headers["id"]]
    assert time.monotonic() - started < 0.7


def _calls_during(redis_url: str, prefix: str, action: Callable[[], object]) -> list[str]:
    """The commands Redis ran that name this test's keys (scripts' own calls included, as
    ``INFO commandstats`` counts them) while ``action`` ran, from MONITOR."""
    watcher = redis.Redis.from_url(redis_url)
    marker = f"{prefix}end-{uuid.uuid4().hex}"
    try:
        with watcher.monitor() as monitor:
            action()
            # the monitoring connection can send nothing else: the marker goes on another
            marking = redis.Redis.from_url(redis_url)
            try:
                marking.echo(marker)
            finally:
                marking.close()
            seen: list[str] = []
            for event in monitor.listen():
                command = str(event["command"])
                if marker in command:
                    return seen
                if prefix in command:
                    seen.append(command.split(" ", 1)[0].upper())
    finally:
        watcher.close()
    raise AssertionError("MONITOR ended before the marker")


def test_an_idle_claim_asks_every_list_at_once_instead_of_popping_each(
    make_transport: Callable[..., RedisTransport], redis_url: str, prefix: str
) -> None:
    # 50 queues of 4 priority buckets: an idle fleet claims from them once a second per node
    transport = make_transport()
    queues = [f"q{n}" for n in range(50)]
    assert transport.fetch(queues, limit=4, timeout=0.0, owner="o") == []
    first = _calls_during(
        redis_url, prefix, lambda: transport.fetch(queues, limit=4, timeout=0.0, owner="o")
    )
    # the script, the schedule's soonest entry, one EXISTS for all 200 lists (was a RPOP each)
    assert sorted(first) == ["EVALSHA", "EXISTS", "ZRANGE"]
    keys = transport._claim_keys(tuple(queues), 0)
    fresh = _calls_during(redis_url, prefix, lambda: transport._claim_once(keys, 4, "o", []))
    # nothing to go by (after a wait a message ended): the first list is popped, then the
    # rest asked at once
    assert sorted(fresh) == ["EVALSHA", "EXISTS", "RPOP", "ZRANGE"]


def test_a_claim_that_asks_lists_at_once_still_takes_in_order_from_every_list(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage
) -> None:
    transport, sender = make_transport(), make_transport()
    queues = [f"q{n}" for n in range(50)]
    assert transport.fetch(queues, limit=10, timeout=0.0, owner="o") == []  # now expects empty
    sent = [
        (make_message(), "q7"),
        (make_message(priority=9), "q3"),
        (make_message(), "q49"),
        (make_message(priority=5), "q49"),
    ]
    for message, queue in sent:
        sender.publish(message, queue=queue)
    got = transport.fetch(queues, limit=10, timeout=0.0, owner="o")
    # bucket 0 of every queue before higher buckets, queues in order within a bucket
    assert ids(got) == ids_of([sent[i][0] for i in (0, 2, 3, 1)])
    # a limit reached on one list leaves the rest for the next claim
    more = [make_message() for _ in range(3)]
    for message in more:
        sender.publish(message, queue="q20")
    last = make_message(priority=9)
    sender.publish(last, queue="q0")
    assert ids(transport.fetch(queues, limit=2, timeout=0.0, owner="o")) == ids_of(more[:2])
    rest = transport.fetch(queues, limit=10, timeout=0.0, owner="o")
    assert sorted(ids(rest)) == sorted(ids_of([more[2], last]))


def test_a_due_parked_message_is_promoted_and_the_next_one_reported(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage
) -> None:
    transport = make_transport()
    due, later = make_message(), make_message()
    transport.publish_parked(due, queue="q", eta=time.time() - 1)
    transport.publish_parked(later, queue="q", eta=time.time() + 3600)
    found, next_due = transport._claim_once(transport._claim_keys(("q",), 0), 4, "o", [])
    assert ids(found) == [due.headers["id"]]
    assert next_due is not None and next_due > time.time() + 3000


def _watch_client(raw: redis.Redis, transport: RedisTransport) -> dict[str, Any]:
    """The server's CLIENT LIST entry of ``transport``'s watch connection."""
    assert transport._watch is not None and transport._watch._conn is not None
    host, port = transport._watch._conn._sock.getsockname()[:2]
    (entry,) = [c for c in raw.client_list() if c["addr"] == f"{host}:{port}"]
    assert "t" in entry["flags"]  # tracking on
    return entry


def test_an_idle_fetch_sends_nothing_while_its_lists_stay_empty(
    make_transport: Callable[..., RedisTransport], redis_url: str, prefix: str
) -> None:
    # an idle fleet polled every list and the schedule once a second per process (a
    # blocking wait, then a claim of three calls): W9's commands were 3.3x Celery's
    transport = make_transport(polling_interval=0.1)
    queues = ["q1", "q2"]
    assert transport.fetch(queues, limit=4, timeout=0.2, owner="o") == []  # arms the watch
    seen = _calls_during(
        redis_url, prefix, lambda: transport.fetch(queues, limit=4, timeout=0.6, owner="o")
    )
    assert seen == []  # was a BLMOVE, then EVALSHA, ZRANGE and EXISTS every 0.1 s


@pytest.mark.parametrize("priority", [0, 9])
def test_an_idle_fetch_takes_a_message_on_any_list_at_once(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage, priority: int
) -> None:
    # polling_interval is long: only the watch can end the wait this soon
    transport, sender = make_transport(polling_interval=5.0), make_transport()
    queues = ["a", "b", "c"]
    assert transport.fetch(queues, limit=4, timeout=0.2, owner="o") == []
    message = make_message(priority=priority)
    threading.Timer(0.2, lambda: sender.publish(message, queue="c")).start()
    started = time.monotonic()
    got = transport.fetch(queues, limit=4, timeout=3.0, owner="o")
    assert ids(got) == [message.headers["id"]]
    assert time.monotonic() - started < 1.0


def test_an_idle_fetch_promotes_a_countdown_sent_while_it_waits_when_due(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage
) -> None:
    transport, sender = make_transport(polling_interval=5.0), make_transport()
    assert transport.fetch(["q"], limit=4, timeout=0.2, owner="o") == []
    message = make_message()
    due = time.time() + 0.6
    threading.Timer(0.1, lambda: sender.publish_parked(message, queue="q", eta=due)).start()
    got = transport.fetch(["q"], limit=4, timeout=4.0, owner="o")
    assert ids(got) == [message.headers["id"]]
    assert due - 0.05 <= time.time() < due + 1.0  # at its time, not at the next poll


def test_a_watch_whose_connection_is_killed_is_replaced_and_misses_nothing(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage, raw: redis.Redis
) -> None:
    transport, sender = make_transport(polling_interval=5.0), make_transport()
    assert transport.fetch(["q"], limit=4, timeout=0.2, owner="o") == []
    killed = _watch_client(raw, transport)["id"]
    assert raw.client_kill_filter(_id=killed) == 1
    message = make_message()
    threading.Timer(0.3, lambda: sender.publish(message, queue="q")).start()
    started = time.monotonic()
    got = transport.fetch(["q"], limit=4, timeout=3.0, owner="o")
    assert ids(got) == [message.headers["id"]]
    assert time.monotonic() - started < 1.0
    assert transport.fetch(["q"], limit=4, timeout=0.2, owner="o") == []  # watches again
    assert _watch_client(raw, transport)["id"] != killed


def test_over_resp2_an_idle_fetch_polls_instead_of_watching(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage, redis_url: str
) -> None:
    transport, sender = make_transport(polling_interval=0.2), make_transport()
    resp2 = redis.Redis.from_url(redis_url, protocol=2)
    transport._watch = KeyWatch(resp2)
    try:
        assert transport.fetch(["q"], limit=4, timeout=0.3, owner="o") == []
        assert transport._watch is None  # said once, then polled
        message = make_message(priority=9)  # not the list a polling fetch blocks on
        threading.Timer(0.1, lambda: sender.publish(message, queue="q")).start()
        got = transport.fetch(["q"], limit=4, timeout=3.0, owner="o")
        assert ids(got) == [message.headers["id"]]
    finally:
        resp2.close()


def test_a_message_sent_between_an_empty_claim_and_the_arming_is_taken_every_time(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage
) -> None:
    # a client sending its next task just as a worker's claim came back empty (a `delay()`
    # right after the last `get()`): the arming sees the list hold it and claims again. A
    # guard against claiming in a loop counted these across fetches, so the fourth such
    # message waited, watched, for WATCH_REARM (30 s): CI's `calling` case timed out on it
    transport, sender = make_transport(polling_interval=5.0), make_transport()
    assert transport._watch is not None
    arm = transport._watch.arm
    pending: list[Message] = []

    def arm_after_a_send(*args: Any, **kwargs: Any) -> Any:
        while pending:
            sender.publish(pending.pop(), queue="q")
        return arm(*args, **kwargs)

    transport._watch.arm = arm_after_a_send  # type: ignore[method-assign]
    for _ in range(6):
        message = make_message()
        pending.append(message)
        started = time.monotonic()
        got = transport.fetch(["q"], limit=4, timeout=3.0, owner="o")
        assert ids(got) == [message.headers["id"]]
        assert time.monotonic() - started < 1.0
        transport.ack(got[0])


def _queued(
    make_transport: Callable[..., RedisTransport], make_message: MakeMessage, count: int
) -> tuple[RedisTransport, list[Message]]:
    """A transport, and ``count`` messages another one sent to queue "q"."""
    transport, sender = make_transport(), make_transport()
    sent = [make_message() for _ in range(count)]
    for message in sent:
        sender.publish(message, queue="q")
    return transport, sent


def test_a_fetch_begun_ahead_claims_and_acks_before_its_reply_is_read(
    make_transport: Callable[..., RedisTransport],
    make_message: MakeMessage,
    raw: redis.Redis,
    prefix: str,
) -> None:
    transport, sent = _queued(make_transport, make_message, 4)
    (first,) = transport.fetch(["q"], limit=1, timeout=0.0, owner="o")
    read = transport.begin_fetch([first], ["q"], limit=2, owner="o")
    # the claim ran on the server while the caller went on (here: waited for it to land)
    wait_until(lambda: raw.llen(f"{prefix}q") == 1, timeout=5, message="the claim ahead")
    tags = {k.decode() for k in raw.hkeys(f"{prefix}unacked")}
    assert first.tag not in tags and len(tags) == 2  # the ack went first, in the same write
    assert ids(read()) == ids_of(sent[1:3])
    assert {d.tag for d in transport.fetch(["q"], limit=4, timeout=0.0, owner="o")} - tags


def test_a_fetch_begun_ahead_whose_reply_is_lost_claims_each_message_once(
    make_transport: Callable[..., RedisTransport],
    make_message: MakeMessage,
    raw: redis.Redis,
    prefix: str,
) -> None:
    transport, sent = _queued(make_transport, make_message, 3)
    transport.fetch(["q"], limit=1, timeout=0.0, owner="o")  # opens the held connection
    read = transport.begin_fetch([], ["q"], limit=2, owner="o")
    wait_until(lambda: raw.llen(f"{prefix}q") == 0, timeout=5, message="the claim ahead")
    host, port = transport._held._conn._sock.getsockname()[:2]
    assert raw.client_kill(f"{host}:{port}")
    # the claim it cannot read back is released by its fetch id and made again
    got = read()
    assert ids(got) == ids_of(sent[1:3])
    assert raw.hlen(f"{prefix}unacked") == 3  # the first claim and these two, once each
    assert raw.llen(f"{prefix}q") == 0
