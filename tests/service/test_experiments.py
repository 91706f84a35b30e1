"""Experiment config validation and sticky, weighted arm assignment."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import timeit
from collections import Counter
from pathlib import Path

import pytest

from service.experiments import (
    BUCKETS,
    Assigner,
    ExperimentConfig,
    ExperimentConfigError,
    UnknownArmError,
    load_experiment,
)
from service.stats import sample_ratio_check

VALID = """
name = "ranker-v2"
salt = "2026-11"
allow_override = true

[[arms]]
name = "control"
weight = 50
bundle = "bundles/a"

[[arms]]
name = "blend"
weight = 50
bundle = "bundles/a"
policy = "popularity_blend"
popularity_weight = 0.4
overfetch = 3
nprobe = 16

[[arms]]
name = "diverse"
weight = 25.5
bundle = "{absolute}"
policy = "genre_diversity"
diversity = 0.3
control = true
ef_search = 64
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "bundles" / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def write(config_dir: Path, text: str) -> Path:
    path = config_dir / "experiment.toml"
    path.write_text(text.replace("{absolute}", str(config_dir / "elsewhere")))
    return path


TWO_CONTROLS = """
name = "x"
salt = "s"
[[arms]]
name = "a"
weight = 1
bundle = "bundles/a"
control = true
[[arms]]
name = "b"
weight = 1
bundle = "bundles/a"
control = true
"""


def two_arms(**overrides: object) -> str:
    arm_b = {"name": '"b"', "weight": "1", "bundle": '"bundles/a"'}
    arm_b.update({key: str(value) for key, value in overrides.items()})
    body = "\n".join(f"{key} = {value}" for key, value in arm_b.items())
    return (
        'name = "x"\nsalt = "s"\n[[arms]]\nname = "a"\nweight = 1\nbundle = "bundles/a"\n'
        f"[[arms]]\n{body}\n"
    )


def test_valid_config_parses_every_field(config_dir: Path) -> None:
    config = load_experiment(write(config_dir, VALID))

    assert config.name == "ranker-v2"
    assert config.salt == "2026-11"
    assert config.allow_override is True
    assert config.arm_names == ("control", "blend", "diverse")
    assert config.control == "diverse"
    control, blend, diverse = config.arms
    assert control.bundle == (config_dir / "bundles" / "a").resolve()
    assert blend.bundle == control.bundle
    assert diverse.bundle == (config_dir / "elsewhere").resolve()
    assert control.params.policy == "score"
    assert blend.params.policy == "popularity_blend"
    assert blend.params.popularity_weight == 0.4
    assert blend.params.overfetch == 3.0
    assert blend.params.nprobe == 16
    assert diverse.weight == 25.5
    assert diverse.params.diversity == 0.3
    assert diverse.params.ef_search == 64
    assert config.arm("blend") is blend


def test_control_defaults_to_first_arm(config_dir: Path) -> None:
    config = load_experiment(write(config_dir, two_arms()))
    assert config.control == "a"
    assert config.allow_override is False


def test_relative_bundle_resolves_against_config_dir_not_cwd(
    config_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(config_dir, two_arms())
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert load_experiment(path).arms[0].bundle == (config_dir / "bundles" / "a").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (two_arms(weight=0), "arms[1].weight: Input should be greater than 0"),
        (two_arms(weight=-2), "arms[1].weight: Input should be greater than 0"),
        (two_arms(name='"a"'), "duplicate arm names: a"),
        (two_arms(bundle='"bundles/missing"'), "arms[1].bundle (b): no bundle directory at"),
        ('name = "x"\nsalt = "s"\narms = []\n', "arms: List should have at least 1 item"),
        ('name = "x"\nsalt = "s"\n', "arms: Field required"),
        (two_arms(colour='"red"'), "arms[1].colour: Extra inputs are not permitted"),
        ("extra = 1\n" + two_arms(), "extra: Extra inputs are not permitted"),
        (two_arms(policy='"random"'), "arms[1].policy: Input should be 'score'"),
        (two_arms(popularity_weight=0.5), "popularity_weight applies only to policy"),
        (two_arms(policy='"score"', diversity=0.5), "diversity applies only to policy"),
        (two_arms(weight='"1"'), "arms[1].weight: Input should be a valid number"),
        (two_arms(name='"has space"'), "arms[1].name: String should match pattern"),
        (two_arms(overfetch=0.5), "arms[1].overfetch: Input should be greater than or equal to 1"),
        (TWO_CONTROLS, "at most one arm may set control = true, got a, b"),
        (two_arms(weight=1e6).replace("weight = 1\n", "weight = 0.001\n", 1), "arms too small"),
        (
            'name = "x"\n[[arms]]\nname = "a"\nweight = 1\nbundle = "bundles/a"\n',
            "salt: Field required",
        ),
        ("name = [unclosed", "is not TOML"),
    ],
)
def test_invalid_config_is_refused_with_a_clear_message(
    config_dir: Path, text: str, message: str
) -> None:
    with pytest.raises(ExperimentConfigError) as error:
        load_experiment(write(config_dir, text))
    assert message in str(error.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ExperimentConfigError, match="cannot read experiment config"):
        load_experiment(tmp_path / "nope.toml")


