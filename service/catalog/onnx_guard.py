"""Refuse ONNX models that point at external data files, without depending on the onnx package.

External initializers would make ONNX Runtime open paths named inside the model, i.e. files the
manifest never checksummed (or outside the bundle). We walk the protobuf wire format just deep
enough to find every TensorProto (initializers, attribute tensors, subgraphs) and reject any
with `external_data` or `data_location == EXTERNAL`.
"""

from __future__ import annotations

from collections.abc import Iterator

from service.errors import BundleError

# field numbers from onnx.proto3
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS = 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_EXTERNAL = 1
_MAX_DEPTH = 64


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BundleError("ONNX model is not a valid protobuf (truncated varint)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) for every field of one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise BundleError("ONNX model is not a valid protobuf (truncated field)")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise BundleError(f"ONNX model is not a valid protobuf (wire type {wire})")


def _check_tensor(buf: memoryview) -> None:
    for number, _, value in _fields(buf):
        if number == _TENSOR_EXTERNAL_DATA or (
            number == _TENSOR_DATA_LOCATION and value == _EXTERNAL
        ):
            raise BundleError("ONNX model references external data; bundles must be self-contained")


def _check_sparse(buf: memoryview) -> None:
    for number, wire, value in _fields(buf):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and isinstance(value, memoryview):
            _check_tensor(value)
        del wire


def _check_graph(buf: memoryview, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise BundleError("ONNX model nests subgraphs too deeply")
    for number, _, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if number == _GRAPH_INITIALIZER:
            _check_tensor(value)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _check_sparse(value)
        elif number == _GRAPH_NODE:
            for node_field, _, attribute in _fields(value):
                if node_field == _NODE_ATTRIBUTE and isinstance(attribute, memoryview):
                    _check_attribute(attribute, depth)


def _check_attribute(buf: memoryview, depth: int) -> None:
    for number, _, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if number in (_ATTR_T, _ATTR_TENSORS):
            _check_tensor(value)
        elif number in (_ATTR_G, _ATTR_GRAPHS):
            _check_graph(value, depth + 1)
        elif number in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
            _check_sparse(value)


def reject_external_data(model: bytes) -> None:
    """Raise BundleError if any tensor of `model` lives outside the model bytes."""
    graphs = [v for n, _, v in _fields(memoryview(model)) if n == _MODEL_GRAPH]
    if len(graphs) != 1 or not isinstance(graphs[0], memoryview):
        raise BundleError("ONNX model has no graph")
    _check_graph(graphs[0], 0)
