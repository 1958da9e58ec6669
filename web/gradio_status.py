"""The Gradio app's words: what the effect, a photo, a clip or the webcam is doing, as the lines shown beside each
tab's output. Pure functions of `EditorInfo` / `FrameStatus` lists / `edit_clip` results (no Gradio here).

Frame states come from `stream.status` (its `describe` is the one text of a frame's state); these functions only
add what a file-like door knows on top of it (which photo, how many frames, damage, the working size).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from stream import status as st

NO_EDIT_STATES = (st.NETWORKS_MISSING, st.TRACKING_ONLY)


def effect_lines(info) -> list[str]:
    """What holds for every tab, from `effect.info` (EditorInfo): networks missing (with the command that fetches
    them), demo, no direction installed (with `stream.status.DIRECTIONS_COMMAND`), direction files not used (which,
    why). Empty when the effect is ready with its directions."""
    lines = []
    if info.notice:
        command = getattr(info, "command", None)
        notice = file_names_only(info.notice)   # server folders are nobody's business in a browser
        lines.append(notice if not command or command in notice else f"{notice} Fix: `{command}`")
    if info.available and not info.direction_names:
        lines.append(st.describe(st.DIRECTIONS_MISSING))
    for file, reason in getattr(info, "skipped_directions", None) or []:
        lines.append(f"direction file '{Path(str(file)).name}' not used: {file_names_only(str(reason))}")
    return lines


def file_names_only(text: str) -> str:
    """`text` with every absolute path cut to its file name (uploads live in temporary folders: never shown)."""
    return re.sub(r"(?<![\w.])/(?:[^/\s'\"`]+/)+([^/\s'\"`]+)", r"\1", text)


def markdown(lines: Iterable[str]) -> str:
    """Lines as a Markdown list (one bullet each), or "" for none."""
    return "\n".join(f"- {line}" for line in lines if line)


def result_status(info, lines: Sequence[str]) -> str:
    """A tab's status after a run: the effect's lines that the result's `lines` do not already say, then them."""
    said = "\n".join(lines)
    return markdown([line for line in effect_lines(info) if line not in said] + list(lines))


def tab_status(info, hint: str) -> str:
    """A tab's status before anything ran: the effect's lines, then `hint` (what to do first)."""
    return markdown(effect_lines(info) + [hint])


def photo_line(name: str, statuses: Sequence, resized: tuple | None = None) -> str:
    """One line for one photo's micromotion, from the FrameStatus of each of its frames (t = 0 -> 1).

    resized: ((width, height) uploaded, (width, height) edited) when the photo was scaled to the working size.
    """
    counts = Counter(s.state for s in statuses)
    n = len(statuses)
    main, _ = counts.most_common(1)[0] if counts else (st.NO_FACE, 0)
    first = next((s for s in statuses if s.state == main), None)
    if main == st.RUNNING:
        faces = max((s.edited_faces for s in statuses), default=0)
        text = f"'{name}': {faces} face{'s' if faces != 1 else ''} edited in {counts[main]} of {n} frames"
    elif main == st.NO_FACE:
        text = f"'{name}': {st.describe(main)}; the photo is shown unchanged"
    elif main == st.FACE_TOO_SMALL:
        text = f"'{name}': face too small to edit: upload a photo where the face is larger"
    elif main in NO_EDIT_STATES:
        text = f"'{name}': face tracked (outline drawn), not edited: {first.message}"
    else:                                   # directions missing, error: the state's own words
        text = f"'{name}': {first.message}"
    others = {state: k for state, k in counts.items() if state != main}
    if others:
        text += "; " + ", ".join(f"{_state_words(state)} in {k} frame{'s' if k != 1 else ''}"
                                 for state, k in sorted(others.items()))
    if resized:
        (w0, h0), (w1, h1) = resized
        text += f"; edited at {w1}×{h1} (uploaded {w0}×{h0}, larger than the working size)"
    return text


def clip_lines(result: dict) -> list[str]:
    """What happened to a clip (`edit_clip`'s result): frames, rate, audio, time, then faces per state, then the
    frames lost to damage."""
    frames = result["frames"]
    lines = [f"{frames} frames at {result['fps']:.2f} fps, audio {'kept' if result['audio'] else 'none in the input'}, "
             f"{result['seconds']} s"]
    states = dict(result.get("states") or {})
    for state in (st.RUNNING, st.DIRECTIONS_MISSING, st.NO_FACE, st.FACE_TOO_SMALL, st.NETWORKS_MISSING,
                  st.TRACKING_ONLY, st.ERROR, st.OFF):
        k = states.get(state, 0)
        if not k:
            continue
        line = f"{_state_words(state)} in {k} of {frames} frames"
        if state in (st.NO_FACE, st.FACE_TOO_SMALL, st.ERROR):
            line += " (they pass through unchanged)"
        elif state == st.DIRECTIONS_MISSING:
            line += f": {st.describe(state)}"
        lines.append(line)
    if result.get("damage"):
        lines.append(f"damaged input: {result['damage']}")
    return lines


