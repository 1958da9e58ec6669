"""python -m stream file jobs on tiny random weights on disk: every frame edited in order, the frame count kept;
a clip without any face says so on stderr and exits 4 (documented), its output an unchanged copy."""
from __future__ import annotations

import numpy as np
import pytest

from stream.__main__ import EXIT_NO_FACE, main
from stream.clips import moving_face_clip
from stream.sources import VideoFileSource, write_y4m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_weights import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("tiny"))


def effect_args(tiny):
    return ["--encoder", str(tiny["encoder"]), "--directions-dir", str(tiny["directions_dir"]), "--device", "cpu"]


def test_file_job_edits_every_frame(tiny, tmp_path, capsys):
    clip = tmp_path / "face.y4m"
    frames = list(moving_face_clip(n_frames=6, size=(240, 320), face_height=150))
    write_y4m(frames, clip, fps=10)
    out = tmp_path / "edited.mp4"
    rc = main(["--input", str(clip), "--out", str(out), "--direction", "smile", "--alpha", "4", "-q",
               *effect_args(tiny)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "frames in 6" in captured.out and "edited 6" in captured.out and "errors 0" in captured.out
    with VideoFileSource(out) as video:
        edited = [f for f, _ in video]
    assert len(edited) == 6 and edited[0].shape == frames[0].shape
    assert np.abs(edited[0].astype(int) - frames[0].astype(int)).mean() > 0.5  # the face was edited


def test_file_job_report_measures_the_edit_against_its_source(tiny, tmp_path, capsys):
    import json

    clip = tmp_path / "face.y4m"
    write_y4m(list(moving_face_clip(n_frames=5, size=(240, 320), face_height=150)), clip, fps=10)
    report = tmp_path / "report.json"
    rc = main(["--input", str(clip), "--out", str(tmp_path / "e.mp4"), "--report", str(report), "--direction",
               "smile", "--alpha", "4", "-q", *effect_args(tiny)])
    assert rc == 0, capsys.readouterr().err
    got = json.loads(report.read_text())
    assert got["frames"] == 5 and got["faces"] == 5
    assert 0 < got["tl_id"] <= 1.5 and got["warp_error"] is not None
    assert main(["--camera", "0", "--preview", "--report", str(report)]) == 2   # not a file job: refused
    assert "--report measures a file job" in capsys.readouterr().err


def test_file_job_without_any_face_says_so_and_exits_4(tiny, tmp_path, capsys):
    clip = tmp_path / "empty.y4m"
    rng = np.random.default_rng(0)
    write_y4m([rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(4)], clip, fps=10)
    out = tmp_path / "out.mp4"
    rc = main(["--input", str(clip), "--out", str(out), "--direction", "smile", "-q", *effect_args(tiny)])
    captured = capsys.readouterr()
    assert rc == EXIT_NO_FACE == 4
    assert "no face found in any of the 4 frames" in captured.err
    assert "no face in view" in captured.err          # the state line, as it changed
    with VideoFileSource(out) as video:
        assert len([f for f, _ in video]) == 4


def test_unknown_direction_gets_did_you_mean(tiny, tmp_path, capsys, faces_dir):
    rc = main(["--image", str(faces_dir / "01.jpg"), "--frames", "1", "--out", str(tmp_path / "x.mp4"),
               "--direction", "smiel", *effect_args(tiny)])
    assert rc == 2
    assert "did you mean 'smile'" in capsys.readouterr().err
