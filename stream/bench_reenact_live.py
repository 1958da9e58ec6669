"""python -m stream.bench_reenact_live: what reenactment costs on the live path, against a plain edit.

A simulated 30 fps camera (the shared face photo moving, `stream.clips`, its landmarks replayed) is pushed in real
time through the FrameDriver into (a) a plain Session editing one direction and (b) a ReenactSession driving a
target photo (the same face photo, still: self-reenactment, for timing only); one editor behind the batching
backend, random weights of the chosen configuration (speed is real, faces are not). Then the motion model's fit and
per-latent step at the real W+ size (18 × 512) on synthetic latents.

    python -m stream.bench_reenact_live [--config tiny|small|full] [--seconds S] [--device cpu|cuda] [--json FILE]

("tiny": the tests' 64 px networks, w_dim 32 -- the wiring's own cost, where a CPU cannot run the real sizes.)

Per live run: output_fps (frames out per second), edits_per_s (editor passes per second), age_ms_p50 / p90 (plain:
the pasted edit's age; reenact: the shown pose's age, capture of the driver frame whose latent is rendered -> out),
to_driving_s (reenact: camera start -> first driven frame: target inversion + calibration + fit). Fit rows: seconds
of `fit_driver` on T calibration latents and ms per `Reenactor.step`.
"""
from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import threading
import time
from typing import Sequence

import numpy as np

from engine.bench import report

FPS = 30.0


def live_run(kind: str, E, deltas, frames: list, factory, target, target_lm, seconds: float, device: str,
             calibration: int, calibration_s: float) -> dict:
    """One simulated camera for `seconds` into a plain ("edit") or a reenactment ("reenact") session."""
    from directions.reenact import ReenactOptions  # noqa: PLC0415
    from stream.controls import Controls  # noqa: PLC0415
    from stream.driver import FrameDriver  # noqa: PLC0415
    from stream.effect import Effect, EffectConfig  # noqa: PLC0415

    effect = Effect(EffectConfig(device=device, max_faces=1), encoder=copy.deepcopy(E), directions=deltas,
                    batching=True, landmarker_factory=factory)
    if kind == "edit":
        session = effect.new_session(controls=Controls(directions={next(iter(deltas)): 3.0}))
    else:
        session = effect.new_reenact_session(target, ReenactOptions(rank=4), calibration=calibration,
                                             calibration_s=calibration_s, target_landmarker=_Fixed(target_lm))
    ages, first = [], {}
    t0 = time.monotonic()

    def on_output(_frame, info):
        s = info["status"]
        if s is not None and s.edit_age_ms is not None and s.state in ("running", "driving"):
            ages.append(s.edit_age_ms)
            first.setdefault("t", time.monotonic() - t0)

    driver = FrameDriver(session, on_output=on_output).start()
    stop = threading.Event()
    i = 0
    while time.monotonic() - t0 < seconds:
        driver.push(frames[i % len(frames)])
        i += 1
        time.sleep(max(0.0, t0 + i / FPS - time.monotonic()))
    stop.set()
    driver.stop(drain=True)
    stats = driver.stats()
    session.close()
    effect.close()
    elapsed = time.monotonic() - t0
    q = sorted(ages)
    return {"kind": kind, "output_fps": stats["processed"] / elapsed, "edits_per_s": stats["edits"] / elapsed,
            "age_ms_p50": statistics.median(q) if q else None, "age_ms_p90": q[int(0.9 * (len(q) - 1))] if q else None,
            "to_driving_s": first.get("t") if kind == "reenact" else None, "errors": stats["errors"],
            "state": stats["state"]}


def build_tiny():
    """(G, E, {name: delta}): 64 px StyleGAN2 (w_dim 32) and a narrow ReStyle-pSp with G as decoder, random."""
    import torch  # noqa: PLC0415

    from engine.encoders import Encoder, build_network  # noqa: PLC0415
    from engine.stylegan2 import Generator  # noqa: PLC0415

    torch.manual_seed(0)
    G = Generator(resolution=64, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32)
    net = build_network("restyle_psp", num_ws=G.num_ws, w_dim=G.w_dim, widths=(8, 12, 16, 24), units=(1, 1, 1, 1),
                        input_size=64)
    E = Encoder(net, "restyle_psp", G.estimate_latent_avg(256), decoder=G, n_iters=2).eval()
    return G, E, {"d0": torch.randn(G.num_ws, G.w_dim) * 0.5}


