"""What state the effect is in, for one frame of one stream, and how a door shows it.

States (`FrameStatus.state`), in the words every door uses (`describe`):

    running             an edit is on the face (its age in `edit_age_ms`)
    waiting             a face is found; its first edit is being computed (the frame passes through)
    stale               the newest edit is older than the staleness bound: the frame passes through
    no_face             no face in view (the frame passes through)
    face_too_small      a face is there but too small to edit (come closer)
    off                 the effect is switched off
    networks_missing    no network weights: the face is tracked and drawn, nothing is edited
    tracking_only       started with --tracking-only
    directions_missing  networks loaded but no direction to apply (the face is reconstructed, not edited)
    error               this frame failed (passed through); `message` names the error

Reenactment (`stream.reenact_live`: a camera drives a target photo; the output is the target):

    calibrating         the driver's motion is being learned (progress `done/total` in the message)
    driving             the target moves with the driver (the pose's age in `edit_age_ms`)
    driver_lost         the driver's face is gone: the target holds the last pose

`draw_status(frame, text)` is the one overlay: a status line in the frame's top-left corner.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from directions.setup import SETUP_COMMAND

RUNNING, WAITING, STALE = "running", "waiting", "stale"
NO_FACE, FACE_TOO_SMALL, OFF, ERROR = "no_face", "face_too_small", "off", "error"
NETWORKS_MISSING, TRACKING_ONLY, DIRECTIONS_MISSING = "networks_missing", "tracking_only", "directions_missing"
CALIBRATING, DRIVING, DRIVER_LOST = "calibrating", "driving", "driver_lost"
STATES = (RUNNING, WAITING, STALE, NO_FACE, FACE_TOO_SMALL, OFF, ERROR, NETWORKS_MISSING, TRACKING_ONLY,
          DIRECTIONS_MISSING, CALIBRATING, DRIVING, DRIVER_LOST)
DIRECTIONS_COMMAND = SETUP_COMMAND  # the one command every door shows (stream.loader.DOWNLOAD_COMMAND is the same)


@dataclass
class FrameStatus:
    """The effect's state for one output frame."""

    state: str                          # one of STATES
    faces: int = 0                      # faces found in the frame
    edited_faces: int = 0               # faces with an edit pasted on this frame
    edit_age_ms: float | None = None    # age of the oldest edit pasted (capture of its frame -> now)
    message: str = ""                   # one line for people (see `describe`)

    def to_dict(self) -> dict:
        return asdict(self)


def describe(state: str, *, faces: int = 0, edit_age_ms: float | None = None, bound_ms: float | None = None,
             notice: str | None = None, error: str | None = None, progress: tuple | None = None) -> str:
    """The one-line text every door shows for a state (`progress` = (done, total) while calibrating; `notice`
    adds the reason a driver face was lost)."""
    if state == RUNNING:
        age = f"; edit {edit_age_ms:.0f} ms old" if edit_age_ms is not None else ""
        return f"editing {faces} face{'s' if faces != 1 else ''}{age}"
    if state == WAITING:
        return "face found; computing its first edit"
    if state == STALE:
        age = f" ({edit_age_ms / 1e3:.1f} s > {bound_ms / 1e3:.1f} s)" if edit_age_ms and bound_ms else ""
        return f"edit too old{age}: showing the camera until a fresh one arrives"
    if state == NO_FACE:
        return "no face in view"
    if state == FACE_TOO_SMALL:
        return "face too small to edit: come closer to the camera"
    if state == OFF:
        return "effect off"
    if state == DIRECTIONS_MISSING:
        return f"no directions installed: faces are reconstructed, not edited; run `{DIRECTIONS_COMMAND}`"
    if state in (NETWORKS_MISSING, TRACKING_ONLY):
        return notice or state.replace("_", " ")
    if state == ERROR:
        return f"this frame failed and passed through: {error or 'see the log'}"
    if state == CALIBRATING:
        done, total = progress or (0, 0)
        if total and done >= total:
            return "calibrating: learning the driver's motion"
        return f"calibrating: start with a neutral face, then move your head ({done}/{total})"
    if state == DRIVING:
        age = f"; pose {edit_age_ms:.0f} ms old" if edit_age_ms is not None else ""
        return f"driving the target{age}"
    if state == DRIVER_LOST:
        why = f" ({notice})" if notice else ""
        return f"driver face lost{why}: holding the last pose"
    raise ValueError(f"unknown state {state!r}; use one of {', '.join(STATES)}")


def draw_status(frame: np.ndarray, *lines: str) -> np.ndarray:
    """A copy of the frame with `lines` drawn white-on-black at the top-left, one under the other."""
    out = frame.copy()
    for i, text in enumerate(lines):
        put_text(out, text, (8, 20 + 18 * i))
    return out


def put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5) -> None:
    """Draw readable text in place (black outline, white fill)."""
    import cv2  # noqa: PLC0415

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
