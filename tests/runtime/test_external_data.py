"""External data stays inside the model's folder (symlinks resolved, the model file's own
included), offsets and lengths are checked against the file, and every refusal is a named
InferenceError: never a read outside, never a blocked open, never a traceback."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_builders import make_model, tensor

from runtime import InferenceError, InferenceSession

W = np.arange(4, dtype=np.float32)


def model_with_external(folder: Path, entries: dict[str, str], data: bytes | None = W.tobytes(),
                        name: str = "m.onnx") -> Path:
    """y = x + w, with w stored externally under ``entries`` (location, offset, length)."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    w.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        w.external_data.add(key=key, value=value)
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                       [tensor("x", [4])], [tensor("y", [4])], [w])
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None and "location" in entries and entries["location"] and not entries["location"].startswith(
        ("/", "..")
    ):
        (folder / entries["location"]).write_bytes(data)
    path = folder / name
    path.write_bytes(model)
    return path


def run(path: Path) -> np.ndarray:
    return InferenceSession(path, threads=1).run(None, {"x": np.ones(4, np.float32)})[0]


def refused(path: Path, *words: str) -> str:
    with pytest.raises(InferenceError) as info:
        run(path)
    message = str(info.value)
    assert str(path) in message and "initializer 'w'" in message, message
    for word in words:
        assert word in message, message
    return message


def test_external_data_inside_the_folder_is_read(tmp_path):
    np.testing.assert_array_equal(run(model_with_external(tmp_path, {"location": "w.bin"})), W + 1)
    path = model_with_external(tmp_path / "off", {"location": "w.bin", "offset": "8", "length": "16"},
                               data=bytes(8) + W.tobytes())
    np.testing.assert_array_equal(run(path), W + 1)


@pytest.mark.parametrize(
    ("entries", "data", "words"),
    [
        ({"location": "w.bin", "length": str(2**62)}, W.tobytes(), ("length",)),
        ({"location": "w.bin", "offset": "-8"}, W.tobytes(), ("offset", "-8")),
        ({"location": "w.bin", "offset": "eight"}, W.tobytes(), ("offset",)),
        ({"location": "w.bin", "offset": str(2**62)}, W.tobytes(), ("beyond its end",)),
        ({"location": "w.bin"}, W.tobytes()[:10], ("beyond its end",)),
        ({"location": "w.bin", "offset": "12"}, W.tobytes(), ("beyond its end",)),
        ({"location": "missing.bin"}, None, ("cannot be opened",)),
        ({"location": ""}, None, ("relative file name",)),
        ({}, None, ("relative file name",)),
        ({"location": "/etc/hostname"}, None, ("relative file name",)),
        ({"location": "../outside.bin"}, None, ("outside the model folder",)),
        ({"location": "w.bin", "surprise": "1"}, W.tobytes(), ("unknown external data key",)),
    ],
)
def test_bad_references_are_refused(tmp_path, entries, data, words):
    (tmp_path / "outside.bin").write_bytes(W.tobytes())
    refused(model_with_external(tmp_path / "model", entries, data), *words)


def test_a_data_file_symlinked_out_of_the_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(W.tobytes())
    folder = tmp_path / "model"
    path = model_with_external(folder, {"location": "w.bin"}, data=None)
    (folder / "w.bin").symlink_to(secret)
    refused(path, "outside the model folder")


def test_a_symlinked_model_reads_only_from_its_real_folder(tmp_path):
    """The model file is a symlink into another folder: its data is looked up next to the real
    file, never next to the link (a file planted beside the link is not read)."""
    real = model_with_external(tmp_path / "real", {"location": "w.bin"}, data=None)
    links = tmp_path / "links"
    links.mkdir()
    (links / "w.bin").write_bytes((W * 100).tobytes())
    link = links / "m.onnx"
    link.symlink_to(real)
    message = refused(link, "cannot be opened")
    assert "w.bin" in message
    (tmp_path / "real" / "w.bin").write_bytes(W.tobytes())
    np.testing.assert_array_equal(run(link), W + 1)  # the real folder's data, not the planted one


def test_a_directory_or_fifo_is_refused_without_blocking(tmp_path):
    folder = tmp_path / "model"
    path = model_with_external(folder, {"location": "data"}, data=None)
    (folder / "data").mkdir()
    refused(path, "not a regular file")
    fifo_path = model_with_external(tmp_path / "fifo", {"location": "pipe"}, data=None)
    os.mkfifo(tmp_path / "fifo" / "pipe")
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opening the FIFO blocked"))
    signal.alarm(10)
    try:
        refused(fifo_path, "not a regular file")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_bytes_with_external_references_and_odd_model_paths_are_refused(tmp_path):
    path = model_with_external(tmp_path, {"location": "w.bin"})
    with pytest.raises(InferenceError, match="external data"):
        InferenceSession(path.read_bytes())
    with pytest.raises(InferenceError, match="no such model file"):
        InferenceSession(tmp_path / "nope.onnx")
    with pytest.raises(InferenceError, match="not a regular file"):
        InferenceSession(tmp_path)
    with pytest.raises(InferenceError, match="model file path or serialized bytes"):
        InferenceSession(42)


def test_external_tensor_over_the_memory_limit_is_refused_before_reading(tmp_path):
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**20])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="w.bin")
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                       [tensor("x", [2**20])], [tensor("y", [2**20])], [w])
    (tmp_path / "w.bin").write_bytes(bytes(4 << 20))
    (tmp_path / "m.onnx").write_bytes(model)
    with pytest.raises(InferenceError, match="memory limit"):
        InferenceSession(tmp_path / "m.onnx", memory_limit=1 << 20)
    assert onnx.load(tmp_path / "m.onnx", load_external_data=False).graph.initializer[0].name == "w"
