"""Find the external data files an ONNX model names, without depending on the onnx package.

External initializers make ONNX Runtime open paths named inside the model. Large towers keep
their weights in one such file beside the model, because ONNX Runtime memory-maps external data
(so workers share it) while it copies inline weights into every process. A model may therefore
name external files, but only bare file names that the manifest lists (and so checksummed):
never a path, never a file outside the bundle. We walk the protobuf wire format just deep enough
to find every TensorProto (initializers, attribute tensors, subgraphs) and read its
`external_data` locations; `data_location == EXTERNAL` without a location is refused.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from service.errors import BundleError

# field numbers from onnx.proto3
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS = 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
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


def _check_tensor(buf: memoryview, found: set[str]) -> None:
    external = False
    locations = []
    for number, _, value in _fields(buf):
        if number == _TENSOR_DATA_LOCATION and value == _EXTERNAL:
            external = True
        elif number == _TENSOR_EXTERNAL_DATA and isinstance(value, memoryview):
            entry = {n: v for n, _, v in _fields(value) if isinstance(v, memoryview)}
            if bytes(entry.get(_ENTRY_KEY, b"")) == b"location":
                locations.append(bytes(entry.get(_ENTRY_VALUE, b"")).decode(errors="replace"))
    if external and not locations:
        raise BundleError("ONNX model references external data without a location")
    found.update(locations)


def _check_sparse(buf: memoryview, found: set[str]) -> None:
    for number, _, value in _fields(buf):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and isinstance(value, memoryview):
            _check_tensor(value, found)


def _check_graph(buf: memoryview, depth: int, found: set[str]) -> None:
    if depth > _MAX_DEPTH:
        raise BundleError("ONNX model nests subgraphs too deeply")
    for number, _, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if number == _GRAPH_INITIALIZER:
            _check_tensor(value, found)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _check_sparse(value, found)
        elif number == _GRAPH_NODE:
            for node_field, _, attribute in _fields(value):
                if node_field == _NODE_ATTRIBUTE and isinstance(attribute, memoryview):
                    _check_attribute(attribute, depth, found)


def _check_attribute(buf: memoryview, depth: int, found: set[str]) -> None:
    for number, _, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if number in (_ATTR_T, _ATTR_TENSORS):
            _check_tensor(value, found)
        elif number in (_ATTR_G, _ATTR_GRAPHS):
            _check_graph(value, depth + 1, found)
        elif number in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
            _check_sparse(value, found)


def external_files(model: bytes) -> set[str]:
    """Every external data location named by a tensor of `model`."""
    graphs = [v for n, _, v in _fields(memoryview(model)) if n == _MODEL_GRAPH]
    if len(graphs) != 1 or not isinstance(graphs[0], memoryview):
        raise BundleError("ONNX model has no graph")
    found: set[str] = set()
    _check_graph(graphs[0], 0, found)
    return found


def check_external_data(model: bytes, listed: Collection[str]) -> None:
    """Refuse external data unless every file is a bare name the manifest lists."""
    for location in sorted(external_files(model)):
        if location not in listed or "/" in location or "\\" in location or location in {".", ".."}:
            raise BundleError(
                f"ONNX model references external data {location!r}, "
                "which is not a file the manifest lists"
            )
