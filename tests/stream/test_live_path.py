"""The live path across streams: batched == one at a time, per-stream directions, stale edits that follow the head
and respect the bound, a vanished stream freed from the queue, one stream's failure kept to that stream, fairness.

Tiny random networks (`tiny_weights.build_tiny_nets`) for the pixel comparisons; the network-free `TintEditor`
(stream.demo) where only the scheduling matters. Landmarks are real (MediaPipe) on a real face photo that moves.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from multi_stream import STREAMS, play_streams
from stream.clips import moving_face_clip
from stream.controls import Controls
from stream.demo import TintEditor
from stream.effect import Effect, EffectConfig
from stream.serving.local import BatchingBackend, InlineBackend


@pytest.fixture(scope="module")
def clip():
    return list(moving_face_clip(n_frames=4, size=(240, 320), face_height=150))


@pytest.mark.parametrize("precision,max_levels,mean_levels", [("fp32", 1, 0.01), ("bf16", 8, 0.05)])
def test_batched_gives_the_same_pixels_as_one_at_a_time(nets, clip, precision, max_levels, mean_levels):
    """Tolerance: batching changes only rounding in the convolutions (other kernel blockings per batch size): at
    most 1 grey level anywhere in fp32; in bf16 (the CPU's auto precision for the generator; 8-bit mantissa) at
    most 8 levels (3 % of the range: the engine's bf16 bound, engine.runtime.Precision) and a mean under 0.05."""
    G, E, deltas = nets
    config = EffectConfig(device="cpu", gather_ms=200.0, max_batch=8, smoothing=False, precision=precision)
    alone = Effect(config, encoder=E, directions=deltas, batching=False)
    together = Effect(config, encoder=E, directions=deltas, batching=True)
    try:
        ref = play_streams(alone, clip, concurrent=False, barrier_s=30, join_s=120)
        got = play_streams(together, clip, concurrent=True, barrier_s=30, join_s=120)
        stats = together.stats()
    finally:
        together.close()
    assert stats["mean_batch"] > 1.5, stats                 # the streams' faces really shared passes
    for name in STREAMS:
        for r, g, frame in zip(ref[name], got[name], clip):
            diff = np.abs(r.astype(int) - g.astype(int))
            assert diff.max() <= max_levels and diff.mean() < mean_levels, (name, diff.max(), diff.mean())
            assert np.abs(g.astype(int) - frame.astype(int)).mean() > 0.05  # the face was edited
    # each stream got its own directions: the three streams' outputs differ from each other
    a, b, c = (got[n][-1].astype(int) for n in STREAMS)
    assert np.abs(a - b).max() > 10 and np.abs(a - c).max() > 10 and np.abs(b - c).max() > 10


class HeldBackend:
    """A serving stand-in whose edits complete only when the test says (an editor far slower than the camera)."""

    def __init__(self, editor):
        self.editor, self.info, self.waiting = editor, editor.info, []

    def submit(self, stream_id, jobs):
        future = Future()
        self.waiting.append((future, list(jobs)))
        return future

    def finish_all(self):
        for future, jobs in self.waiting:
            future.set_result(self.editor.edit(jobs))
        self.waiting = []

    def cancel(self, stream_id):
        pass


def test_stale_edit_follows_the_head_and_never_exceeds_the_bound():
    """Editor 10x slower than a 30 fps camera: edits arrive every 10th frame; between them the newest edit is
    re-pasted on each frame's own alignment (it moves with the head); past the bound the frame passes through."""
    frames = list(moving_face_clip(n_frames=40, size=(240, 320), face_height=140, amplitude=1.5))
    backend = HeldBackend(TintEditor(crop_size=256))
    clock = {"t": 0.0}
    effect = Effect(EffectConfig(device="cpu", staleness_ms=500.0, smoothing=False), backend=backend)
    session = effect.new_session(controls=Controls(directions={"smile": 5.0}), clock=lambda: clock["t"])
    ages, followed = [], 0
    for i, frame in enumerate(frames):
        clock["t"] = i / 30.0
        if i % 10 == 9 and i < 30:
            backend.finish_all()            # the slow editor delivers; after frame 29 it stalls for good
        out = session.process(frame)
        st = out.status
        if st.edited_faces:
            ages.append(st.edit_age_ms)
            made_from = frames[int(round(clock["t"] * 30 - st.edit_age_ms * 30 / 1e3))]
            x_edit, x_now, x_then = edit_x(out.frame, frame), face_x(frame), face_x(made_from)
            if abs(x_now - x_then) > 6:     # the head moved since the edit's frame: the edit went with it
                assert abs(x_edit - x_now) < abs(x_edit - x_then), (i, x_edit, x_now, x_then)
                followed += 1
        elif st.state == "stale":
            assert out.frame is frame        # past the bound: the camera frame, untouched
    stats = session.stats()
    session.close()
    assert ages and max(ages) <= 500.0, ages
    assert len(ages) >= 15 and followed >= 5        # most frames carried a re-pasted edit, and it moved
    assert stats["stale"] > 0 and stats["edits"] == 3   # the bound cut in once the editor stalled


def edit_x(out, frame) -> float:
    """x of the centroid of the pixels the edit changed."""
    changed = np.abs(out.astype(int) - frame.astype(int)).max(axis=2) > 20
    xs = np.nonzero(changed)[1]
    assert xs.size > 50, "no edit visible"
    return float(xs.mean())


def face_x(frame) -> float:
    """x of the face photo in a moving_face_clip frame: its pixels differ from the blurred background's grey."""
    background = next(moving_face_clip(n_frames=1, size=frame.shape[:2], face_height=1))
    return float(np.nonzero(np.abs(frame.astype(int) - background.astype(int)).max(axis=2) > 0)[1].mean())


class FailingEditor(TintEditor):
    """Raises when a job's coefficients contain the poison value (one stream's face breaks every pass it is in)."""

    POISON = 4.25

    def edit(self, jobs):
        if any(np.any(np.isclose(j.coefficients, self.POISON)) for j in jobs):
            raise RuntimeError("this face breaks the network")
        return super().edit(jobs)


def test_a_failing_stream_fails_only_its_own_frames(clip):
    editor = FailingEditor(delay_ms=20.0)
    backend = BatchingBackend(editor, gather_ms=100.0, max_batch=8)
    effect = Effect(EffectConfig(device="cpu"), backend=backend)
    good = effect.new_session(controls=Controls(directions={"smile": 2.0}))
    bad = effect.new_session(controls=Controls(directions={"smile": FailingEditor.POISON}))
    results = {}

    def play(name, session):
        results[name] = [session.process(f, wait=True) for f in clip]

    threads = [threading.Thread(target=play, args=x) for x in (("good", good), ("bad", bad))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    backend.close()
    assert all(o.status.state == "running" for o in results["good"])
    assert all(o.status.edited_faces == 0 for o in results["bad"])        # its frames passed through
    assert good.errors.total == 0 and bad.errors.total == len(clip)
    assert "this face breaks the network" in bad.errors.last


def test_a_closed_stream_leaves_the_queue_and_frees_its_faces(clip):
    gate = threading.Event()

    class GatedEditor(TintEditor):
        def edit(self, jobs):
            gate.wait(10)
            return super().edit(jobs)

    editor = GatedEditor()
    backend = BatchingBackend(editor, gather_ms=0.0, max_batch=1)
    effect = Effect(EffectConfig(device="cpu"), backend=backend)
    first, leaving = effect.new_session(stream_id="first"), effect.new_session(stream_id="leaving")
    first.process(clip[0])               # its request occupies the (blocked) editor
    time.sleep(0.1)
    leaving.process(clip[0])             # waits in the queue behind it
    assert backend.pending() == 1 and leaving.faces
    leaving.close()                      # the client vanished
    assert backend.pending() == 0 and backend.stats()["cancelled"] == 1
    assert leaving.tracker is None       # tracker, tracks, memories and cached edits are gone
    gate.set()
    deadline = time.monotonic() + 10
    while backend.stats()["batches"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    backend.close()
    assert backend.stats()["faces"] == 1  # only the first stream's face was ever edited
    first.close()


def test_fair_order_one_request_per_stream_per_pass():
    editor = TintEditor()
    backend = BatchingBackend(editor, gather_ms=50.0, max_batch=2)
    job = lambda: [type("J", (), {})()]  # noqa: E731 -- the batcher only counts jobs
    seen = []
    editor.edit = lambda jobs: (seen.append(len(jobs)), [None] * len(jobs))[1]
    futures = [backend.submit("greedy", job()) for _ in range(3)] + [backend.submit("quiet", job())]
    for f in futures:
        f.result(timeout=10)
    backend.close()
    # the greedy stream's three requests never take the quiet one's place: its 1st and the quiet one share pass 1
    assert seen[0] == 2 and sum(seen) == 4


def test_inline_backend_reports_through_the_future():
    backend = InlineBackend(FailingEditor())
    from stream.editor import FaceJob

    job = FaceJob(np.zeros((256, 256, 3), np.uint8), np.array([FailingEditor.POISON, 0, 0, 0, 0], np.float32))
    future = backend.submit("x", [job])
    with pytest.raises(RuntimeError, match="breaks the network"):
        future.result()
    assert backend.stats()["errors"] == 1


def test_padding_to_a_bucket_leaves_each_face_its_own_edit(nets):
    """On CUDA a pass of 3 faces runs as bucket 4 (the 4th row repeats the first); on CPU the same padding is forced
    here: each face's edit, reconstruction and memory are those of the unpadded pass (float rounding only)."""
    from stream.editor import FaceJob, bucket_size

    G, E, deltas = nets
    editor = Effect(EffectConfig(device="cpu"), encoder=E, directions=deltas).editor
    rng = np.random.default_rng(0)
    k = len(editor.names)
    jobs = [FaceJob(rng.integers(0, 255, (editor.crop_size,) * 2 + (3,), dtype=np.uint8),
                    rng.normal(0, 2, k).astype(np.float32)) for _ in range(3)]
    plain = editor.edit(jobs)
    editor._graphs = True               # what CUDA graphs do: pad the batch to the bucket size
    assert bucket_size(3) == 4 and editor._stack_jobs(jobs)[0].shape[0] == 4
    padded = editor.edit(jobs)
    assert len(padded) == 3
    for a, b in zip(plain, padded):
        assert np.abs(a.edit.astype(int) - b.edit.astype(int)).max() <= 1
        assert np.abs(a.base.astype(int) - b.base.astype(int)).max() <= 1
        assert np.allclose(a.memory.ws.numpy(), b.memory.ws.numpy(), atol=1e-4)


def test_edit_rate_counts_faces_over_the_recent_window():
    """`stream.stats.EditRate` (every backend's edits_per_s): faces after the window's first pass per second since
    it; passes older than the window are forgotten, also when nothing new arrives."""
    from stream.stats import EditRate

    rate = EditRate(window_s=5.0)
    assert rate.per_s(now=0.0) == 0.0
    for t, faces in ((0.0, 3), (1.0, 2), (2.0, 4)):
        rate.add(faces, now=t)
    assert rate.per_s(now=2.0) == pytest.approx((2 + 4) / 2.0)
    rate.add(1, now=6.5)                                   # the pass at 0 s and 1 s leave the window
    assert rate.per_s(now=6.5) == pytest.approx(1 / 4.5)
    assert rate.per_s(now=20.0) == 0.0                     # idle past the window: no rate left
