"""Checkpoints that try to run code are refused *because they contain code*, found by what the unpickler is asked
to resolve (engine.safe_pickle), not by torch's error wording; nothing from the file runs (a marker file proves it).
"""
from __future__ import annotations

import argparse
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from engine import nvidia_pkl, safe_pickle
from engine.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    load_encoder,
    load_generator,
    read_checkpoint,
)
from gen_helpers import make_tiny_generator


class _Evil:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _generator_ckpt(extra=None) -> dict:
    G = make_tiny_generator()
    return {"g_ema": G.state_dict(), "latent_avg": torch.zeros(G.w_dim), **(extra or {})}


def _write(path, obj, fmt):
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a plain pickle, protocol 4 (STACK_GLOBAL opcodes, which torch's own loader never writes)
        path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw-pickle"])
def test_checkpoint_with_reduce_payload_is_refused_because_it_contains_code(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    path = _write(tmp_path / "stylegan2-ffhq-config-f.pt", _generator_ckpt({"x": _Evil(marker)}), fmt)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_generator(path)
    msg = str(info.value)
    assert "refused: the file contains code (posix.system)" in msg and "nothing from the file was run" in msg
    assert "official source" in msg and "\n" not in msg
    assert "truncated" not in msg and "corrupt" not in msg and "re-download" not in msg
    assert info.value.names == ["posix.system"] and info.value.path == path
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):  # the encoder loader reads through the same door
        load_encoder(path)
    assert not marker.exists()


def test_verdict_does_not_depend_on_torchs_error_text(tmp_path, monkeypatch):
    """torch.load is never reached for a file with code; a damaged file stays 'corrupt' whatever torch says."""
    marker = tmp_path / "PWNED"
    evil = _write(tmp_path / "evil.pt", {"x": _Evil(marker)}, "zip")
    calls = []

    def fake_load(*args, **kwargs):
        calls.append(args)
        raise pickle.UnpicklingError("Unsupported global: wording of some other torch release")

    monkeypatch.setattr(torch, "load", fake_load)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(evil)
    assert calls == []
    plain = _write(tmp_path / "plain.pt", {"w": torch.zeros(2)}, "zip")
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        read_checkpoint(plain)
    assert not isinstance(info.value, UnsafeCheckpointError) and len(calls) == 1
    assert not marker.exists()


def test_plain_data_is_not_called_code(tmp_path):
    ckpt = {"g": OrderedDict(w=torch.zeros(3)), "p": torch.nn.Parameter(torch.ones(2)), "h": torch.zeros(2).half(),
            "args": argparse.Namespace(size=16), "s": {1, 2}, "b": b"bytes", "d": torch.device("cpu")}
    for fmt in ("zip", "legacy"):
        path = _write(tmp_path / f"{fmt}.pt", ckpt, fmt)
        scan = safe_pickle.scan_file(path)
        assert scan.code == [] and scan.unsupported == [] and scan.readable, (fmt, scan)
        assert read_checkpoint(path)["args"].size == 16


def test_numpy_arrays_are_named_not_called_code(tmp_path):
    path = _write(tmp_path / "np.pt", {"w": np.zeros(3)}, "zip")
    with pytest.raises(CheckpointError, match=r"does not take \(numpy") as info:
        read_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_tensor_pickled_with_plain_pickle_hides_code_in_a_nested_blob(tmp_path):
    """pickle.dumps(tensor) nests a torch.save blob (torch.storage._load_from_bytes): the blob is scanned too."""
    marker = tmp_path / "PWNED"
    inner = tmp_path / "inner.pt"
    torch.save({"x": _Evil(marker)}, inner, _use_new_zipfile_serialization=False)
    blob = inner.read_bytes()

    class Nested:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (blob,))

    path = tmp_path / "nested.pt"
    path.write_bytes(pickle.dumps({"w": Nested()}, protocol=2))
    scan = safe_pickle.scan_file(path)
    assert "posix.system" in scan.code and "torch.storage._load_from_bytes" in scan.unsupported
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_nvidia_pickle_with_code_is_an_unsafe_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(UnsafeCheckpointError, match=r"contains code \(posix\.system\).*official source"):
        load_generator(path)
    assert not marker.exists()


def test_nvidia_pickle_named_pt_is_told_apart_from_code(tmp_path):
    path = tmp_path / "network.pt"  # zip check fails; no torch_utils bytes in the first 64 KiB test: written raw
    path.write_bytes(b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\nq\x00}q\x01\x85q\x02Rq\x03.")
    with pytest.raises(CheckpointError, match="NVIDIA network pickle.*\\.pkl suffix") as info:
        load_encoder(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_scan_reports_garbage_as_unreadable(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x02garbage" * 20)
    scan = safe_pickle.scan_file(junk)
    assert not scan.readable and scan.error and scan.code == []
    assert nvidia_pkl  # imported: the NVIDIA loader shares the refusal class
