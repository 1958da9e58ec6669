"""A face's editor memory as host bytes, so it can travel with the face's next request to any replica.

The in-process editor keeps a face's `FaceMemory` (its last latent and reconstruction) as tensors on its device.
Across Ray Serve, consecutive frames of one face may land on different replicas, so the memory travels with the
request (`stream.serving.ray_backend` says why): the replica turns each returned memory into a `WireMemory`
(`to_wire`), the front end keeps it on the face's track as an opaque value, and the next job carries it back
(`from_wire` on whichever replica takes it). Bit-exact both ways for every dtype: nothing is rounded, so the
Ray backend gives the in-process editor's pixels.

Per face and direction of travel (live mode, ReStyle): ws float32 [num_ws, w_dim] (18 x 512 -> 36 KiB) +
recon [3, s, s] in the network dtype (s = the encoder's input size, 256: 384 KiB in fp16/bf16, 768 KiB in fp32).
The front end never needs torch for it: ws and recon travel as numpy arrays (recon as its raw bytes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class WireMemory:
    """A `stream.editor.FaceMemory` on the host, picklable without torch."""

    ws: np.ndarray          # float32 [num_ws, w_dim]: the face's last latent
    recon: np.ndarray       # uint8 [nbytes]: the raw bytes of pool(G(ws)) in `recon_dtype`
    recon_dtype: str        # torch dtype name of recon: "float32" | "float16" | "bfloat16"
    recon_shape: tuple      # (3, s, s)

    @property
    def nbytes(self) -> int:
        """Bytes this memory adds to a request (and to the reply that returns the next one)."""
        return int(self.ws.nbytes + self.recon.nbytes)


def to_wire(memories: Sequence) -> list:
    """[FaceMemory | None] (tensors on any device) -> [WireMemory | None]; one device->host copy per tensor kind."""
    import torch  # noqa: PLC0415

    rows = [i for i, m in enumerate(memories) if m is not None]
    out: list = [None] * len(memories)
    if not rows:
        return out
    ws = torch.stack([memories[i].ws.detach().float() for i in rows]).cpu()
    recon = torch.stack([memories[i].recon.detach() for i in rows]).contiguous().cpu()
    dtype = str(recon.dtype).removeprefix("torch.")
    for k, i in enumerate(rows):
        bits = recon[k].reshape(-1).view(torch.uint8).numpy().copy()
        out[i] = WireMemory(ws[k].numpy().copy(), bits, dtype, tuple(recon.shape[1:]))
    return out


def from_wire(memories: Sequence, device, num_ws: int, w_dim: int, recon_shape: tuple, recon_dtype) -> list:
    """[WireMemory | FaceMemory | None] -> [FaceMemory | None] on `device`, recon in `recon_dtype`.

    A memory that does not fit this editor (another network's shapes, e.g. during a rolling update) becomes None:
    that face starts again from the average latent, as a new face does."""
    import torch  # noqa: PLC0415

    from stream.editor import FaceMemory  # noqa: PLC0415

    out = []
    for m in memories:
        if not isinstance(m, WireMemory):  # None (a new face), or a FaceMemory already on the device
            out.append(m)
            continue
        if m.ws.shape != (num_ws, w_dim) or tuple(m.recon_shape) != tuple(recon_shape):
            out.append(None)
            continue
        # copies: arrays that arrive through Ray are read-only views of its buffers
        ws = torch.from_numpy(np.array(m.ws, np.float32)).to(device)
        raw = torch.from_numpy(np.array(m.recon, np.uint8))
        recon = raw.view(getattr(torch, m.recon_dtype)).reshape(m.recon_shape).to(device=device, dtype=recon_dtype)
        out.append(FaceMemory(ws, recon))
    return out
