"""The page's reenactment mode: target photos uploaded to the server, and what a peer needs to drive one.

    POST /target (web.server)  the photo's bytes -> `load_target` in a worker thread: header checked against
                               `web.guard.Limits` (`stream.sources.read_image` / `stream.probe.probe_image`) before
                               decoding, scaled to the stream's size, its face found once (still-image landmarks;
                               none -> one-line refusal) -> `TargetStore.add` -> a token for the page
    data channel "reenact"     the peer takes the target by its token, `ReenactSettings.merged` checks the options,
                               and its `SessionSwitch` moves the FrameDriver from the edit Session to a
                               `stream.reenact_live.ReenactSession` built with the face found at upload (`KnownFaces`)

Everything held is bounded: a photo's bytes (`Limits.max_target_bytes`), its declared and streamed size, photos
being read at once, photos held (`Limits.max_targets_held`, oldest first) and for how long (`Limits.target_ttl_s`).
"""
from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from stream.reenact_calibration import MAX_CALIBRATION, MAX_CALIBRATION_S   # the hosted doors' bounds

TARGET_SIDE = 640                # a target photo's longest side as streamed (larger photos are scaled down)
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def clean_name(name: str | None) -> str:
    """A file name safe to show and to use in a temporary folder: letters, digits, . _ - (at most 60)."""
    text = _NAME.sub("_", str(name or "")).strip("._")[:60]
    return text or "photo"


@dataclass(eq=False)
class Target:
    """A target photo accepted for reenactment (equal only to itself)."""

    token: str                    # what the page sends back to use it (unguessable)
    name: str                     # the uploaded file's (cleaned) name
    photo: np.ndarray             # uint8 [H, W, 3] BGR, longest side <= the server's target side, W and H even
    faces: list                   # float32 [478, 2] landmarks of the faces found in `photo` (at least one)
    source_size: tuple            # (width, height) of the photo as uploaded
    created: float                # time.monotonic() of the upload

    def summary(self) -> dict:
        """JSON-able: what the page shows about the target."""
        h, w = self.photo.shape[:2]
        return {"target": self.token, "name": self.name, "width": int(w), "height": int(h),
                "source_size": [int(v) for v in self.source_size], "faces": len(self.faces),
                "scaled": tuple(self.source_size) != (w, h)}


class KnownFaces:
    """A still-image landmarker for a target photo whose faces were found at upload: `detect` replays them."""

    def __init__(self, faces: list):
        self.faces = faces

    def detect(self, photo: np.ndarray) -> list:
        return [np.array(f, copy=True) for f in self.faces]

    def close(self) -> None:
        pass


class _Remember:
    """MediaPipe's still-image landmarker, keeping what it found (for `KnownFaces`)."""

    def __init__(self):
        self.faces: list = []

    def detect(self, photo: np.ndarray) -> list:
        from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415

        with FaceMeshLandmarker(max_faces=4, video_mode=False) as landmarker:
            self.faces = landmarker.detect(photo)
        return self.faces


def fit_side(photo: np.ndarray, side: int) -> np.ndarray:
    """`photo` scaled down (area filter) so its longest side is at most `side`, then cropped to even W and H (the
    stream's 4:2:0 encoder halves both). uint8 [H, W, 3] BGR in and out."""
    import cv2  # noqa: PLC0415

    h, w = photo.shape[:2]
    k = min(1.0, side / max(h, w))
    if k < 1.0:
        photo = cv2.resize(photo, (max(2, round(w * k)), max(2, round(h * k))), interpolation=cv2.INTER_AREA)
    h, w = photo.shape[:2]
    return np.ascontiguousarray(photo[: h - h % 2, : w - w % 2])