def webcam_line(status, info=None) -> str:
    """The webcam tab's status line for the last frame's `FrameStatus` (None: no frame yet): the live state in
    `stream.status.describe`'s words, with the edit's age; plus the effect's notice when it cannot edit at all
    (`info`: EditorInfo) and the frame's message does not already say it."""
    if status is None:
        text = "waiting for the camera"
    else:
        age = "" if status.edit_age_ms is None or "ms old" in status.message or status.state == st.STALE \
            else f" (edit {status.edit_age_ms:.0f} ms old)"
        text = f"**{status.state.replace('_', ' ')}**: {status.message}{age}"
    if info is not None and not info.available and info.notice and (status is None or info.notice not in text):
        text += f" -- {info.notice}"
    return text


def _state_words(state: str) -> str:
    return {st.NO_FACE: "no face in view", st.FACE_TOO_SMALL: "face too small to edit", st.ERROR: "failed",
            st.RUNNING: "faces edited", st.WAITING: "not yet edited", st.STALE: "edit too old",
            st.DIRECTIONS_MISSING: "faces reconstructed, not edited,", st.OFF: "effect off",
            st.NETWORKS_MISSING: "tracked only (no networks)",
            st.TRACKING_ONLY: "tracked only"}.get(state, state.replace("_", " "))


# ------------------------------------------------------------------------------------------------ reenactment


def reenact_tab_status(info, hint: str) -> str:
    """The reenactment tabs' status before anything ran: why the effect cannot reenact (networks missing with the
    command, tracking only, demo) -- directions do not matter here -- then `hint`."""
    from web.gradio_reenact import unavailable_line

    return markdown([unavailable_line(info), hint])


def reenact_lines(result: dict) -> list[str]:
    """What a reenacted clip is (`web.gradio_reenact.reenact_clip`'s result): frames, rate, audio, time; the options
    and fit; the driver frames without a face (held); the target's working size; the frame limit reached."""
    m = result["metadata"]
    o, sub = m["options"], m["subspace"]
    driver, target = result["names"]
    frames = result["frames"]
    motion = "raw offsets (method none)" if sub["rank"] is None else f"{sub['method']} rank {sub['rank']}"
    lines = [f"'{target}' driven by '{driver}': {frames} frames at {result['fps']:.2f} fps (the driver's), audio "
             f"{'kept' if result['audio'] else 'none in the driver'}, {sum(result['seconds'].values()):.1f} s",
             f"motion: {motion}, W+ layers {m['layers'][0]}:{m['layers'][1]}, β {o['beta']:g}, reference frame "
             f"{m['reference_frame']}, smoothing {o['smoothing']:g} frames, paste {result['paste_mode']}"]
    held = result["held"]
    lines.append(f"no face in {held} of {frames} driver frames: the last pose was held there" if held
                 else "a face in every driver frame")
    if result.get("resized"):
        (w0, h0), (w1, h1) = result["resized"]
        lines.append(f"target edited at {w1}×{h1} (uploaded {w0}×{h0}, larger than the working size)")
    if result.get("cut"):
        lines.append(f"driver read up to the limit of {frames} frames; later frames were not used")
    return lines


def reenact_live_line(status, info=None, problem: str | None = None, name: str | None = None) -> str:
    """The live reenactment's status line: why it cannot start (`problem`), else the last frame's state --
    calibrating (n/N), driving (the pose's age), driver lost (holding the last pose), no face, ... -- in
    `stream.status.describe`'s words, with the effect's notice when it cannot reenact at all (`info`)."""
    if problem:
        return f"**not started**: {problem}"
    if status is None:
        text = f"waiting for the camera to drive '{name}'" if name else "waiting for the camera"
    else:
        words = status.state.replace("_", " ")
        message = status.message.removeprefix(f"{words}: ")   # "calibrating: ..." is said once
        text = f"**{words}**: {message}"
    if info is not None:
        from web.gradio_reenact import unavailable_line

        line = unavailable_line(info)
        if line and line not in text and (status is None or info.notice not in text):
            text += f" -- {line}"
    return text