class _Fixed:
    """A landmarker that knows one photo's landmarks (no MediaPipe needed)."""

    def __init__(self, landmarks):
        self.landmarks = landmarks

    def detect(self, _frame):
        return [self.landmarks.copy()]

    def close(self):
        pass


def fit_rows(sizes: Sequence[int], num_ws: int = 18, w_dim: int = 512) -> list:
    """fit_driver seconds and Reenactor.step ms on T synthetic latents (identity + rank-3 motion + noise)."""
    import torch  # noqa: PLC0415

    from directions.reenact import ReenactOptions, fit_driver  # noqa: PLC0415

    rows = []
    gen = torch.Generator().manual_seed(0)
    for T in sizes:
        X = (torch.randn(num_ws, w_dim, generator=gen)
             + (torch.randn(T, 3, generator=gen) @ torch.randn(3, num_ws * w_dim, generator=gen) * 0.1)
             .reshape(T, num_ws, w_dim) + 0.01 * torch.randn(T, num_ws, w_dim, generator=gen))
        for method in ("rpca", "pca"):
            options = ReenactOptions(rank=4, method=method, smoothing=1.0)
            t0 = time.perf_counter()
            fit = fit_driver(X, options)
            fit_s = time.perf_counter() - t0
            r = fit.reenactor(X[0], options)
            t0 = time.perf_counter()
            for i in range(20):
                r.step(X[i % T])
            rows.append({"latents": T, "method": method, "fit_s": fit_s,
                         "step_ms": (time.perf_counter() - t0) / 20 * 1e3})
    return rows


def format_table(result: dict) -> str:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [f"live path ({result['config']} weights, {result['device']}, {result['seconds']:g} s per run, "
             f"calibration {result['calibration']} latents / {result['calibration_s']:g} s)",
             f"{'session':<10}{'out fps':>9}{'edits/s':>9}{'age p50 ms':>12}{'age p90 ms':>12}{'to driving s':>14}"]
    for r in result["live"]:
        lines.append(f"{r['kind']:<10}{r['output_fps']:>9.1f}{r['edits_per_s']:>9.1f}{num(r['age_ms_p50'], '.0f'):>12}"
                     f"{num(r['age_ms_p90'], '.0f'):>12}{num(r['to_driving_s'], '.1f'):>14}")
    lines += ["", f"motion model at W+ 18 x 512 (rank 4, smoothing 1)",
              f"{'latents':>8}{'method':>8}{'fit s':>9}{'step ms':>9}"]
    lines += [f"{r['latents']:>8}{r['method']:>8}{r['fit_s']:>9.2f}{r['step_ms']:>9.2f}" for r in result["fit"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.bench_reenact_live", description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=("tiny", "small", "full"), default="small",
                   help="random weights' size (default small; tiny: 64 px, w_dim 32)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each live run (default 8)")
    p.add_argument("--calibration", type=int, default=20, help="reenact: calibration latents (default 20)")
    p.add_argument("--calibration-seconds", type=float, default=1.0, help="reenact: spread over (default 1 s)")
    p.add_argument("--fit-sizes", default="20,40,80", help="calibration sizes of the fit rows (default 20,40,80)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from engine.runtime import resolve_device  # noqa: PLC0415
    from stream.bench_streams import build  # noqa: PLC0415
    from stream.clips import LANDMARK_HEIGHT, clip_with_landmarks, load_face, photo_landmarks  # noqa: PLC0415

    device = str(resolve_device(args.device))
    G, E, deltas = build_tiny() if args.config == "tiny" else build(args.config, directions=1)
    frames, factory = clip_with_landmarks(int(FPS * 4), (480, 640), 288)
    target, target_lm = load_face(None, LANDMARK_HEIGHT), photo_landmarks(None, LANDMARK_HEIGHT)
    live = [live_run(kind, E, deltas, frames, factory, target, target_lm, args.seconds, device, args.calibration,
                     args.calibration_seconds) for kind in ("edit", "reenact")]
    sizes = [int(s) for s in args.fit_sizes.split(",") if s]
    result = {"config": args.config, "device": device, "seconds": args.seconds, "calibration": args.calibration,
              "calibration_s": args.calibration_seconds, "live": live, "fit": fit_rows(sizes)}
    report(format_table(result), result, args.json)
    return 0 if all(r["errors"] == 0 for r in live) else 1


if __name__ == "__main__":
    sys.exit(main())
