from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.catalog.onnx_guard import check_external_data, external_files
from service.errors import BundleError


def _model_with_constant_in_subgraph(external: bool) -> bytes:
    """Identity(If(cond, then=Constant(t), else=Constant(t))): a tensor two levels deep."""
    tensor = numpy_helper.from_array(np.ones(4, dtype=np.float32), "t")
    if external:
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=tensor)],
        "branch",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)],
        "main",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])],
    )
    return helper.make_model(graph).SerializeToString()


def test_a_self_contained_model_passes() -> None:
    model = _model_with_constant_in_subgraph(external=False)
    assert external_files(model) == set()
    check_external_data(model, ())


def test_external_data_in_a_subgraph_attribute_is_found() -> None:
    model = _model_with_constant_in_subgraph(external=True)
    assert external_files(model) == {"/etc/passwd"}
    with pytest.raises(BundleError, match="external data '/etc/passwd'"):
        check_external_data(model, ("/etc/passwd",))  # listed or not, a path is never allowed


def test_external_initializers_are_found() -> None:
    model = onnx.load_from_string(_model_with_constant_in_subgraph(external=False))
    init = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "w")
    init.data_location = TensorProto.EXTERNAL
    model.graph.initializer.append(init)
    with pytest.raises(BundleError, match="external data without a location"):
        check_external_data(model.SerializeToString(), ())


def test_a_bare_file_name_the_manifest_lists_is_allowed() -> None:
    model = onnx.load_from_string(_model_with_constant_in_subgraph(external=False))
    init = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "w")
    init.data_location = TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "tower.onnx.data"
    model.graph.initializer.append(init)
    data = model.SerializeToString()
    check_external_data(data, ("tower.onnx.data",))
    with pytest.raises(BundleError, match="not a file the manifest lists"):
        check_external_data(data, ())


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff", b"\x3a\x10short"])
def test_malformed_protobuf_is_refused(data: bytes) -> None:
    with pytest.raises(BundleError):
        external_files(data)
