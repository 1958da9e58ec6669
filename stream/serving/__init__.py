"""How edits are scheduled: sessions submit a frame's faces, a backend runs them through the editor.

Every backend has the same surface (`EditBackend`):

    backend.info                         EditorInfo (crop size, direction names, notice, ...)
    backend.submit(stream_id, jobs)      -> concurrent.futures.Future of [FaceEdit] (one per job, same order)
    backend.cancel(stream_id)            drop that stream's waiting requests (its client vanished)
    backend.stats()                      {"batches", "faces", "mean_batch", "edits_per_s", "errors", ...}
    backend.close()

* `stream.serving.local.InlineBackend`   -- edits in the caller's thread (files, `Effect.process`, tests);
* `stream.serving.local.BatchingBackend` -- one worker thread gathers the faces of every stream into one pass
                                            (gather window, maximum batch, fair order);
* `stream.serving.ray_backend`           -- the editor as a Ray Serve deployment (replicas on GPUs).
"""
from __future__ import annotations

from typing import Protocol, Sequence


class EditBackend(Protocol):
    """What a session needs of the serving layer."""

    info: object

    def submit(self, stream_id: str, jobs: Sequence) -> object: ...

    def cancel(self, stream_id: str) -> None: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...
