"""Drive wrk with one of bench/lua's scripts and read the JSON line its `done()` prints."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from processes import BenchError, require_tool

LUA_DIR = Path(__file__).resolve().parent / "lua"
RESULT_PREFIX = "DUET_BENCH_RESULT "
INSTALL_WRK = "sudo apt-get install -y wrk  (Debian/Ubuntu; `make bench` does it when run as root)"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        """Requests that did not get a 2xx/3xx answer in time."""
        return self.errors.get("status", 0) + self.errors.get("timeout", 0)

    @property
    def ok_rps(self) -> float:
        """Answers a second that were not failures: a closed loop's capacity, refusals left out."""
        return (self.requests - self.failed) / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


def parse(stdout: str) -> WrkResult:
    """The summary line of bench/lua/duet.lua's done(); wrk's own text is ignored."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        raise BenchError(f"wrk printed no {RESULT_PREFIX.strip()} line:\n{stdout[-2000:]}")
    raw = json.loads(lines[-1][len(RESULT_PREFIX) :])
    duration_s = raw["duration_us"] / 1e6
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=round(duration_s, 3),
        rps=round(raw["requests"] / duration_s, 1) if duration_s > 0 else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=round(raw["mean_us"] / 1000, 3),
        errors={k: int(v) for k, v in raw["errors"].items()},
    )


def run(
    url: str,
    script: str,
    *,
    threads: int,
    connections: int,
    duration_s: float,
    env: dict[str, str],
    delay_ms: float | None = None,
    niceness: int = 0,
) -> WrkResult:
    """One wrk run; connection errors abort it, non-2xx answers are counted in `errors`.
    `niceness` > 0 lowers wrk's CPU priority: a drill's own probe then measures the service,
    not a CPU queue behind the load generator."""
    wrk = require_tool("wrk", INSTALL_WRK)
    lua = LUA_DIR / f"{script}.lua"
    if not lua.is_file():
        raise BenchError(f"no wrk script {lua}")
    run_env = {**os.environ, **env, "DUET_BENCH_LUA": str(LUA_DIR)}
    run_env.pop("DUET_BENCH_DELAY_MS", None)
    if delay_ms is not None:
        run_env["DUET_BENCH_DELAY_MS"] = f"{delay_ms:.3f}"
    argv = [
        *(["nice", "-n", str(niceness)] if niceness else []),
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "5s",
        "-s",
        str(lua),
        url,
    ]
    try:
        proc = subprocess.run(  # noqa: S603 (fixed argv, no shell)
            argv,
            capture_output=True,
            text=True,
            env=run_env,
            timeout=duration_s + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"wrk {script} did not finish within {duration_s + 30:.0f}s") from e
    if proc.returncode != 0:
        out = (proc.stderr + proc.stdout)[-2000:]
        raise BenchError(f"wrk {script} failed ({proc.returncode}): {out}")
    result = parse(proc.stdout)
    if result.errors.get("connect"):
        raise BenchError(f"{script}: {result.errors['connect']} connection errors: is it up?")
    if result.requests == 0:
        raise BenchError(f"{script}: no request completed")
    return result
