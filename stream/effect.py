"""The effect as a door holds it: the editor behind a serving backend, and the sessions made from it.

    effect = Effect.open(config)                 # the one loader: networks + directions, or a stand-in
    session = effect.new_session()               # one per camera / browser peer / clip
    out = session.process(frame)                 # or through stream.driver.FrameDriver at the camera's rate
    effect.close()

`Effect.process(frame, controls, state)` stays as the thin synchronous walk (tests, quick scripts): it sets the
controls on the session `state` and awaits the frame's own edit, returning the frame only.

Pieces: `stream.options` (EffectConfig, the flags), `stream.loader` (load_editor, WeightsMissing), `stream.editor`
(Editor), `stream.serving` (backends), `stream.session` (Session), `stream.driver` (FrameDriver), `stream.status`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from stream.controls import MAX_ALPHA, Controls, animation_t
from stream.face.tracking import landmark_jump
from stream.loader import DOWNLOAD_COMMAND, WeightsMissing, build_editor, load_editor
from stream.options import MODES, EffectConfig
from stream.session import Session
from stream.stats import STAGES


class Effect:
    """An editor behind a backend, and the factory of per-stream sessions."""

    def __init__(self,
                 config: EffectConfig | None = None,
                 *,
                 editor=None,                                    # Editor | EditorStandin; else built from config
                 backend=None,                                   # a stream.serving backend around `editor`
                 batching: bool = False,                         # BatchingBackend (live doors) vs InlineBackend
                 generator=None,                                 # injected networks (tests, benchmarks)
                 encoder=None,
                 directions=None,                                # {name: delta} or [Direction]; else the files
                 landmarker_factory: Callable[[], Any] | None = None):  # () -> detect(frame); None -> MediaPipe
        self.config = config = config or EffectConfig()
        if backend is None:
            if editor is None and not config.remote:  # WeightsMissing when a network is not downloaded (open: not)
                editor = build_editor(config, generator=generator, encoder=encoder, directions=directions)
            networks = (generator, encoder, directions)   # injected ones travel to Ray replicas (tests, benches)
            backend = make_backend(editor, config, batching,
                                   networks=networks if any(n is not None for n in networks) else None)
        self.backend = backend
        self.editor = getattr(backend, "editor", editor)
        self._landmarker_factory = landmarker_factory

    @classmethod
    def open(cls, config: EffectConfig | None = None, batching: bool = True, **kwargs) -> "Effect":
        """The effect every door starts: full, or a stand-in (networks missing, --tracking-only) with a notice."""
        factory = kwargs.pop("landmarker_factory", None)
        if config is not None and config.remote:  # the networks load in the Ray Serve replicas
            return cls(config, batching=batching, landmarker_factory=factory, **kwargs)
        editor = load_editor(config, **kwargs)
        return cls(config, editor=editor, batching=batching, landmarker_factory=factory)

    # ------------------------------------------------------------------ what doors read
    @property
    def info(self):
        return self.backend.info

    @property
    def notice(self) -> str | None:
        return self.info.notice

    @property
    def available_directions(self) -> list[str]:
        return list(self.info.direction_names)

    def direction_info(self) -> dict:
        return self.info.direction_info()

    def parse_controls(self, data: Mapping) -> Controls:
        """Controls from JSON, checked against the directions this effect holds."""
        return Controls.from_dict(data, self.available_directions)

    # ------------------------------------------------------------------ sessions
    def new_session(self, controls: Controls | None = None, clock: Callable[[], float] = time.monotonic,
                    stream_id: str | None = None, offline: bool = False) -> Session:
        """A fresh per-stream session (its own tracker, memories, controls, counters); `offline` for a file or photo
        job (aligned as the encoders were trained, whatever the device: `EffectConfig.aligner_for`)."""
        return Session(self.backend, self.config, controls=controls, landmarker_factory=self._landmarker_factory,
                       clock=clock, stream_id=stream_id, offline=offline)

    def new_reenact_session(self, target_photo: np.ndarray, options=None, clock: Callable[[], float] = time.monotonic,
                            stream_id: str | None = None, **kwargs):
        """A reenactment session: the camera's face drives `target_photo` (uint8 BGR); `options` a
        directions.reenact.ReenactOptions; kwargs: paste_mode, calibration, ... (see stream.reenact_live)."""
        from stream.reenact_live import ReenactSession  # noqa: PLC0415

        return ReenactSession(self.backend, target_photo, options, self.config,
                              landmarker_factory=self._landmarker_factory, clock=clock, stream_id=stream_id, **kwargs)

    def process(self, frame_bgr: np.ndarray, controls: Controls | Mapping | None = None,
                state: Session | None = None) -> np.ndarray:
        """The synchronous walk: the frame with its own fresh edit (or the input object when nothing was pasted).

        `state` is the stream's Session (a throw-away one when None). ValueError for a frame that is not
        uint8 [H, W, 3] or for invalid controls.
        """
        session = state if state is not None else self.new_session()
        try:
            if controls is not None:
                session.set_controls(controls)
            return session.process(frame_bgr, wait=True).frame
        finally:
            if state is None:
                session.close()

    def stats(self) -> dict:
        return self.backend.stats()

    def close(self) -> None:
        self.backend.close()


def make_backend(editor, config: EffectConfig, batching: bool, networks: tuple | None = None):
    """InlineBackend (synchronous) or BatchingBackend (one worker for every stream) around `editor`; with
    `--serve ray` and no editor here, the Ray Serve deployment (networks: (G, E, directions) to ship, or None)."""
    from stream.serving.local import BatchingBackend, InlineBackend  # noqa: PLC0415

    if editor is None and config.remote:
        from stream.serving.ray_backend import RayBackend  # noqa: PLC0415

        return RayBackend(config, networks=networks)

    if batching and editor.info.available:
        return BatchingBackend(editor, gather_ms=config.gather_ms, max_batch=config.max_batch)
    return InlineBackend(editor)


__all__ = [
    "DOWNLOAD_COMMAND",
    "MAX_ALPHA",
    "MODES",
    "STAGES",
    "Controls",
    "Effect",
    "EffectConfig",
    "WeightsMissing",
    "animation_t",
    "landmark_jump",
]
