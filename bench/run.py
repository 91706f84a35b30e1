"""Benchmark Duet against a bare FastAPI hello-world app measured in the same run.

    python bench/run.py --bundle bundles/demo            (or: make bench)

Starts a throwaway redis-server, the service (one uvicorn worker) and bench/hello_app.py on free
loopback ports; warms every known user's cache; drives each scenario with wrk at a fixed
concurrency (max req/s, p50, p99), then the hello-world baseline and warm recommend again at
half of their max throughput; writes bench/results/latest.json and latest.md and prints the
recommend / hello-world ratio. Exits non-zero with the reason when a tool, the bundle or the
service is missing, or a run sees errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import live_phase
import report
import scale
import scrape
import wrk
from processes import (
    LOOPBACK,
    BenchError,
    Child,
    free_port,
    require_tool,
    rss_mb,
    start,
    start_redis,
    wait_http,
)

from service.catalog.columns import read_strings

BENCH_DIR = Path(__file__).resolve().parent
ADMIN_TOKEN = "duet-bench-admin-token-0123456789"  # noqa: S105 (throwaway loopback service)
SCENARIO_ORDER = (
    "hello",
    "recommend_warm",
    # Every user then has a seen set (hide events): the scenarios after it run with one too.
    "recommend_warm_seen",
    "recommend_filters",
    "recommend_cold",
    "retrieve",
    "similar",
    "complementary",
    "recommend_search",
    "recommend_filter10",
    "recommend_filter1",
    # Last: events change users' histories, which drops their cached embeddings.
    "events",
)
PACED = ("hello", "recommend_warm", "recommend_search")
SCALE_SCENARIOS = (
    "hello,recommend_warm,recommend_search,recommend_filter10,recommend_filter1,retrieve"
)
# Served the way service/__main__.py serves Duet, so the ratio compares the apps, not servers.
HELLO_FLAGS = ["--host", LOOPBACK, "--workers", "1", "--loop", "uvloop", "--http", "httptools"]
HELLO_FLAGS += ["--no-access-log", "--log-level", "warning"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("bundles/demo"), help="bundle directory")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results directory")
    p.add_argument("--readme", type=Path, help="also put the table in this README's bench markers")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured warm-up")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (fixed)")
    p.add_argument("--paced-connections", type=int, default=64, help="connections, paced runs")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (leave the server a core)")
    p.add_argument("--scenarios", default=",".join(SCENARIO_ORDER), help="comma-separated")
    p.add_argument("--no-paced", action="store_true", help="skip the half-throughput runs")
    p.add_argument(
        "--seen-items", type=int, default=200, help="seen set per user for recommend_warm_seen"
    )
    p.add_argument(
        "--live-items",
        type=int,
        default=0,
        help="then post this many live items and re-run the searching scenarios (issue 12)",
    )
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for ready")
    p.add_argument(
        "--scale",
        action="store_true",
        help="large-catalog run: search-every-time and filtered scenarios, memory of one and two "
        f"workers, time to ready, a reload under load (scenarios default to {SCALE_SCENARIOS})",
    )
    args = p.parse_args(argv)
    if args.scale and args.scenarios == ",".join(SCENARIO_ORDER):
        args.scenarios = SCALE_SCENARIOS
    unknown = set(args.scenarios.split(",")) - set(SCENARIO_ORDER)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIO_ORDER)}")
    return args


def _load_bundle(bundle: Path, tmp: Path) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """Manifest, known users, and the id files the Lua scripts read (items most popular first)."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        users = read_strings(bundle, "user_ids")
        items = read_strings(bundle, "item_ids")
        popular = [str(p["item_id"]) for p in json.loads((bundle / "popularity.json").read_text())]
    except (OSError, ValueError, KeyError) as e:
        raise BenchError(
            f"{bundle} is not a readable Duet bundle ({e}); build one with "
            f"`make {bundle}/manifest.json` or `python -m models build`"
        ) from e
    known = set(items)
    ordered = list(dict.fromkeys([p for p in popular if p in known] + items))
    (tmp / "users.txt").write_text("\n".join(users) + "\n", encoding="utf-8")
    (tmp / "items.txt").write_text("\n".join(ordered) + "\n", encoding="utf-8")
    files = {"DUET_BENCH_USERS": str(tmp / "users.txt"), "DUET_BENCH_ITEMS": str(tmp / "items.txt")}
    return manifest, users, files


