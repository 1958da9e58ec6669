"""The soak script's bookkeeping on a short real-time run (figures come from `python -m stream.soak --seconds 60`)."""
from stream.soak import soak


def test_short_soak_keeps_the_camera_rate_while_a_slow_editor_refreshes_edits():
    result = soak(seconds=3.0, engine_ms=300.0, fps=30.0, every=1.0, staleness_ms=2000.0)
    assert result["accounted"] and result["errors"] == 0
    assert result["frames_in"] >= 60
    # the walk (tracking + paste) keeps up: almost every frame comes out, far more than the editor's passes
    assert result["processed"] >= 0.8 * result["frames_in"]
    assert 0 < result["edits"] < result["processed"] / 3
    assert result["edited_frames"] > result["edits"]            # edits are re-pasted on later frames
    assert 0 < result["max_edit_age_ms"] <= 2000.0               # never older than the bound
    assert len(result["rows"]) >= 2 and all(r["rss_mb"] > 0 for r in result["rows"])
