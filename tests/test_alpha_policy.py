"""Issue 11, problem 8: one α policy. Every door that takes a strength α refuses the same values: non-finite, or
|α| > directions.alpha.MAX_ALPHA; every door accepts ±MAX_ALPHA itself.

Doors walked: `python -m stream --alpha`, `python -m directions apply --alpha`, `python -m directions eval --alphas`,
`Controls.from_dict` (the page's data channel) and the Gradio app's `make_controls` (Effect.parse_controls).
"""
from __future__ import annotations

import math

import pytest

from directions.alpha import MAX_ALPHA

BOUND_ERROR = f"must be a finite number in [{-MAX_ALPHA:g}, {MAX_ALPHA:g}]"
ACCEPTED = [MAX_ALPHA, -MAX_ALPHA, 0.0, 3.0]
REFUSED = [math.nextafter(MAX_ALPHA, math.inf), -math.nextafter(MAX_ALPHA, math.inf), 1e9, math.inf, math.nan]


def _stream_cli(alpha: float, tmp_path, capsys) -> str | None:
    """The α error of `python -m stream`, or None when α passed (it then fails later, on the missing image)."""
    from stream.__main__ import main

    rc = main(["--image", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o.mp4"), "--direction", "smile",
               "--alpha", repr(alpha)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    return err if BOUND_ERROR in err else None


def _directions_apply(alpha: float, tmp_path, capsys) -> str | None:
    """The α error of `python -m directions apply`, or None (it then fails on the direction that is not there)."""
    from directions.__main__ import main

    rc = main(["apply", "--latent", str(tmp_path / "face.npy"), "--direction", "smile", "--dir", str(tmp_path),
               "--out", str(tmp_path / "o.mp4"), "--alpha", repr(alpha), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    if BOUND_ERROR in err:
        return err
    assert "direction 'smile'" in err and "not found" in err, err
    return None


def _directions_eval(alpha: float, tmp_path, capsys) -> str | None:
    """The α error of `python -m directions eval`, or None (it then fails on the missing generator file)."""
    from directions.__main__ import main

    rc = main(["eval", "--direction", "smile", "--generator", str(tmp_path / "no-such-generator.pt"),
               "--alphas", "0", repr(alpha), "--out", str(tmp_path / "eval"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    if BOUND_ERROR in err:
        return err
    assert "no-such-generator.pt" in err, err
    return None


def _page_controls(alpha: float, tmp_path, capsys) -> str | None:
    from stream.controls import Controls

    try:
        Controls.from_dict({"directions": {"smile": alpha}}, available=["smile"])
    except ValueError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def demo_effect():
    from stream.effect import Effect, EffectConfig

    effect = Effect.open(EffectConfig(demo=True, device="cpu"), batching=False)
    yield effect
    effect.close()


DOORS = {"python -m stream": _stream_cli, "directions apply": _directions_apply, "directions eval": _directions_eval,
         "page (Controls.from_dict)": _page_controls}


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_door_has_the_same_alpha_bound(door, tmp_path, capsys, home):
    check = DOORS[door]
    for alpha in ACCEPTED:
        assert check(alpha, tmp_path, capsys) is None, f"{door} refused alpha {alpha}"
    for alpha in REFUSED:
        err = check(alpha, tmp_path, capsys)
        assert err is not None and BOUND_ERROR in err, f"{door} accepted alpha {alpha}"


def test_gradio_controls_have_the_same_alpha_bound(demo_effect):
    from web.gradio_edit import make_controls

    for alpha in ACCEPTED:
        assert make_controls(demo_effect, "smile", alpha).directions == {"smile": alpha}
    for alpha in REFUSED:
        with pytest.raises(ValueError, match=BOUND_ERROR.replace("[", r"\[").replace("]", r"\]")):
            make_controls(demo_effect, "smile", alpha)


def test_one_constant():
    from stream import controls
    from web import hints

    assert controls.MAX_ALPHA is MAX_ALPHA and hints.MAX_HINT_ALPHA == MAX_ALPHA
