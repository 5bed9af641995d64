"""Crafted `.keras` archives for the model-store tests: real archives, re-zipped with `zipfile`.

The payload is a Lambda layer wrapping an exported Keras function, connected to no output:
functional reconstruction calls it while the model loads. Keras 3.15's own deny list
(`NON_MODELING_APIS`) now blocks the exported functions that write files (`get_file`, `save_img`,
`save_model`, ...), so the live payload is `keras.config.set_epsilon`: code that changes a
process-wide setting at load (checked in a child process). The writer (`keras.utils.get_file`,
which creates `cache_dir/cache_subdir`) is kept for the "writes no file" checks.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile


def entries_of(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every entry of an archive, in order (repeated names kept)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def zip_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    """An archive of exactly these entries, in order (repeated names written as given)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a repeated name, and writes it
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in entries:
                z.writestr(name, data)
    return buf.getvalue()


def lambda_config(config: dict, module: str, fn: str, arguments: dict | None = None) -> dict:
    """`config` with a dangling Lambda calling `module.fn(<input>, **arguments)` when the model loads."""
    config = copy.deepcopy(config)
    window = config["config"]["layers"][0]
    config["config"]["layers"].append({
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "payload",
        "config": {"name": "payload", "trainable": True,
                   "function": {"module": module, "class_name": "function", "config": fn, "registered_name": fn},
                   "arguments": arguments or {}},
        "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {
            "shape": window["config"]["batch_shape"], "dtype": "float32",
            "keras_history": [window["name"], 0, 0]}}], "kwargs": {}}]})
    return config


def epsilon_gadget(config: dict) -> dict:
    """Sets Keras' epsilon to the input tensor: live under Keras safe mode alone."""
    return lambda_config(config, "keras.config", "set_epsilon")


def writer_gadget(folder: str, subfolder: str = "written"):
    """Creates `folder/subfolder` if Keras ran it (blocked by Keras 3.15's own deny list)."""
    return lambda config: lambda_config(config, "keras.utils", "get_file",
                                        {"origin": "file:///dev/null", "cache_dir": folder, "cache_subdir": subfolder})


def with_second_config(member: bytes, gadget=epsilon_gadget, name: str = "config.json") -> bytes:
    """The member with a second config entry (`name`) holding `gadget(config)`, after the original one."""
    entries = entries_of(member)
    config = json.loads(dict(entries)["config.json"])
    return zip_bytes(entries + [(name, json.dumps(gadget(config)).encode())])
