from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_reads_the_duet_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUET_BUNDLE", "bundles/demo")
    monkeypatch.setenv("DUET_REDIS_URL", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("DUET_WORKERS", "3")
    settings = Settings()
    assert settings.bundle == Path("bundles/demo")
    assert settings.redis_url == "redis://127.0.0.1:6390/2"
    assert settings.workers == 3


def test_defaults_need_no_redis() -> None:
    settings = Settings()
    assert settings.redis_url is None
    assert settings.redis_timeout_ms <= 100


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 0), ("workers", 0), ("redis_timeout_ms", 0), ("max_body_bytes", 10),
     ("cache_ttl_seconds", 0), ("history_length", 0), ("log_level", "loud")],
)  # fmt: skip
def test_out_of_bounds_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


@pytest.mark.parametrize("token", ["change-me", "short"])
def test_weak_admin_token_refused_outside_dev_mode(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("DUET_ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match="DUET_ADMIN_TOKEN"):
        Settings()
    monkeypatch.setenv("DUET_DEV_MODE", "true")
    assert Settings().dev_mode


def test_a_real_admin_token_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUET_ADMIN_TOKEN", "a-long-enough-real-secret")
    token = Settings().admin_token
    assert token is not None
    assert token.get_secret_value() == "a-long-enough-real-secret"
