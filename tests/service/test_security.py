"""Security properties: admin auth, weak tokens, no unsafe deserialisation, docs switch, no
secrets in logs. (The images run as non-root: tests/ops/test_dockerfiles.py checks that.)"""

from __future__ import annotations

import hmac
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from service.settings import Settings
from tests.service.conftest import serve
from tests.service.redis_server import free_port

TOKEN = "security-test-token-0123456789"  # noqa: S105 (a test secret)
REDIS_PASSWORD = "hunter2secret"  # noqa: S105 (a test secret)
ROOT = Path(__file__).resolve().parents[2]
ADMIN = (("GET", "/admin/bundles"), ("POST", "/admin/bundles/reload"))


@pytest.mark.parametrize(
    "authorization",
    [
        f"Basic {TOKEN}",  # wrong scheme
        f"Bearer {TOKEN[:-1]}",  # a prefix of the token
        f"Bearer {TOKEN}x",  # the token and more
        f"Bearer {TOKEN.upper()}",
        "Bearer ",
    ],
)
async def test_near_miss_tokens_are_refused(bundle_dir: Path, authorization: str) -> None:
    async with serve(Settings(bundle=bundle_dir, admin_token=TOKEN)) as (_, client):
        for method, path in ADMIN:
            response = await client.request(method, path, headers={"Authorization": authorization})
            assert response.status_code == 401
            assert response.json()["error"]["field"] == "Authorization"
        right = await client.get("/admin/bundles", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200


async def test_tokens_are_compared_in_constant_time(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check goes through hmac.compare_digest (no early-exit `==` on the secret)."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    async with serve(Settings(bundle=bundle_dir, admin_token=TOKEN)) as (_, client):
        wrong = await client.get("/admin/bundles", headers={"Authorization": "Bearer nope"})
        right = await client.get("/admin/bundles", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (wrong.status_code, right.status_code) == (401, 200)
    assert compared == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize("token", ["   ", "CHANGEME", "Admin", "fifteen-chars!!"])
def test_empty_and_placeholder_tokens_refused_outside_dev_mode(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    """Extends test_settings.py's weak-token cases: empty, blank, case variants, 15 chars."""
    monkeypatch.setenv("DUET_ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match="DUET_ADMIN_TOKEN"):
        Settings()
    monkeypatch.setenv("DUET_DEV_MODE", "true")
    assert Settings().dev_mode


def test_an_empty_token_is_refused_outside_dev_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUET_ADMIN_TOKEN", "")
    with pytest.raises(ValidationError, match="DUET_ADMIN_TOKEN"):
        Settings()


@pytest.mark.parametrize("dev_mode", [True, False])
async def test_an_empty_token_never_opens_the_admin_api(bundle_dir: Path, dev_mode: bool) -> None:
    """Even where settings let it through, "" disables admin rather than matching `Bearer `."""
    settings = Settings.model_construct(
        **{
            **Settings(bundle=bundle_dir).__dict__,
            "admin_token": SecretStr(""),
            "dev_mode": dev_mode,
        }
    )
    async with serve(settings) as (_, client):
        for method, path in ADMIN:
            response = await client.request(method, path, headers={"Authorization": "Bearer "})
            assert response.status_code == 401
            assert "disabled" in response.json()["error"]["message"]


UNSAFE = {
    "pickle": re.compile(r"\b(c?pickle|dill|cloudpickle|shelve|marshal)\b"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only=True)"),
    "yaml.load without SafeLoader": re.compile(r"yaml\.(unsafe_)?load\((?![^)]*SafeLoader)"),
    "eval(": re.compile(r"(?<![\w.])eval\("),
    "exec(": re.compile(r"(?<![\w.])exec\("),
}


def test_no_unsafe_deserialisation_in_project_sources() -> None:
    sources = [
        path
        for folder in ("models", "service", "bench", "loadtest", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    assert len(sources) > 20
    found = [
        f"{path.relative_to(ROOT)}:{number}: {name}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name, pattern in UNSAFE.items()
        if pattern.search(line.split("#")[0])
    ]
    assert found == []


def test_the_scan_catches_what_it_looks_for() -> None:
    caught = {
        name
        for line in (
            "import pickle",
            "np.load(f, allow_pickle=True)",
            "torch." + "load(path)",  # split: the repo's own scanners must not flag this test
            "yaml.load(text)",
            "eval(expr)",
            "exec(code)",
        )
        for name, pattern in UNSAFE.items()
        if pattern.search(line)
    }
    assert caught == set(UNSAFE)
    safe = ("torch.load(path, weights_only=True)", "yaml.load(t, Loader=SafeLoader)", "ev.eval()")
    assert not any(p.search(line) for line in safe for p in UNSAFE.values())


async def test_docs_can_be_turned_off(bundle_dir: Path) -> None:
    async with serve(Settings(bundle=bundle_dir, docs_enabled=False)) as (_, client):
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
    async with serve(Settings(bundle=bundle_dir)) as (_, client):
        assert (await client.get("/openapi.json")).status_code == 200


def test_no_secrets_in_logs(bundle_dir: Path) -> None:
    """A live process at debug level, admin hit with wrong and right tokens, and a Redis URL
    whose password is refused (nothing listens there): neither secret reaches its output."""
    port = free_port()
    wrong = "wrong-token-value-9876543210"
    env = {
        **os.environ,
        "DUET_BUNDLE": str(bundle_dir),
        "DUET_ADMIN_TOKEN": TOKEN,
        "DUET_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        "DUET_LOG_LEVEL": "debug",
        "DUET_HOST": "127.0.0.1",
        "DUET_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            wait_alive(url, process)
            with httpx.Client(base_url=url, timeout=10) as client:
                for token in (wrong, TOKEN):
                    for method, path in ADMIN:
                        client.request(method, path, headers={"Authorization": f"Bearer {token}"})
                answer = client.post("/v1/recommend", json={"user_id": "1", "k": 3})
                events = client.post("/v1/events", json=[{"user_id": "1", "item_id": "1"}])
        finally:
            process.terminate()
            process.wait(timeout=15)
        output.seek(0)
        logged = output.read().decode(errors="replace")
    assert answer.status_code == 200  # served without Redis (degraded), and said so in the log
    assert events.status_code in (202, 422, 503)
    assert "redis" in logged.lower()
    for secret in (TOKEN, wrong, REDIS_PASSWORD):
        assert secret not in logged


def wait_alive(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
            time.sleep(0.1)
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"service did not come up (exit code {process.poll()})")
