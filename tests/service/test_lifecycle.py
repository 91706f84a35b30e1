"""Loading arms, warm-up, atomic swap, rejected reloads and SIGHUP, on tiny real bundles."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from service.arms import ArmTable
from service.experiments import ExperimentRouter, UnknownArmError, load_experiment
from service.lifecycle import (
    Reloader,
    ReloadInProgressError,
    ReloadRejectedError,
    build_router,
    install_sighup,
)


@pytest.fixture(scope="module")
def bundle_root(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding `v1`, a copy of the session's tiny bundle; variants go next to it."""
    root = tmp_path_factory.mktemp("lifecycle")
    shutil.copytree(bundle_dir, root / "v1")
    return root


def variant(
    root: Path, name: str, *, version: str | None = None, corrupt: str | None = None
) -> Path:
    """A copy of the v1 bundle with another version string, or one corrupted file."""
    target = root / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(root / "v1", target)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if version is not None:
        manifest["bundle_version"] = version
        manifest_path.write_text(json.dumps(manifest))
    if corrupt is not None:
        data = bytearray((target / corrupt).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target / corrupt).write_bytes(bytes(data))
    return target


def write_config(root: Path, arms: list[tuple[str, str]], extra: str = "") -> Path:
    body = "".join(
        f'[[arms]]\nname = "{name}"\nweight = 1\nbundle = "{bundle}"\n{extra}'
        for name, bundle in arms
    )
    path = root / "experiment.toml"
    path.write_text(f'name = "exp"\nsalt = "s"\nallow_override = true\n{body}')
    return path


def reloader_for(config: Path) -> tuple[Reloader, ArmTable]:
    table = ArmTable()
    return Reloader(table, experiments=config, bundle=None, default_overfetch=2.0), table


async def test_arms_naming_one_bundle_share_it(bundle_root: Path) -> None:
    variant(bundle_root, "v2", version="synth-v2")
    config = write_config(bundle_root, [("a", "v1"), ("b", "v1"), ("c", "v2")], "overfetch = 3\n")
    reloader, table = reloader_for(config)

    outcome = await reloader.reload()

    router = table.current
    assert isinstance(router, ExperimentRouter)
    assert router is outcome.router
    a, b, c = (router.arms[name] for name in ("a", "b", "c"))
    assert a.bundle is b.bundle
    assert c.bundle is not a.bundle
    assert c.bundle.version == "synth-v2"
    assert a.search.overfetch == 3.0
    assert sorted(outcome.loaded) == sorted(
        str((bundle_root / name).resolve()) for name in ("v1", "v2")
    )
    assert router.choose("anyone", "c") is c
    assert router.default is a


async def test_default_overfetch_and_search_params(bundle_root: Path) -> None:
    config = write_config(bundle_root, [("a", "v1")], "nprobe = 4\nef_search = 32\n")
    router, loaded = await build_router(load_experiment(config), default_overfetch=5.0)
    arm = router.arms["a"]
    assert (arm.search.overfetch, arm.search.nprobe, arm.search.ef_search) == (5.0, 4, 32)
    assert len(loaded) == 1


async def test_implicit_default_arm_from_bundle(bundle_root: Path) -> None:
    table = ArmTable()
    reloader = Reloader(table, experiments=None, bundle=bundle_root / "v1", default_overfetch=2.0)
    await reloader.reload()
    router = table.current
    assert router is not None
    assert list(router.arms) == ["default"]
    assert router.choose("u1").name == "default"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [("items.faiss", "items.faiss: sha256 mismatch"), ("user_tower.onnx", "sha256 mismatch")],
)
async def test_corrupt_bundle_is_rejected_and_old_arms_keep_serving(
    bundle_root: Path, corrupt: str, message: str
) -> None:
    config = write_config(bundle_root, [("a", "v1"), ("b", "v1")])
    reloader, table = reloader_for(config)
    await reloader.reload()
    serving = table.current

    variant(bundle_root, "bad", corrupt=corrupt)
    write_config(bundle_root, [("a", "v1"), ("b", "bad")])
    with pytest.raises(ReloadRejectedError, match=message) as error:
        await reloader.reload()
    assert str((bundle_root / "bad").resolve()) in error.value.message
    assert error.value.status_code == 422
    assert table.current is serving
    assert reloader.last_error is not None

    with pytest.raises(ReloadRejectedError, match="sha256 mismatch"):
        await reloader.reload(arm="b", bundle=bundle_root / "bad")
    assert table.current is serving


async def test_invalid_config_on_reload_keeps_arms(bundle_root: Path) -> None:
    config = write_config(bundle_root, [("a", "v1")])
    reloader, table = reloader_for(config)
    await reloader.reload()
    serving = table.current
    write_config(bundle_root, [("a", "v1"), ("a", "v1")])
    with pytest.raises(ReloadRejectedError, match="duplicate arm names: a"):
        await reloader.reload()
    write_config(bundle_root, [("a", "missing")])
    with pytest.raises(ReloadRejectedError, match="no bundle directory"):
        await reloader.reload()
    assert table.current is serving


async def test_one_arm_reload_keeps_the_other_bundles(bundle_root: Path) -> None:
    variant(bundle_root, "v3", version="synth-v3")
    config = write_config(bundle_root, [("a", "v1"), ("b", "v1")])
    reloader, table = reloader_for(config)
    await reloader.reload()
    before = table.current
    assert before is not None

    outcome = await reloader.reload(arm="b", bundle=Path("v3"))

    after = table.current
    assert after is outcome.router
    assert after.arms["a"].bundle is before.arms["a"].bundle
    assert after.arms["b"].bundle.version == "synth-v3"
    assert outcome.loaded == (str((bundle_root / "v3").resolve()),)
    # requests that started before the swap still hold the old arms
    assert before.arms["b"].bundle.version != "synth-v3"

    with pytest.raises(UnknownArmError, match="unknown arm 'zz'"):
        await reloader.reload(arm="zz")
    with pytest.raises(ReloadRejectedError, match="name the arm"):
        await reloader.reload(bundle=Path("v3"))


async def test_second_reload_while_one_runs_is_refused(bundle_root: Path) -> None:
    config = write_config(bundle_root, [("a", "v1")])
    reloader, table = reloader_for(config)
    first = asyncio.create_task(reloader.reload())
    await asyncio.sleep(0)
    busy_while_loading = reloader.busy
    with pytest.raises(ReloadInProgressError) as error:
        await reloader.reload()
    assert error.value.status_code == 409
    outcome = await first
    assert busy_while_loading
    assert not reloader.busy
    assert table.current is outcome.router


async def test_one_arm_reload_needs_loaded_arms(bundle_root: Path) -> None:
    reloader, _ = reloader_for(write_config(bundle_root, [("a", "v1")]))
    with pytest.raises(ReloadRejectedError, match="no arms are loaded"):
        await reloader.reload(arm="a")


async def test_sighup_reloads(bundle_root: Path) -> None:
    config = write_config(bundle_root, [("a", "v1")])
    reloader, table = reloader_for(config)
    await reloader.reload()
    first = table.current
    variant(bundle_root, "v4", version="synth-v4")
    write_config(bundle_root, [("a", "v4")])
    uninstall = install_sighup(reloader)
    try:
        # never send SIGHUP without a handler: its default action ends the test process
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if table.current is not first and not reloader.busy:
                break
            await asyncio.sleep(0.02)
    finally:
        uninstall()
    router = table.current
    assert router is not None
    assert router is not first
    assert router.arms["a"].bundle.version == "synth-v4"
