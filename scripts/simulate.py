"""Replay held-out MovieLens interactions against a running Duet with two arms; print the report.

The loop an A/B test closes, end to end: each sampled user's training interactions go in as
events (their history), the user asks for recommendations (the service picks the sticky arm and
records the exposure), every exposed item that is in the user's held-out set (the same
chronological split the bundle was trained on) becomes a click event carrying the request id,
and the experiment report then says which arm earns more clicks.

    # experiment.toml: both arms on one bundle (loaded once), one re-ranked by popularity
    name = "two-tower-vs-popularity"
    salt = "sim-1"
    allow_override = false
    [[arms]]
    name = "two_tower"
    weight = 1
    bundle = "bundles/demo"
    [[arms]]
    name = "popularity"
    weight = 1
    bundle = "bundles/demo"
    policy = "popularity_blend"
    popularity_weight = 1.0

    DUET_EXPERIMENTS=experiment.toml python -m service &
    python scripts/simulate.py --experiment two-tower-vs-popularity --users 300

Bounded: at most `--users` users, `--time-limit` seconds, loopback URLs only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from models.datasets import load_dataset
from models.split import chronological_split
from models.types import Dataset

MAX_EVENTS_PER_REQUEST = 1_000
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Replay:
    """What one user brings to the simulation: history to send, held-out items to click."""

    user_id: str
    history: list[tuple[str, int]]
    held_out: frozenset[str]


def replays(dataset: Dataset, *, users: int, seed: int) -> list[Replay]:
    """A seeded sample of users that have held-out interactions."""
    split = chronological_split(dataset.interactions, dataset.num_users, dataset.num_items)
    item_ids = dataset.items.ids
    held_out: dict[int, set[str]] = {}
    for user, item in zip(split.test.user.tolist(), split.test.item.tolist(), strict=True):
        held_out.setdefault(user, set()).add(item_ids[item])
    candidates = sorted(held_out)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(candidates, size=min(users, len(candidates)), replace=False))
    train = split.train_full
    history: dict[int, list[tuple[str, int]]] = {user: [] for user in chosen}
    for user, item, stamp in zip(
        train.user.tolist(), train.item.tolist(), train.timestamp.tolist(), strict=True
    ):
        if user in history:
            history[user].append((item_ids[item], stamp))
    return [
        Replay(dataset.user_ids[user], history[user], frozenset(held_out[user])) for user in chosen
    ]


async def _post_events(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), MAX_EVENTS_PER_REQUEST):
        response = await client.post(
            "/v1/events", json=events[start : start + MAX_EVENTS_PER_REQUEST]
        )
        response.raise_for_status()


@dataclass
class Tally:
    """What the simulation itself sent, per arm: the report must agree with it."""

    exposures: int = 0
    clicks: int = 0
    clicked_exposures: int = 0


@dataclass(frozen=True)
class Outcome:
    report: dict[str, Any]
    sent: dict[str, Tally]


async def simulate(
    client: httpx.AsyncClient,
    users: Sequence[Replay],
    *,
    experiment: str,
    k: int = 10,
    time_limit: float = 300.0,
) -> Outcome:
    """Run the loop for `users` (stopping at `time_limit`); the service's report and our tally."""
    deadline = time.monotonic() + time_limit
    history = [
        {"user_id": user.user_id, "item_id": item, "type": "view", "timestamp": float(stamp)}
        for user in users
        for item, stamp in user.history
    ]
    await _post_events(client, history)
    clicks: list[dict[str, Any]] = []
    sent: dict[str, Tally] = {}
    for user in users:
        if time.monotonic() > deadline:
            break
        response = await client.post("/v1/recommend", json={"user_id": user.user_id, "k": k})
        response.raise_for_status()
        answer = response.json()
        hits = [
            {
                "user_id": user.user_id,
                "item_id": item["item_id"],
                "type": "click",
                "request_id": answer["request_id"],
            }
            for item in answer["items"]
            if item["item_id"] in user.held_out
        ]
        tally = sent.setdefault(answer["arm"], Tally())
        tally.exposures += 1
        tally.clicks += len(hits)
        tally.clicked_exposures += bool(hits)
        clicks += hits
    await _post_events(client, clicks)
    response = await client.get(f"/v1/experiments/{experiment}/report")
    response.raise_for_status()
    return Outcome(report=response.json(), sent=sent)


def better_arm(report: dict[str, Any], alpha: float = 0.05) -> str:
    """One sentence: which arm wins, and whether the difference is significant."""
    arms = report["arms"]
    control = next(arm for arm in arms if arm["is_control"])
    best = max(arms, key=lambda arm: arm["ctr"])
    if best is control:
        rivals = [arm for arm in arms if arm is not control]
        significant = all(arm["p_value"] is not None and arm["p_value"] < alpha for arm in rivals)
        p_text = ", ".join(f"{arm['arm']} p={arm['p_value']:.3g}" for arm in rivals)
    else:
        significant = best["p_value"] is not None and best["p_value"] < alpha
        p_text = f"p={best['p_value']:.3g}"
    verdict = "significant" if significant else "not significant"
    return f"better arm: {best['arm']} (CTR {best['ctr']:.3f}; {verdict} at {alpha}; {p_text})"


def render(report: dict[str, Any]) -> str:
    header = (
        f"{'arm':<14}{'users':>7}{'exposures':>11}{'clicked':>9}{'clicks':>8}{'CTR':>8}"
        f"  {'95% CI':<17}"
    )
    lines = [f"experiment {report['experiment']} (control: {report['control']})", header]
    for arm in report["arms"]:
        lift = "" if arm["lift"] is None else f"lift {arm['lift']:+.1%}"
        p_value = "" if arm["p_value"] is None else f"p={arm['p_value']:.3g}"
        interval = f"[{arm['ctr_ci_low']:.3f}, {arm['ctr_ci_high']:.3f}]"
        lines.append(
            f"{arm['arm']:<14}{arm['users']:>7}{arm['exposures']:>11}"
            f"{arm['clicked_exposures']:>9}{arm['clicks']:>8}"
            f"{arm['ctr']:>8.3f}  {interval:<17}{lift:<13}{p_value}"
        )
    srm = report["srm"]
    status = "MISMATCH" if srm["mismatch"] else "ok"
    lines.append(f"sample ratio: chi2={srm['chi_square']:.3f} p={srm['p_value']:.3g} ({status})")
    lines.append(better_arm(report))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="loopback service URL")
    parser.add_argument("--experiment", required=True, help="the running experiment's name")
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--data-dir", type=Path, help="dataset directory (default: shipped)")
    parser.add_argument("--users", type=int, default=300, help="users to replay (max 10000)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds")
    return parser


async def _main(args: argparse.Namespace) -> int:
    if urlsplit(args.url).hostname not in LOOPBACK:
        print("refusing a non-loopback --url", file=sys.stderr)
        return 2
    dataset = load_dataset(args.dataset, args.data_dir)
    users = replays(dataset, users=min(args.users, 10_000), seed=args.seed)
    timeout = httpx.Timeout(30.0, connect=5.0)
    async with httpx.AsyncClient(base_url=args.url, timeout=timeout) as client:
        started = time.monotonic()
        outcome = await simulate(
            client, users, experiment=args.experiment, k=args.k, time_limit=args.time_limit
        )
    print(render(outcome.report))
    print(f"({len(users)} users replayed in {time.monotonic() - started:.1f}s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_main(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
