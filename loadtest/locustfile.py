"""Locust scenario for Duet: recommend 70%, events 20%, similar items 5%, retrieve 5%.

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \
        --bundle bundles/demo -u 20 -r 5 -t 60s --csv reports/loadtest/run

Users come from the bundle's user_ids column (Zipf) plus a share of new users. Against a
remote deployment, drop `--bundle` and pass `--admin-token` (or DUET_ADMIN_TOKEN): a bounded
sample of the serving bundle's ids is fetched from `GET /admin/sample-ids` at start. Every
response's `arm` is counted, so a run against an experiment shows traffic and latency per arm.
The run fails (non-zero exit, reason printed) when the service is unreachable at start, or at
the end when the failure ratio or the p99 exceeds its threshold.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust import FastHttpUser, events, task
from locust.env import Environment
from traffic import (
    ArmStats,
    Catalog,
    CatalogError,
    Shown,
    Traffic,
    load_catalog,
    sample_catalog,
    threshold_violations,
)

log = logging.getLogger("duet.loadtest")

EXIT_UNREACHABLE = 2
EXIT_THRESHOLD = 3


@dataclass
class RunState:
    """What the hooks and the users share in one Locust process."""

    traffic: Traffic | None = None
    environment: Environment | None = None
    arms: ArmStats = field(default_factory=ArmStats)
    stopping: bool = False


STATE = RunState()
# Locust's EventHook is untyped; going through Any keeps the handlers themselves fully typed.
HOOKS: Any = events


def _arguments(parser: Any) -> None:
    group = parser.add_argument_group("Duet")
    group.add_argument(
        "--bundle",
        env_var="DUET_BUNDLE",
        default=None,
        help="Bundle directory whose user and item id columns the traffic is drawn from; "
        "without it the ids are sampled from the service (GET /admin/sample-ids)",
    )
    group.add_argument(
        "--admin-token",
        env_var="DUET_ADMIN_TOKEN",
        default=None,
        help="Bearer token for /admin/sample-ids (when no --bundle is given)",
    )
    group.add_argument("--sample-users", type=int, default=1_000, help="Users to sample (<=10k)")
    group.add_argument("--sample-items", type=int, default=1_000, help="Items to sample (<=10k)")
    group.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent for users, items")
    group.add_argument("--new-user-share", type=float, default=0.1, help="Share of unseen users")
    group.add_argument("--seed", type=int, default=None, help="Seed for a repeatable request mix")
    group.add_argument(
        "--think-time-ms", type=float, default=100.0, help="Mean pause between a user's requests"
    )
    group.add_argument("--max-fail-ratio", type=float, default=0.0, help="Threshold (0 = none)")
    group.add_argument("--max-p99-ms", type=float, default=250.0, help="Threshold on overall p99")
    group.add_argument(
        "--max-requests", type=int, default=1_000_000, help="Stop after this many requests"
    )


def _fail_now(reason: str, code: int) -> None:
    print(f"duet-loadtest: FAILED: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _catalog(environment: Environment, opts: Any) -> Catalog:
    if opts.bundle:
        return load_catalog(Path(opts.bundle))
    if not environment.host:
        raise CatalogError("no --bundle and no --host to sample ids from")
    if not opts.admin_token:
        raise CatalogError("no --bundle: pass --admin-token (or DUET_ADMIN_TOKEN) to sample ids")
    return sample_catalog(
        str(environment.host),
        opts.admin_token,
        users=opts.sample_users,
        items=opts.sample_items,
    )


def _init(environment: Environment, **_: Any) -> None:
    """Load the traffic model and check the service answers before any user starts."""
    STATE.environment = environment
    opts = environment.parsed_options
    if opts is None:  # used as a library: the caller sets STATE.traffic
        return
    source = f"--bundle {opts.bundle}" if opts.bundle else "the service"
    try:
        STATE.traffic = Traffic(
            _catalog(environment, opts),
            zipf_s=opts.zipf_s,
            new_user_share=opts.new_user_share,
            seed=opts.seed,
        )
    except (CatalogError, ValueError) as e:
        _fail_now(f"cannot draw traffic from {source}: {e}", EXIT_UNREACHABLE)
    if getattr(opts, "worker", False):
        return
    if not environment.host:
        _fail_now("no target: pass --host http://HOST:PORT", EXIT_UNREACHABLE)
    url = f"{str(environment.host).rstrip('/')}/readyz"
    if not url.startswith(("http://", "https://")):
        _fail_now(f"--host must be an http(s) URL, got {environment.host}", EXIT_UNREACHABLE)
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (scheme checked)
            resp.read()
    except urllib.error.HTTPError as e:
        _fail_now(f"service not ready: GET {url} answered {e.code}", EXIT_UNREACHABLE)
    except (urllib.error.URLError, OSError) as e:
        _fail_now(f"service unreachable: GET {url}: {e}", EXIT_UNREACHABLE)


def _bound_requests(**_: Any) -> None:
    env = STATE.environment
    if env is None or env.runner is None or env.parsed_options is None:
        return
    if (
        not STATE.stopping
        and env.runner.stats.total.num_requests >= env.parsed_options.max_requests
    ):
        STATE.stopping = True
        log.info("reached --max-requests %d: stopping", env.parsed_options.max_requests)
        # Quit from a fresh greenlet: this handler runs inside a user greenlet that quit kills.
        gevent.spawn(env.runner.quit)


def _thresholds(environment: Environment, **_: Any) -> None:
    """Enforce the thresholds, print the per-arm table and write it beside Locust's CSV files."""
    opts = environment.parsed_options
    if opts is None or environment.runner is None or getattr(opts, "worker", False):
        return
    rows = STATE.arms.rows()
    for row in rows:
        print(
            "duet-loadtest: arm={arm} route={route} requests={requests} failures={failures} "
            "p50={p50_ms:.0f}ms p99={p99_ms:.0f}ms".format(**row)
        )
    if opts.csv_prefix and rows:
        with open(f"{opts.csv_prefix}_arms.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    total = environment.runner.stats.total
    reasons = threshold_violations(
        num_requests=total.num_requests,
        fail_ratio=total.fail_ratio,
        p99_ms=total.get_response_time_percentile(0.99) or 0.0,
        max_fail_ratio=opts.max_fail_ratio,
        max_p99_ms=opts.max_p99_ms,
    )
    for reason in reasons:
        print(f"duet-loadtest: FAILED: {reason}", file=sys.stderr, flush=True)
    if reasons:
        environment.process_exit_code = EXIT_THRESHOLD
    else:
        print(
            f"duet-loadtest: PASSED: {total.num_requests} requests, "
            f"failure ratio {total.fail_ratio:.4f}, p99 "
            f"{total.get_response_time_percentile(0.99):.0f} ms",
            flush=True,
        )


def _traffic() -> Traffic:
    if STATE.traffic is None:
        raise RuntimeError("the traffic model is not loaded (the init hook did not run)")
    return STATE.traffic


class DuetUser(FastHttpUser):
    """One client application; its requests speak for many end users."""

    def wait_time(self) -> float:
        mean_ms = self.environment.parsed_options.think_time_ms
        return _traffic().pause_s(mean_ms)

    def _call(self, method: str, path: str, name: str, body: Any = None) -> Any:
        """One request; fails on non-2xx, and on a recommendation without its `arm`."""
        kwargs: dict[str, Any] = {"name": name}
        if body is not None:
            kwargs["json"] = body
        with self.rest(method, path, **kwargs) as r:
            resp: Any = r
            ok = resp.status_code is not None and 200 <= resp.status_code < 300
            data = resp.js if ok else None
            arm = str(data.get("arm") or "") if isinstance(data, dict) else ""
            if not ok:
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200] or resp.error}")
            elif name == "/v1/recommend" and not arm:
                ok = False
                resp.failure(f"{name} answered without an arm: {json.dumps(data)[:200]}")
            STATE.arms.record(arm or "-", name, float(resp.request_meta["response_time"]), ok=ok)
            return data if ok else None

    @task(70)
    def recommend(self) -> None:
        body = _traffic().recommend_body()
        data = self._call("POST", "/v1/recommend", "/v1/recommend", body)
        if data and data.get("request_id"):
            shown = tuple(str(it["item_id"]) for it in data.get("items", []))
            _traffic().remember(body["user_id"], Shown(str(data["request_id"]), shown))

    @task(20)
    def event(self) -> None:
        self._call("POST", "/v1/events", "/v1/events", _traffic().event_body())

    @task(5)
    def similar(self) -> None:
        self._call("GET", _traffic().similar_path(), "/v1/items/[id]/similar")

    @task(5)
    def retrieve(self) -> None:
        self._call("POST", "/v1/retrieve", "/v1/retrieve", _traffic().retrieve_body())


HOOKS.init_command_line_parser.add_listener(_arguments)
HOOKS.init.add_listener(_init)
HOOKS.request.add_listener(_bound_requests)
HOOKS.quitting.add_listener(_thresholds)