def load_target(data: bytes, name: str, limits, crop_size: int, side: int = TARGET_SIDE,
                feather_px: float | None = None) -> Target:
    """An uploaded photo's bytes -> `Target` (runs in a worker thread: decoding and face detection take a while).

    limits: `web.guard.Limits` (the header is checked against its `max_target_*` before anything is decoded).
    `stream.probe.UploadRefused` (a ValueError, one line) for what is not a photo or is too large; ValueError for a
    photo without a face (`stream.reenact_target.find_target`'s line)."""
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from stream.reenact_target import find_target  # noqa: PLC0415
    from stream.sources import read_image  # noqa: PLC0415

    name = clean_name(name)
    with tempfile.TemporaryDirectory(prefix="micromotion-target-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        photo = read_image(path, limits.target_probe_limits())
    h, w = photo.shape[:2]
    scaled = fit_side(photo, side)
    remember = _Remember()
    find_target(scaled, crop_size, remember, feather_px, name=f"'{name}'")
    return Target(token=secrets.token_urlsafe(16), name=name, photo=scaled, faces=remember.faces,
                  source_size=(w, h), created=time.monotonic())


class TargetStore:
    """The accepted target photos by token: at most `max_held`, each for at most `ttl_s` (oldest dropped first)."""

    def __init__(self,
                 max_held: int,              # photos kept
                 ttl_s: float,               # seconds a photo is kept after its upload
                 clock=time.monotonic):
        self.max_held, self.ttl_s, self.clock = int(max_held), float(ttl_s), clock
        self._held: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def add(self, target: Target) -> None:
        with self._lock:
            self._held[target.token] = target
            self._expire()

    def get(self, token) -> Target:
        """The target under `token`; ValueError (one line) when it is unknown or expired."""
        with self._lock:
            self._expire()
            target = self._held.get(token) if isinstance(token, str) else None
        if target is None:
            raise ValueError("that target photo is not held here (gone after "
                             f"{self.ttl_s / 60:g} minutes, pushed out by newer ones, or the server restarted); "
                             "pick the photo again")
        return target

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._held)

    def _expire(self) -> None:
        now = self.clock()
        while self._held:
            token, oldest = next(iter(self._held.items()))
            if len(self._held) <= self.max_held and now - oldest.created <= self.ttl_s:
                return
            del self._held[token]


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ReenactSettings:
    """What a peer's reenactment is built with: the motion options, the paste and the calibration window."""

    options: Any                                  # directions.reenact.ReenactOptions
    paste_mode: str = "residual"                  # residual | replace (stream.reenact_calibration.LIVE_PASTE_MODES)
    calibration: int = 40                         # driver latents the motion is learned from
    calibration_s: float = 4.0                    # ... over at least this many seconds

    @classmethod
    def default(cls) -> "ReenactSettings":
        from directions.reenact import ReenactOptions  # noqa: PLC0415
        from stream.reenact_calibration import CALIBRATION, CALIBRATION_S  # noqa: PLC0415

        return cls(ReenactOptions(), "residual", CALIBRATION, CALIBRATION_S)

    def merged(self, data: Mapping, num_ws: int | None = None) -> "ReenactSettings":
        """These settings with a message's fields ("options" {...}, "paste_mode", "calibration", "calibration_s";
        fields left out keep their values), checked: ValueError (one line) for anything refused."""
        from directions.reenact import ReenactOptions  # noqa: PLC0415
        from stream.reenact_calibration import check_live_options, check_paste_mode  # noqa: PLC0415

        options = data.get("options", {})
        if not isinstance(options, Mapping):
            raise ValueError("reenactment options must be an object, e.g. {\"rank\": 4, \"beta\": 1}")
        calibration = _number(data.get("calibration", self.calibration), "calibration", int, 2, MAX_CALIBRATION)
        seconds = _number(data.get("calibration_s", self.calibration_s), "calibration_s", float, 0.0,
                          MAX_CALIBRATION_S)
        paste = data.get("paste_mode", self.paste_mode)
        paste = check_paste_mode(paste if isinstance(paste, str) else repr(paste))
        merged = ReenactOptions.from_dict({**self.options.to_dict(), **options})
        check_live_options(merged, calibration, num_ws)
        return ReenactSettings(merged, paste, calibration, seconds)

    def same_session(self, other: "ReenactSettings") -> bool:
        """True when `other` can be applied to a running session (options, paste); False: a new calibration."""
        return (self.calibration, self.calibration_s) == (other.calibration, other.calibration_s)

    def to_dict(self) -> dict:
        return {"options": self.options.to_dict(), "paste_mode": self.paste_mode, "calibration": self.calibration,
                "calibration_s": self.calibration_s}


def _number(value, name: str, kind, low, high):
    try:
        number = kind(value)
        if isinstance(value, bool) or not (low <= number <= high):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}") from None
    return number


# ---------------------------------------------------------------------------------------------- the stream


class SessionSwitch:
    """What a peer's FrameDriver processes: its edit Session or its ReenactSession, swapped between two frames.

    `use(session)` returns the one it replaces, once no frame is being processed by it (the caller closes it)."""

    def __init__(self, session):
        self.current = session
        self._lock = threading.Lock()

    def process(self, frame, t_capture=None):
        with self._lock:
            return self.current.process(frame, t_capture)

    def stats(self) -> dict:
        return self.current.stats()

    def use(self, session):
        with self._lock:
            old, self.current = self.current, session
        return old
