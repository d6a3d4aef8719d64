"""caraway.signals holds Celery's rules: sender filtering, weak references, dispatch_uid,
connect as a decorator with options, errors logged and returned, never raised."""

from __future__ import annotations

import gc
from typing import Any

import celery.signals
import pytest

from caraway import signals
from caraway.signals import Signal


def test_every_celery_signal_exists_with_celerys_arguments() -> None:
    for name in celery.signals.__all__:
        ours, theirs = getattr(signals, name), getattr(celery.signals, name)
        assert isinstance(ours, Signal) and ours.name == name
        assert theirs.providing_args <= ours.providing_args, name
    assert set(celery.signals.__all__) <= set(signals.__all__)


def test_a_receiver_connected_for_a_sender_hears_only_that_sender() -> None:
    signal, heard = Signal("s"), []

    def for_add(sender: Any, **kwargs: Any) -> None:
        heard.append(("add", sender))

    def for_any(sender: Any, **kwargs: Any) -> None:
        heard.append(("any", sender))

    signal.connect(for_add, sender="proj.add")
    signal.connect(for_any)
    signal.send(sender="proj.add")
    signal.send(sender="proj.mul")
    assert heard == [("add", "proj.add"), ("any", "proj.add"), ("any", "proj.mul")]


def test_connect_as_a_decorator_with_options_returns_the_function() -> None:
    signal, heard = Signal("s"), []

    @signal.connect(sender="a", weak=False)
    def receiver(**kwargs: Any) -> str:
        heard.append(kwargs["value"])
        return "ok"

    assert callable(receiver)
    assert signal.send(sender="a", value=1) == [(receiver, "ok")]
    assert heard == [1]


def test_weak_receivers_go_with_their_function_and_strong_ones_stay() -> None:
    signal = Signal("s")

    def make() -> Any:
        def receiver(**kwargs: Any) -> int:
            return 1

        return receiver

    signal.connect(make())
    signal.connect(make(), weak=False)
    gc.collect()
    assert len(signal.send()) == 1


def test_dispatch_uid_connects_once_and_disconnects_by_uid() -> None:
    signal = Signal("s")

    def first(**kwargs: Any) -> int:
        return 1

    def second(**kwargs: Any) -> int:
        return 2

    signal.connect(first, dispatch_uid="only")
    signal.connect(second, dispatch_uid="only")
    assert [reply for _, reply in signal.send()] == [1]
    assert signal.disconnect(dispatch_uid="only")
    assert signal.send() == [] and not signal.receivers


def test_a_receiver_that_raises_is_logged_and_returned(caplog: pytest.LogCaptureFixture) -> None:
    signal = Signal("s")

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("boom")

    signal.connect(broken)
    [(receiver, reply)] = signal.send(sender=None)
    assert receiver is broken and isinstance(reply, RuntimeError)
    assert "boom" in caplog.text


def test_a_receiver_without_kwargs_is_refused() -> None:
    def positional(sender: Any) -> None: ...

    with pytest.raises(ValueError, match=r"\*\*kwargs"):
        Signal("s").connect(positional)


def test_celerys_constructor_order_and_name_first_both_work() -> None:
    assert Signal(providing_args={"a"}, name="x").name == "x"
    assert Signal({"a"}).providing_args == {"a"}
    assert Signal("on_after_configure").name == "on_after_configure"