def test_implicit_experiment_has_one_default_arm(tmp_path: Path) -> None:
    config = ExperimentConfig.implicit(tmp_path)
    assigner = Assigner(config)
    assert config.arm_names == ("default",)
    assert {assigner.assign(str(user)) for user in range(200)} == {"default"}


def reference_bucket(salt: str, user_id: str) -> int:
    """The documented hash contract, computed independently of the Assigner."""
    key = hashlib.blake2b(salt.encode()).digest()
    digest = hashlib.blake2b(user_id.encode(), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def test_bucket_follows_the_documented_hash(config_dir: Path) -> None:
    config = load_experiment(write(config_dir, VALID))
    assigner = Assigner(config)
    for user in ["1", "42", "user-ü", "x" * 300, ""]:
        assert assigner.bucket(user) == reference_bucket("2026-11", user)


def test_arms_own_consecutive_bucket_ranges_by_weight(config_dir: Path) -> None:
    config = load_experiment(write(config_dir, VALID))
    assigner = Assigner(config)
    # weights 50 / 50 / 25.5 → boundaries 3984, 7968, 10000
    for user in map(str, range(3000)):
        bucket = assigner.bucket(user)
        expected = "control" if bucket < 3984 else "blend" if bucket < 7968 else "diverse"
        assert assigner.assign(user) == expected


def test_assignment_is_stable_across_processes(config_dir: Path) -> None:
    path = write(config_dir, VALID)
    users = [str(user) for user in range(50)]
    here = [Assigner(load_experiment(path)).assign(user) for user in users]
    script = (
        "import sys; from pathlib import Path;"
        "from service.experiments import Assigner, load_experiment;"
        "a = Assigner(load_experiment(Path(sys.argv[1])));"
        "print(','.join(a.assign(str(u)) for u in range(50)))"
    )
    root = Path(__file__).resolve().parents[2]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env=env,
            timeout=60,
        )
        assert result.stdout.strip().split(",") == here


def test_ten_thousand_users_split_evenly_and_pass_srm(config_dir: Path) -> None:
    config = load_experiment(write(config_dir, two_arms()))
    assigner = Assigner(config)
    counts = Counter(assigner.assign(f"user-{index}") for index in range(10_000))
    for arm in ("a", "b"):
        assert abs(counts[arm] / 10_000 - 0.5) <= 0.015
    srm = sample_ratio_check([counts["a"], counts["b"]], [1.0, 1.0])
    assert not srm.mismatch
    assert srm.p_value > 0.001


def test_uneven_weights_are_respected(config_dir: Path) -> None:
    config = load_experiment(write(config_dir, two_arms(weight=3)))
    assigner = Assigner(config)
    counts = Counter(assigner.assign(str(index)) for index in range(20_000))
    assert abs(counts["b"] / 20_000 - 0.75) <= 0.015
    assert not sample_ratio_check([counts["a"], counts["b"]], [1.0, 3.0]).mismatch


def test_a_new_salt_reshuffles_users(config_dir: Path) -> None:
    first = Assigner(load_experiment(write(config_dir, two_arms())))
    second = Assigner(load_experiment(write(config_dir, two_arms().replace('"s"', '"t"'))))
    users = [str(index) for index in range(4000)]
    same = sum(first.assign(user) == second.assign(user) for user in users)
    assert 0.45 < same / len(users) < 0.55


def test_override_is_honoured_only_when_allowed(config_dir: Path) -> None:
    allowed = Assigner(load_experiment(write(config_dir, VALID)))
    user = next(str(u) for u in range(100) if allowed.assign(str(u)) == "control")
    assert allowed.choose(user, "blend") == "blend"
    assert allowed.choose(user, None) == "control"
    with pytest.raises(UnknownArmError, match="unknown arm 'nope'; known arms: control, blend"):
        allowed.choose(user, "nope")

    refused = Assigner(load_experiment(write(config_dir, two_arms())))
    own = refused.assign(user)
    assert refused.choose(user, "b" if own == "a" else "a") == own
    assert refused.choose(user, "nope") == own


def test_assignment_costs_at_most_five_microseconds(config_dir: Path) -> None:
    assigner = Assigner(load_experiment(write(config_dir, VALID)))
    number = 20_000
    best = min(timeit.repeat(lambda: assigner.assign("user-123456"), number=number, repeat=5))
    assert best / number < 5e-6
