from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.train import (
    Optimizers,
    TrainConfig,
    Trainer,
    _log_inclusion,
    _positions,
    make_windows,
    sample_users,
    train,
)
from models.types import Dataset, Split


def test_windows_predict_the_next_items_of_each_position() -> None:
    sequences = [np.array([10, 11, 12, 13, 14], dtype=np.int64), np.array([5], dtype=np.int64)]
    windows = make_windows(sequences, history_length=3, padding_idx=99, ahead=2, stride=3)
    assert windows.user_idx.tolist() == [1, 1]
    assert windows.inputs.tolist() == [[11, 12, 13], [99, 99, 10]]
    assert windows.targets[0].tolist() == [[12, 13], [13, 14], [14, -1]]
    assert windows.targets[1].tolist() == [[-1, -1], [-1, -1], [11, 12]]


def test_windows_need_two_items() -> None:
    with pytest.raises(ValueError, match="no training windows"):
        make_windows([np.array([1])], history_length=3, padding_idx=9, ahead=1, stride=3)


def test_log_inclusion_is_a_probability_growing_with_popularity() -> None:
    counts = np.array([100.0, 10.0, 1.0, 1.0])
    total = float(counts.sum())
    log_q = _log_inclusion(counts, total, num_targets=5, uniform=0.5).numpy()
    assert (log_q <= 0).all()
    assert log_q[0] > log_q[1] > log_q[2]
    assert log_q[2] > math.log(0.5)  # the uniform sampler alone picks 2 of 4
    assert np.allclose(_log_inclusion(counts, total, num_targets=5, uniform=1.0).numpy(), 0.0)
    # the candidates' own counts give their entries of the whole catalog's figure
    part = _log_inclusion(counts[[0, 2]], total, num_targets=5, uniform=0.5).numpy()
    assert np.allclose(part, log_q[[0, 2]])


def test_positions_map_ids_to_sorted_candidate_columns() -> None:
    candidates = torch.tensor([2, 5, 9])
    ids = torch.tensor([[5, 3, 9], [2, 10, 0]])
    assert _positions(candidates, ids).tolist() == [[1, -1, 2], [0, -1, -1]]


@pytest.fixture(scope="module")
def trained(tiny_dataset: Dataset, tiny_split: Split) -> object:
    return train(
        tiny_dataset, tiny_split, TrainConfig.tiny(max_epochs=4, patience=4), progress=False
    )


def test_training_learns_beyond_chance(trained: object, tiny_dataset: Dataset) -> None:
    from models.train import TrainResult

    assert isinstance(trained, TrainResult)
    chance = 20 / tiny_dataset.num_items
    assert trained.test_metrics["recall@20"] > 2 * chance
    assert len(trained.curve) == 4
    assert all({"epoch", "loss", "valid_recall@20"} <= set(p) for p in trained.curve)
    assert trained.curve[-1]["loss"] < trained.curve[0]["loss"]
    best = max(p["valid_recall@20"] for p in trained.curve)
    assert trained.valid_metrics["recall@20"] == best
    assert trained.curve[trained.best_epoch - 1]["valid_recall@20"] == best


def test_training_is_deterministic(tiny_dataset: Dataset, tiny_split: Split) -> None:
    config = TrainConfig.tiny(max_epochs=1)
    first = train(tiny_dataset, tiny_split, config, progress=False)
    second = train(tiny_dataset, tiny_split, config, progress=False)
    assert first.test_metrics == second.test_metrics
    assert first.curve == second.curve


@pytest.mark.parametrize("loss", ["dexml", "auc"])
def test_every_loss_trains(tiny_dataset: Dataset, tiny_split: Split, loss: str) -> None:
    config = TrainConfig.tiny(
        max_epochs=2, loss=loss, num_negatives=50, targets_ahead=3, mask_seen=True
    )
    result = train(tiny_dataset, tiny_split, config, progress=False)
    assert result.test_metrics["recall@20"] > 20 / tiny_dataset.num_items


def test_refit_trains_on_train_full_for_the_best_epoch_count(
    tiny_dataset: Dataset, tiny_split: Split
) -> None:
    config = TrainConfig.tiny(max_epochs=2, refit=True)
    result = train(tiny_dataset, tiny_split, config, progress=False)
    assert 1 <= result.best_epoch <= 2
    assert 0.0 <= result.test_metrics["recall@20"] <= 1.0


def test_user_embeddings_use_the_given_history(tiny_dataset: Dataset, tiny_split: Split) -> None:
    trainer = Trainer(tiny_dataset, tiny_split, TrainConfig.tiny(), progress=False)
    model = trainer.new_model()
    before = trainer.embed_users(model, tiny_split.train)
    after = trainer.embed_users(model, tiny_split.train_full)
    assert before.shape == (tiny_dataset.num_users, 16)
    changed = np.unique(tiny_split.valid.user)
    assert not np.allclose(before[changed].numpy(), after[changed].numpy())


def test_tiny_config_overrides() -> None:
    config = TrainConfig.tiny(max_epochs=1, loss="auc")
    assert config.max_epochs == 1 and config.loss == "auc"
    assert replace(config, seed=3).seed == 3


def test_epoch_order_caps_windows_per_user() -> None:
    from models.train import Windows, epoch_order

    users = np.array([1, 1, 1, 1, 2, 3, 3], dtype=np.int64)
    windows = Windows(users, np.zeros((7, 2), dtype=np.int64), np.zeros((7, 2, 1), dtype=np.int64))
    rng = np.random.default_rng(0)
    capped = epoch_order(windows, rng, 2)
    assert sorted(np.bincount(users[capped]).tolist()) == [0, 1, 2, 2]
    assert len(set(capped.tolist())) == len(capped)
    assert sorted(epoch_order(windows, rng, 0).tolist()) == list(range(7))


def test_eval_sample_is_seeded_and_small_sets_stay_whole(tiny_split: Split) -> None:
    targets = tiny_split.test
    users = np.unique(targets.user)
    assert sample_users(targets, len(users) + 1, seed=0) is targets
    assert sample_users(targets, 0, seed=0) is targets
    a, b = sample_users(targets, 10, seed=3), sample_users(targets, 10, seed=3)
    assert len(np.unique(a.user)) == 10 and np.array_equal(a.user, b.user)


def test_a_step_updates_only_the_batch_rows_of_the_item_table(
    tiny_dataset: Dataset, tiny_split: Split
) -> None:
    config = TrainConfig.tiny(num_negatives=8)
    trainer = Trainer(tiny_dataset, tiny_split, config, progress=False)
    model = trainer.new_model()
    optimizer = Optimizers(model, config)
    windows = trainer._windows(tiny_split.train)
    before = model.item.id_embedding.weight.detach().clone()
    loss = trainer._step(model, windows, np.arange(2), np.ones(trainer.num_items))
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    changed = (model.item.id_embedding.weight.detach() != before).any(dim=1)
    assert 0 < int(changed.sum()) < trainer.num_items // 2


def test_synth_defaults_take_few_big_steps() -> None:
    config = TrainConfig.for_dataset("synth")
    assert config.batch_size >= 256 and config.max_epochs <= 3
    assert config.num_negatives < 1_000_000  # sampled, never a full softmax at 1M items