def _post(url: str, body: dict[str, Any] | list[dict[str, str]]) -> None:
    req = urllib.request.Request(  # noqa: S310 (loopback http built by the harness)
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            resp.read()
    except urllib.error.HTTPError as e:
        raise BenchError(f"warm-up POST {url} {body} answered {e.code}: {e.read()[:300]!r}") from e


def _paced(
    base: str, script: str, max_rps: float, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    """p99 at half of `max_rps`: per-connection pauses calibrated on short runs, then measured."""
    target = max_rps / 2
    conns = args.paced_connections
    delay = max(0.0, conns * 1000 / target - 1000 / max_rps)
    for _ in range(4):
        probe = wrk.run(
            base,
            script,
            threads=args.threads,
            connections=conns,
            duration_s=min(3.0, args.duration),
            env=env,
            delay_ms=delay,
        )
        if abs(probe.rps - target) <= 0.05 * target:
            break
        delay = max(0.0, delay + conns * 1000 * (1 / target - 1 / probe.rps))
    final = wrk.run(
        base,
        script,
        threads=args.threads,
        connections=conns,
        duration_s=args.duration,
        env=env,
        delay_ms=delay,
    )
    return {"target_rps": round(target, 1), "delay_ms": round(delay, 3), **final.as_dict()}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    require_tool("wrk", wrk.INSTALL_WRK)
    machine = report.machine()
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="duet-bench-")))
        manifest, users, env = _load_bundle(args.bundle, tmp)
        genres, selectivity = scale.genre_filters(args.bundle)
        env.update(genres)
        redis, redis_url = start_redis(tmp)
        stack.callback(redis.stop)
        service_port, hello_port = free_port(), free_port()
        service_env = {
            "DUET_BUNDLE": str(args.bundle.resolve()),
            "DUET_REDIS_URL": redis_url,
            "DUET_HOST": LOOPBACK,
            "DUET_PORT": str(service_port),
            "DUET_WORKERS": "1",
            "DUET_LOG_LEVEL": "warning",
            "DUET_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        launched = time.monotonic()
        service = start("service", [sys.executable, "-m", "service"], tmp, env=service_env)
        stack.callback(service.stop)
        hello_argv = [sys.executable, "-m", "uvicorn", "hello_app:app", "--app-dir"]
        hello_argv += [str(BENCH_DIR), "--port", str(hello_port), *HELLO_FLAGS]
        hello = start("hello", hello_argv, tmp)
        stack.callback(hello.stop)
        children = {
            "service": (service, f"http://{LOOPBACK}:{service_port}"),
            "hello": (hello, f"http://{LOOPBACK}:{hello_port}"),
        }
        wait_http(service, children["service"][1] + "/readyz", args.ready_timeout)
        ready_s = time.monotonic() - launched
        wait_http(hello, children["hello"][1] + "/hello", args.ready_timeout)
        try:
            measured = _measure(args, users, env, children)
        except BenchError as e:
            logs = "\n".join(
                f"--- {n} log (tail) ---\n{c.tail()}" for n, (c, _) in children.items()
            )
            raise BenchError(f"{e}\n{logs}") from e
        service_rss = rss_mb(service.popen.pid)
        extra: dict[str, Any] = {"ready_s": round(ready_s, 2), "filters": selectivity}
        if args.scale:
            extra.update(
                _scale(
                    args,
                    env=env,
                    service_env=service_env,
                    tmp=tmp,
                    base=children["service"][1],
                    service=service,
                )
            )
    redis_version = subprocess.run(  # noqa: S603 (fixed argv)
        [require_tool("redis-server", "apt-get install -y redis-server"), "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.split()[2:3]
    machine["load_average_at_end"] = report.load_average()
    scenarios = measured["scenarios"]
    hello_rps = scenarios.get("hello", {}).get("rps")
    warm_rps = scenarios.get("recommend_warm", {}).get("rps")
    seen_rps = scenarios.get("recommend_warm_seen", {}).get("rps")
    return {
        "machine": machine,
        "run": {
            "started_at": started_at,
            "bundle_version": manifest.get("bundle_version"),
            "num_items": manifest.get("num_items"),
            "embedding_dim": manifest.get("embedding_dim"),
            "redis": " ".join(["redis-server", *redis_version]),
            "service_workers": 1,
            "wrk_threads": args.threads,
            "connections": args.connections,
            "paced_connections": args.paced_connections,
            "duration_s": args.duration,
        },
        **measured,
        "ratio": round(warm_rps / hello_rps, 3) if hello_rps and warm_rps else None,
        "seen_set_cost": round(1 - seen_rps / warm_rps, 4) if seen_rps and warm_rps else None,
        "seen_items": args.seen_items,
        "service_rss_mb": round(service_rss, 1),
        **extra,
    }


def _scale(
    args: argparse.Namespace,
    *,
    env: dict[str, str],
    service_env: dict[str, str],
    tmp: Path,
    base: str,
    service: Child,
) -> dict[str, Any]:
    """A reload under load on the benchmarked service; then, with it stopped, fresh services of
    one and of two workers measured after the same search traffic."""
    run = {"threads": args.threads, "connections": args.connections, "env": env}
    reload = scale.reload_under_load(base, ADMIN_TOKEN, run, max(20.0, 2 * args.duration))
    print(f"duet-bench: reload under load: {reload}", flush=True)
    service.stop()
    memory = {}
    for workers, key in ((1, "one_worker"), (2, "two_workers")):
        memory[key] = scale.fresh_service(
            workers,
            service_env=service_env,
            tmp=tmp,
            run=run,
            duration_s=args.duration,
            ready_timeout_s=args.ready_timeout,
        )
        print(f"duet-bench: {workers} worker(s): {memory[key]}", flush=True)
    return {"memory": memory, "reload_under_load": reload}


def _give_seen_sets(base: str, users: list[str], env: dict[str, str], size: int) -> None:
    """`size` hide events per user (least popular items first: they would rarely be shown
    anyway, so the page stays comparable), then one recommend each to warm the cache again."""
    items = Path(env["DUET_BENCH_ITEMS"]).read_text(encoding="utf-8").split()[::-1][:size]
    print(f"duet-bench: giving {len(users)} users a {len(items)}-item seen set", flush=True)
    events = [{"user_id": u, "item_id": i, "type": "hide"} for u in users for i in items]
    for start_at in range(0, len(events), 1000):
        _post(base + "/v1/events", events[start_at : start_at + 1000])
    for user in users:
        _post(base + "/v1/recommend", {"user_id": user, "k": 10})


def _scenario(
    name: str,
    base: str,
    child: Child,
    *,
    service_base: str,
    args: argparse.Namespace,
    run: dict[str, Any],
) -> dict[str, Any]:
    """One scenario at fixed concurrency after a warm-up, with the service's counters over it."""
    if args.warmup > 0:
        wrk.run(base, name, duration_s=args.warmup, **run)
    before = scrape.sample(service_base)
    result = wrk.run(base, name, duration_s=args.duration, **run)
    child.check_alive()
    measured = result.as_dict()
    if name != "hello":
        measured["service"] = scrape.delta(before, scrape.sample(service_base), result.requests)
    print(
        f"duet-bench: {name:18s} {result.rps:9,.0f} req/s  p50 {result.p50_ms:.2f} ms"
        f"  p99 {result.p99_ms:.2f} ms",
        flush=True,
    )
    return measured


def _measure(
    args: argparse.Namespace,
    users: list[str],
    env: dict[str, str],
    children: dict[str, tuple[Child, str]],
) -> dict[str, Any]:
    """Warm every known user, run each scenario at fixed concurrency, then the paced runs."""
    print(f"duet-bench: service and hello-world ready; warming {len(users)} users", flush=True)
    for user in users:
        _post(children["service"][1] + "/v1/recommend", {"user_id": user, "k": 10})
    run = {"threads": args.threads, "connections": args.connections, "env": env}
    scenarios: dict[str, dict[str, Any]] = {}
    for name in (s for s in SCENARIO_ORDER if s in args.scenarios.split(",")):
        child, base = children["hello" if name == "hello" else "service"]
        if name == "recommend_warm_seen":
            _give_seen_sets(base, users, env, args.seen_items)
        scenarios[name] = _scenario(
            name, base, child, service_base=children["service"][1], args=args, run=run
        )
    extra: dict[str, Any] = {}
    if args.live_items > 0:
        base = children["service"][1]

        def measured_again(name: str) -> dict[str, Any]:
            return _scenario(
                name, base, children["service"][0], service_base=base, args=args, run=run
            )

        def rewarm() -> None:
            for user in users:
                _post(base + "/v1/recommend", {"user_id": user, "k": 10})

        extra["live"] = live_phase.measure(
            count=args.live_items,
            base=base,
            token=ADMIN_TOKEN,
            bundle=args.bundle,
            without=scenarios,
            run_scenario=measured_again,
            rewarm=rewarm,
        )
    paced: dict[str, dict[str, Any]] = {}
    for name in () if args.no_paced else PACED:
        if name in scenarios:
            base = children["hello" if name == "hello" else "service"][1]
            paced[name] = _paced(base, name, scenarios[name]["rps"], args, env)
            print(
                f"duet-bench: {name} at {paced[name]['rps']:,.0f} req/s (half max): "
                f"p99 {paced[name]['p99_ms']:.2f} ms",
                flush=True,
            )
    return {"scenarios": scenarios, "paced": paced, **extra}


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        result = bench(args)
    except BenchError as e:
        print(f"duet-bench: FAILED: {e}", file=sys.stderr)
        return 1
    js, md = report.write(result, args.out, "latest-scale" if args.scale else "latest")
    print(report.markdown(result))
    print(f"duet-bench: wrote {js} and {md}")
    marker = "bench-scale" if args.scale else "bench"
    if args.readme is not None and report.update_readme(args.readme, md.read_text("utf-8"), marker):
        print(f"duet-bench: updated the table in {args.readme}")
    if result["ratio"] is not None:
        print(f"duet-bench: recommend/hello-world ratio = {result['ratio']:.2f}")
    runs = {**result["scenarios"], **{f"{k} (paced)": v for k, v in result["paced"].items()}}
    runs.update({f"{k} (live)": v for k, v in result.get("live", {}).get("scenarios", {}).items()})
    if result.get("reload_under_load"):
        runs["reload under load"] = result["reload_under_load"]
    failed = {name: r["errors"] for name, r in runs.items() if r["failed"]}
    for name, errors in failed.items():
        print(f"duet-bench: FAILED: {name} had failed requests: {errors}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
