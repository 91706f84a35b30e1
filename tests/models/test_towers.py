from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from models.towers import POOLINGS, ItemTower, TowerConfig, TwoTower, UserTower

NUM_USERS, NUM_ITEMS, LENGTH = 6, 30, 8


def _model(pooling: str, **overrides: object) -> TwoTower:
    torch.manual_seed(0)
    config = TowerConfig(dim=16, history_length=LENGTH, pooling=pooling, **overrides)  # type: ignore[arg-type]
    return TwoTower(
        num_users=NUM_USERS, num_items=NUM_ITEMS, num_genres=4, title_buckets=50, config=config
    )


def _history() -> torch.Tensor:
    history = torch.randint(0, NUM_ITEMS, (3, LENGTH))
    history[0, :5] = NUM_ITEMS  # left padding
    return history


@pytest.mark.parametrize("pooling", POOLINGS)
def test_user_tower_outputs_unit_vectors_for_known_and_unknown_users(pooling: str) -> None:
    model = _model(pooling).eval()
    out = model.user(torch.tensor([0, 1, NUM_USERS]), _history())
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_states_are_causal(pooling: str) -> None:
    """Position t must not see later items: that is what makes one pass train every position."""
    model = _model(pooling).eval()
    history = _history()
    changed = history.clone()
    changed[:, -1] = (changed[:, -1] + 1) % NUM_ITEMS
    users = torch.tensor([1, 2, 3])
    with torch.no_grad():
        before = model.user.states(users, history)
        after = model.user.states(users, changed)
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6)
    assert not torch.allclose(before[:, -1], after[:, -1])


@pytest.mark.parametrize("pooling", POOLINGS)
def test_forward_is_the_last_state(pooling: str) -> None:
    """The serving graph (mean pooling: last position only) equals the trained one."""
    model = _model(pooling).eval()
    users, history = torch.tensor([0, 1, NUM_USERS]), _history()
    with torch.no_grad():
        last = torch.nn.functional.normalize(model.user.states(users, history)[:, -1], dim=-1)
        assert torch.allclose(model.user(users, history), last, atol=1e-6)


def test_mean_pooling_serving_graph_does_no_per_request_bookkeeping(tmp_path: Path) -> None:
    """Decay weights and the padding mask are constants after ONNX Runtime's folding: every node
    left is arithmetic on this request's rows (a miss-path cost, bench/miss_path.py)."""
    tower = _model("mean").user.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower,
            (torch.tensor([1]), _history()[:1]),
            buffer,  # type: ignore[arg-type]
            input_names=["user_idx", "history"],
            output_names=["user_embedding"],
            dynamic_axes={"user_idx": {0: "batch"}, "history": {0: "batch"}},
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(tmp_path / "optimized.onnx").graph.node
    assert not {n.op_type for n in nodes} & {"Range", "Exp", "Equal", "Not", "Cast", "Expand"}
    assert len(nodes) <= 17


@pytest.mark.parametrize("pooling", POOLINGS)
def test_history_changes_the_user_embedding(pooling: str) -> None:
    model = _model(pooling).eval()
    users = torch.zeros(2, dtype=torch.long)
    history = torch.full((2, LENGTH), NUM_ITEMS)
    history[0, -1], history[1, -1] = 3, 4
    out = model.user(users, history)
    assert not torch.allclose(out[0], out[1])


def test_user_id_dropout_only_in_training() -> None:
    tower = UserTower(
        num_users=NUM_USERS,
        num_items=NUM_ITEMS,
        config=TowerConfig(dim=8, history_length=LENGTH, user_id_dropout=1.0, dropout=0.0),
    )
    history = _history()
    tower.train()
    trained = tower(torch.tensor([1, 2, 3]), history)
    unknown = tower(torch.tensor([0, 0, 0]), history)
    assert torch.allclose(trained, unknown)  # every id replaced by the OOV row
    tower.eval()
    assert not torch.allclose(tower(torch.tensor([1, 2, 3]), history), unknown)


def test_item_tower_gives_new_items_a_content_embedding() -> None:
    tower = ItemTower(
        num_items=NUM_ITEMS, num_genres=3, title_buckets=50, config=TowerConfig(dim=8)
    )
    tower.eval()
    unknown = torch.tensor([NUM_ITEMS, NUM_ITEMS])
    genres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    year = torch.tensor([0.5, -1.0])
    titles = torch.tensor([[3, 4, 0, 0], [7, 0, 0, 0]])
    out = tower(unknown, genres, year, titles)
    assert out.shape == (2, 8)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(out[0], out[1])


def test_title_padding_does_not_change_the_title_mean() -> None:
    tower = ItemTower(
        num_items=NUM_ITEMS, num_genres=1, title_buckets=50, config=TowerConfig(dim=8)
    )
    genres, year = torch.zeros(1, 1), torch.zeros(1)
    short = tower.content(genres, year, torch.tensor([[5, 6]]))
    padded = tower.content(genres, year, torch.tensor([[5, 6, 0, 0, 0]]))
    assert torch.allclose(short, padded, atol=1e-6)


def test_shared_item_embeddings_are_one_table() -> None:
    shared = _model("attention")
    separate = _model("attention", share_item_embeddings=False)
    assert shared.user.item_embedding is shared.item.id_embedding
    assert separate.user.item_embedding is not separate.item.id_embedding


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pooling"):
        _model("lstm")
