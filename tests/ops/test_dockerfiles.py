"""docker/Dockerfile.*: slim runtime image without PyTorch, trainer with the pinned CPU build."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys

from tests.ops.conftest import REPO, compose_file

DOCKER = REPO / "docker"


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / name).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            head, _, rest = line.strip().partition(" ")
            out.append((head.upper(), rest.strip()))
    return out


def healthcheck_argv() -> list[str]:
    (args,) = [a for op, a in instructions("Dockerfile.service") if op == "HEALTHCHECK"]
    argv: list[str] = json.loads(args[args.index("CMD") + 3 :])
    return argv


def test_service_image_is_slim_non_root_and_installs_no_training_extra() -> None:
    ops = instructions("Dockerfile.service")
    froms = [a for op, a in ops if op == "FROM"]
    assert all(a.startswith("python:3.11-slim") for a in froms)
    runs = " ".join(a for op, a in ops if op == "RUN")
    assert "pip install ." in runs
    assert "[train]" not in runs and "torch" not in runs
    copies = [a for op, a in ops if op == "COPY" and "--from" not in a]
    assert not any(a.split()[0] in ("models", ".") for a in copies), "models/ stays out"
    users = [a for op, a in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [a for op, a in ops if op == "CMD"][-1] == '["python", "-m", "service"]'


def test_service_healthcheck_probes_readyz_with_python_only() -> None:
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"]
    assert "/readyz" in argv[2] and "timeout=" in argv[2]
    # The compose file repeats the image's check, so `docker compose ps` shows the same state.
    assert compose_file()["services"]["service"]["healthcheck"]["test"] == ["CMD", *argv]


def test_trainer_image_pins_the_cpu_torch_build_and_runs_the_entrypoint() -> None:
    ops = instructions("Dockerfile.trainer")
    runs = " ".join(a for op, a in ops if op == "RUN")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs
    assert "'.[train]'" in runs
    assert [a for op, a in ops if op == "USER"][-1] not in ("root", "0")
    entry = [a for op, a in ops if op == "ENTRYPOINT"][-1]
    copied = {a.split()[0]: a.split()[-1] for op, a in ops if op == "COPY"}
    assert copied["docker/trainer-entrypoint.sh"].endswith("/" + json.loads(entry)[0])


def test_dockerignore_keeps_what_the_images_copy() -> None:
    patterns = [
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]  # fmt: skip
    for name in ("Dockerfile.service", "Dockerfile.trainer"):
        for op, args in instructions(name):
            if op == "COPY" and "--from" not in args:
                for src in args.split()[:-1]:
                    assert not any(fnmatch.fnmatch(src, p) for p in patterns), (name, src)
                    assert (REPO / src).exists(), (name, src)
    assert any(fnmatch.fnmatch(".venv", p) for p in patterns)
    assert any(fnmatch.fnmatch("bundles", p) for p in patterns)


def test_the_service_imports_neither_torch_nor_the_training_code() -> None:
    """What the slim image relies on: `service` runs with the runtime dependencies alone."""
    probe = (
        "import sys, service.app, service.__main__; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'models', 'onnx'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
