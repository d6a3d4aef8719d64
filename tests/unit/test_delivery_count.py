"""The delivery count the cap is checked against where the broker keeps none (a RabbitMQ
classic queue): one more than the processes the task killed, from its STARTED document."""

from __future__ import annotations

from caraway.lifecycle import WORKER_LOST_KEY, deliveries_seen, processes_lost


def test_the_brokers_count_stands_without_a_started_document() -> None:
    assert deliveries_seen(3, None) == 3
    assert deliveries_seen(0, {"status": "SUCCESS", "result": 4}) == 0


def test_processes_killed_count_as_deliveries_when_the_broker_counts_none() -> None:
    stored = {"status": "STARTED", "result": {"pid": 1, WORKER_LOST_KEY: 3}}
    assert processes_lost(stored) == 3
    assert deliveries_seen(0, stored) == 4
    assert deliveries_seen(6, stored) == 6  # the larger count wins


def test_a_started_document_without_a_count_or_with_a_bad_one_counts_nothing() -> None:
    assert processes_lost({"status": "STARTED", "result": {"pid": 1, "hostname": "h"}}) == 0
    assert processes_lost({"status": "STARTED", "result": {WORKER_LOST_KEY: "3"}}) == 0
    assert processes_lost({"status": "STARTED", "result": None}) == 0
