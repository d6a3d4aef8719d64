"""One masking function, and no way around it (issue 15, findings 3 and 5)."""

from __future__ import annotations

import pytest

from caraway.clients.urls import mask_url
from caraway.config import mask_settings


@pytest.mark.parametrize(
    "url",
    [
        "user:s3cret@host:6379/0",  # no scheme: was returned as it came
        "s3cret@host",
        "redis://host:6379/0?password=s3cret",
        "redis://host:6379/0?db=1&password=s3cret&x=1",
        "rediss://host/0?ssl_cert_reqs=none&sentinel_password=s3cret",
        "amqp://u:s3cret@h//;amqp://u:s3cret@h2//",
        "redis://u:s3/cret@host/0",
        "redis://u:[s3cret@host/0",
        "sqla+postgresql://u:s3cret@db/x?auth_token=s3cret",
    ],
)
def test_mask_url_never_returns_the_password(url: str) -> None:
    assert "s3cret" not in mask_url(url)


def test_mask_url_keeps_what_is_not_secret() -> None:
    assert mask_url("redis://host:6379/0?db=1") == "redis://host:6379/0?db=1"
    assert mask_url("redis://u:pw@host:6379/0") == "redis://u:**@host:6379/0"
    assert mask_url("host:6379") == "host:6379"


def test_settings_are_masked_at_any_depth_by_url_and_by_name() -> None:
    shown = mask_settings(
        {
            "broker_url": ["redis://:s3cret@a/0", "redis://:s3cret@b/0"],
            "broker_transport_options": {"sentinel_kwargs": {"password": "s3cret"}},
            "result_backend_transport_options": {"extra": {"api_key": "s3cret"}},
            "task_default_queue": "celery",
        }
    )
    assert "s3cret" not in repr(shown)
    assert shown["task_default_queue"] == "celery"
