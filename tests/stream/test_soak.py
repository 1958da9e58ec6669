"""The soak script's bookkeeping on a short real-time run (figures come from `python -m stream.soak --seconds 60`)."""
from stream.soak import soak


def test_short_soak_accounts_for_every_frame_and_drops_when_the_engine_is_slow():
    result = soak(seconds=1.5, engine_ms=100.0, fps=30.0, every=0.5)
    assert result["accounted"] and result["errors"] == 0
    assert result["frames_in"] >= 30
    assert result["dropped"] > result["processed"] > 0   # the engine is 3x slower than the camera
    assert len(result["rows"]) >= 2 and all(r["rss_mb"] > 0 for r in result["rows"])
