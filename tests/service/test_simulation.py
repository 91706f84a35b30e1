"""The simulation loop against the real app: the report must match what the simulation sent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.datasets import synthesize
from scripts.simulate import render, replays, simulate
from service.settings import Settings
from tests.service.conftest import NUM_ITEMS, NUM_USERS, serve

CONFIG = """
name = "sim"
salt = "sim-salt"

[[arms]]
name = "two_tower"
weight = 1
bundle = "bundle"

[[arms]]
name = "popularity"
weight = 1
bundle = "bundle"
policy = "popularity_blend"
popularity_weight = 1.0
"""


async def test_simulation_report_matches_what_was_sent(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    shutil.copytree(bundle_dir, tmp_path / "bundle")
    config = tmp_path / "experiment.toml"
    config.write_text(CONFIG)
    dataset = synthesize(NUM_USERS, NUM_ITEMS, seed=0)  # the session bundle's dataset
    users = replays(dataset, users=120, seed=1)
    assert len(users) == 120
    assert all(user.held_out and user.history for user in users)

    # generous Redis deadlines: the counts are compared exactly, even on a busy machine
    settings = Settings(experiments=config, redis_url=redis_url, redis_timeout_ms=2_000)
    async with serve(settings) as (_, client):
        outcome = await simulate(client, users, experiment="sim", k=10, time_limit=120)

    report = outcome.report
    assert {arm["arm"] for arm in report["arms"]} == {"two_tower", "popularity"}
    assert sum(arm["users"] for arm in report["arms"]) == 120
    for arm in report["arms"]:
        sent = outcome.sent[arm["arm"]]
        assert arm["exposures"] == sent.exposures == arm["users"]
        assert arm["clicks"] == sent.clicks
        assert arm["clicked_exposures"] == sent.clicked_exposures
        assert arm["ctr"] == pytest.approx(sent.clicked_exposures / sent.exposures)
    assert not report["srm"]["mismatch"]
    text = render(report)
    assert "better arm:" in text
    assert "two_tower" in text
