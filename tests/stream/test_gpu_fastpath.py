"""The CUDA fast path (fp16 + CUDA graphs + pinned copies) against eager fp32, on the same frame.

Skipped without CUDA. Stated tolerances (uint8 levels of the output frame, inside the face mask; tiny random
networks, whose activations are less tame than trained ones):
* fp16 + graphs vs fp32 eager: mean |diff| <= 2.0, 99th percentile <= 12;
* fp16 + graphs vs fp16 eager: mean |diff| <= 0.5 (graph replay computes what eager computes);
* latents: relative error of w (fp16 vs fp32) <= 2e-2.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


class _Replay:
    def __init__(self, faces):
        self.faces = faces

    def detect(self, frame):
        return [f.copy() for f in self.faces]

    def close(self):
        pass


@pytest.fixture(scope="module")
def setup(faces_dir):
    import cv2

    from engine.encoders import Encoder, build_network
    from engine.stylegan2 import Generator
    from stream.face.landmarks import FaceMeshLandmarker

    torch.manual_seed(0)
    G = Generator(resolution=256, w_dim=128, z_dim=128, n_mapping=2, channel_multiplier=1, channel_max=128)
    net = build_network("restyle_psp", num_ws=G.num_ws, w_dim=G.w_dim, widths=(16, 32, 64, 128),
                        units=(1, 2, 2, 1), input_size=256)
    E = Encoder(net, "restyle_psp", G.estimate_latent_avg(1024), decoder=G).eval()
    delta = torch.randn(G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1)) * 0.3
    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (300, 300), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 100, np.uint8)
    frame[90:390, 170:470] = face
    with FaceMeshLandmarker(video_mode=False) as lm:
        (landmarks,) = lm.detect(frame)
    return E, {"smile": delta}, frame, landmarks


def _run(setup, precision, graphs, frames=3):
    from stream.effect import Controls, Effect, EffectConfig

    E, dirs, frame, landmarks = setup
    effect = Effect(EffectConfig(device="cuda", precision=precision, cuda_graphs=graphs, smoothing=False),
                    encoder=copy.deepcopy(E), directions=dirs, landmarker_factory=lambda: _Replay([landmarks]))
    state = effect.new_state()
    outs = [effect.process(frame, Controls(directions={"smile": 3.0}), state) for _ in range(frames)]
    (mem,) = state.memory.values()
    assert state.stats()["errors"] == 0
    return effect, outs, mem.ws.float().cpu()


def test_fp16_graphs_match_fp32_eager(setup):
    frame = setup[2]
    ref_effect, ref_outs, ref_ws = _run(setup, "fp32", False)
    fast_effect, fast_outs, fast_ws = _run(setup, "fp16", True)
    assert fast_effect._encode_runner.stats["replays"] >= 2  # captured once, replayed after
    assert fast_effect._synth_runners[True].stats["replays"] >= 2
    for ref, fast in zip(ref_outs, fast_outs):
        changed = lambda img: np.abs(img.astype(int) - frame.astype(int)).max(axis=2) > 0  # noqa: E731
        region = changed(ref) | changed(fast)  # where either output was pasted
        diff = np.abs(ref.astype(int) - fast.astype(int)).max(axis=2)[region]
        print(f"fp16+graphs vs fp32: mean {diff.mean():.3f}, p99 {np.percentile(diff, 99):.1f}, max {diff.max()}")
        assert diff.mean() <= 2.0 and np.percentile(diff, 99) <= 12
    rel = float((fast_ws - ref_ws).norm() / ref_ws.norm())
    print(f"latent relative error fp16 vs fp32: {rel:.2e}")
    assert rel <= 2e-2


def test_graph_replay_matches_eager_same_precision(setup):
    _, eager_outs, _ = _run(setup, "fp16", False)
    _, graph_outs, _ = _run(setup, "fp16", True)
    for a, b in zip(eager_outs, graph_outs):
        assert np.abs(a.astype(int) - b.astype(int)).mean() <= 0.5


def test_face_count_change_recaptures(setup):
    from stream.effect import Controls, Effect, EffectConfig

    E, dirs, frame, landmarks = setup
    wide = np.concatenate([frame, frame], axis=1)
    second = landmarks + np.array([frame.shape[1], 0], np.float32)
    replay = _Replay([landmarks])
    effect = Effect(EffectConfig(device="cuda", precision="fp16", smoothing=False), encoder=copy.deepcopy(E),
                    directions=dirs, landmarker_factory=lambda: replay)
    state = effect.new_state()
    c = Controls(directions={"smile": 3.0})
    for faces in ([landmarks], [landmarks, second], [landmarks]):
        replay.faces = faces
        for _ in range(2):
            effect.process(wide, c, state)
    assert effect._encode_runner.stats["captures"] == 2  # N=1 and N=2, the second N=1 is replayed
    assert state.stats()["errors"] == 0
