"""The editor as a Ray Serve deployment (`stream.serving.ray_backend`): the same pixels as the in-process editor,
memory carried across replicas bit-exactly, one stream's bad request kept to it, a killed replica costing only fresh
edits, and one clear error for a cluster that cannot be reached.

Fast checks run here (the wire format, the deployment's pass without Ray, flags, the unreachable address). The
`test_cluster_*` tests share ONE Ray head on 127.0.0.1 (no dashboard, no HTTP proxy) and run inside a namespace that
has only `lo` and is its own PID namespace (`tests/ray_support.py`; `test_in_loopback_namespace_with_a_local_ray`
starts it): every Ray process dies with it, whatever happens. Tiny random networks (`tiny_weights`).
"""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ray_support
from multi_stream import STREAMS, play_streams
from stream.controls import Controls
from stream.editor import FaceJob, FaceMemory
from stream.effect import Effect, EffectConfig

in_cluster = pytest.mark.skipif(not ray_support.inside(),
                                reason="runs in the loopback namespace (test_in_loopback_namespace_with_a_local_ray)")


@pytest.fixture(scope="module")
def clip():
    from stream.clips import moving_face_clip

    return list(moving_face_clip(n_frames=4, size=(240, 320), face_height=150))


# ---------------------------------------------------------------------------------------------------------------------
# without a cluster


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_memory_travels_bit_exactly_and_costs_its_bytes(dtype):
    import torch

    from stream.serving.wire import WireMemory, from_wire, to_wire

    gen = torch.Generator().manual_seed(0)
    mems = [FaceMemory(torch.randn(18, 512, generator=gen), torch.randn(3, 256, 256, generator=gen).to(
        getattr(torch, dtype))), None]
    wired = pickle.loads(pickle.dumps(to_wire(mems), protocol=5))     # what Ray does to it, in effect
    assert wired[1] is None and isinstance(wired[0], WireMemory)
    back = from_wire(wired, device="cpu", num_ws=18, w_dim=512, recon_shape=(3, 256, 256),
                     recon_dtype=getattr(torch, dtype))
    assert torch.equal(back[0].ws, mems[0].ws) and back[0].recon.dtype == mems[0].recon.dtype
    assert torch.equal(back[0].recon.view(torch.uint8), mems[0].recon.view(torch.uint8))   # every bit
    itemsize = 4 if dtype == "float32" else 2
    assert wired[0].nbytes == 18 * 512 * 4 + 3 * 256 * 256 * itemsize


def test_memory_of_another_network_starts_the_face_from_the_average():
    import torch

    from stream.serving.wire import from_wire, to_wire

    (wired,) = to_wire([FaceMemory(torch.zeros(14, 512), torch.zeros(3, 256, 256))])
    assert from_wire([wired], device="cpu", num_ws=18, w_dim=512, recon_shape=(3, 256, 256),
                     recon_dtype=torch.float32) == [None]


def test_replica_pass_equals_the_editor_over_frames(nets, clip):
    """The deployment's own pass (memory to host bytes and back between frames) without Ray: bit-identical to the
    in-process editor over 3 frames of 2 faces, so any difference through Ray is not the wire's."""
    from stream.loader import build_editor
    from stream.serving.ray_deploy import EditorDeployment

    G, E, deltas = nets
    config = EffectConfig(device="cpu")
    editor = build_editor(config, encoder=copy.deepcopy(E), directions=deltas)
    class DirectNetworks:       # SharedNetworks' surface without Ray's object store
        def build(self, cfg):
            return build_editor(cfg, encoder=copy.deepcopy(E), directions=deltas)

    replica = EditorDeployment.func_or_class(config, DirectNetworks())
    s = editor.info.crop_size
    crops = [np.ascontiguousarray(f[:s, :s]) for f in clip[:2]]
    coef = np.array([2.0, -1.0], np.float32)
    mem_local, mem_wire = [None, None], [None, None]
    for frame in range(3):
        local = editor.edit([FaceJob(c, coef * (frame + 1), m) for c, m in zip(crops, mem_local)])
        (remote,) = replica._edit_requests([[FaceJob(c, coef * (frame + 1), m) for c, m in zip(crops, mem_wire)]])
        for a, b in zip(local, remote):
            assert np.array_equal(a.edit, b.edit) and np.array_equal(a.base, b.base)
            assert b.timing["replica"] == "local" and b.timing["pass"] == frame + 1
        mem_local, mem_wire = [e.memory for e in local], [e.memory for e in remote]
    # reenactment's pass: a face rendered at a given latent (render_ws), the inverted latent (ws) in the reply
    render = local[0].ws + 0.5
    jobs = [FaceJob(crops[0], coef, mem_local[0], render_ws=render)]
    (local,) = editor.edit(jobs)
    (remote,) = replica._edit_requests([[FaceJob(crops[0], coef, mem_wire[0], render_ws=render)]])[0]
    assert remote.ws is not None and np.array_equal(local.ws, remote.ws)
    assert np.array_equal(local.edit, remote.edit) and np.array_equal(local.base, remote.base)
    replica._pool.shutdown()


def test_serving_flags_reach_the_config_and_bad_ones_are_one_line():
    import argparse

    from stream.options import add_effect_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_effect_arguments(p)
    config = config_from_args(p.parse_args(["--serve", "ray", "--ray-address", "ray://10.0.0.5:10001",
                                            "--replicas", "3", "--gpus-per-replica", "0.5", "--ray-app", "mm"]))
    assert (config.serve, config.ray_address, config.replicas, config.gpus_per_replica, config.ray_app) == \
        ("ray", "ray://10.0.0.5:10001", 3, 0.5, "mm")
    assert config.remote and not EffectConfig().remote and not EffectConfig(serve="ray", tracking_only=True).remote
    for bad in ({"replicas": 0}, {"gpus_per_replica": -1.0}, {"ray_app": "a#b"}, {"ray_address": " "}):
        with pytest.raises(ValueError) as info:
            EffectConfig(serve="ray", **bad)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("address", ["ray://127.0.0.1:1", "127.0.0.1:1", "ray://nohost"])
def test_unreachable_cluster_is_one_clear_error_naming_the_address(address):
    from stream.serving.ray_backend import RayUnavailable

    if ray_support.inside():
        pytest.skip("checked outside the namespace (no Ray running there)")
    t0 = time.monotonic()
    with pytest.raises(RayUnavailable) as info:
        Effect.open(EffectConfig(serve="ray", ray_address=address))
    assert address in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError) and time.monotonic() - t0 < 20


def test_a_door_exits_2_with_one_line_when_the_cluster_is_unreachable():
    if ray_support.inside():
        pytest.skip("checked outside the namespace")
    res = subprocess.run([sys.executable, "-m", "web", "--serve", "ray", "--ray-address", "ray://127.0.0.1:1",
                          "--port", "0"], cwd=ray_support.REPO, capture_output=True, text=True, timeout=120)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(errors) == 1 and "ray://127.0.0.1:1" in errors[0], res.stderr[-2000:]


def test_serve_config_file_is_valid_and_builds_the_editor_application():
    """deploy/serve_gpu.yaml: Serve's own schema accepts it, its args are EffectConfig fields, its user_config is
    what replicas apply live, and a replica accepts enough requests to fill a batch."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from stream.serving.ray_deploy import DEPLOYMENT, app_builder, config_from_mapping

    raw = yaml.safe_load((ray_support.REPO / "deploy" / "serve_gpu.yaml").read_text())
    (app,) = ServeDeploySchema.model_validate(raw).applications
    (dep,) = app.deployments
    assert app.import_path == "stream.serving.ray_deploy:app_builder" and dep.name == DEPLOYMENT
    config = config_from_mapping(app.args)
    assert config.device == "cuda" and config.max_batch == dep.user_config["max_batch"]
    assert set(dep.user_config) == {"max_batch", "gather_ms"} and dep.max_ongoing_requests >= config.max_batch
    auto = dep.autoscaling_config
    assert 1 <= auto["min_replicas"] <= auto["initial_replicas"] <= auto["max_replicas"]
    assert type(app_builder(app.args)).__name__ == "Application"
    with pytest.raises(ValueError, match="unknown editor option"):
        config_from_mapping({"encoder": "e4e-ffhq", "gpus": 1})


# ---------------------------------------------------------------------------------------------------------------------
# on a local cluster (inside the namespace)


@pytest.mark.slow
def test_in_loopback_namespace_with_a_local_ray():
    """Runs this file's cluster tests inside the isolated namespace (one Ray for all of them; ~1.5 min here)."""
    if ray_support.inside():
        pytest.skip("this is the outer runner")
    reason = ray_support.isolation_missing_reason()
    if reason:
        pytest.skip(f"needs a loopback-only network + PID namespace: {reason}")
    res = ray_support.run_isolated([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__,
                                    "-k", "test_cluster_"], timeout=420)
    print(res.stdout[-5000:])
    assert res.returncode == 0, f"in-namespace run failed:\n{res.stdout[-8000:]}\n{res.stderr[-4000:]}"
    assert " passed" in res.stdout and "skipped" not in res.stdout.splitlines()[-1], res.stdout[-2000:]


@pytest.fixture(scope="module")
def cluster():
    ray_support.start_local_ray(num_cpus=4)
    try:
        yield
    finally:
        ray_support.stop_local_ray()


def ray_effect(nets, app: str, replicas: int, landmarks=None, **options) -> Effect:
    G, E, deltas = nets
    options.setdefault("precision", "fp32")   # the pixel comparisons' tolerance is fp32's (CPU auto is bf16)
    config = EffectConfig(device="cpu", smoothing=False, serve="ray", ray_address="local", ray_app=app,
                          replicas=replicas, cpus_per_replica=1.0, **options)
    factory = None if landmarks is None else (lambda: ReplayLandmarker(landmarks))
    return Effect(config, encoder=copy.deepcopy(E), directions=deltas, batching=True, landmarker_factory=factory)


def spy_replicas(effect) -> dict:
    """{stream: [replica of each of its edits]}, recorded as the backend's futures resolve."""
    seen: dict = {}
    submit = effect.backend.submit

    def record(stream_id, future):
        if not future.cancelled() and future.exception() is None:
            seen.setdefault(stream_id, []).append(future.result()[0].timing["replica"])

    def spying(stream_id, jobs):
        future = submit(stream_id, jobs)
        future.add_done_callback(lambda f: record(stream_id, f))
        return future

    effect.backend.submit = spying
    return seen




@in_cluster
def test_cluster_same_pixels_as_in_process_with_memory_crossing_replicas(cluster, nets, clip):
    """3 streams x 4 frames through 2 replicas == the in-process editor one face at a time. Tolerance: at most 1
    grey level anywhere and mean < 0.01 (batching and the replicas' thread count change float rounding only); the
    memory each face needs is carried, so a face's frames may switch replicas freely."""
    G, E, deltas = nets
    alone = Effect(EffectConfig(device="cpu", smoothing=False, precision="fp32"), encoder=copy.deepcopy(E),
                   directions=deltas)
    reference = play_streams(alone, clip, concurrent=False)
    effect = ray_effect(nets, "mm-pixels", replicas=2, gather_ms=100.0)
    try:
        replicas_of = spy_replicas(effect)
        got = play_streams(effect, clip, concurrent=True)
        stats = effect.stats()
    finally:
        effect.close()
    worst = 0
    for name in STREAMS:
        for r, g, frame in zip(reference[name], got[name], clip):
            diff = np.abs(r.astype(int) - g.astype(int))
            worst = max(worst, int(diff.max()))
            assert diff.max() <= 1 and diff.mean() < 0.01, (name, diff.max(), diff.mean())
            assert np.abs(g.astype(int) - frame.astype(int)).mean() > 0.05      # the face was edited
    switched = [n for n, seq in replicas_of.items() if any(a != b for a, b in zip(seq, seq[1:]))]
    print(f"\nray pixels: worst difference {worst} grey level(s); replicas per stream {replicas_of}; "
          f"mean batch {stats['mean_batch']:.2f}; per replica {stats['replicas']}")
    assert len(stats["replicas"]) == 2, stats["replicas"]                      # both replicas edited
    assert switched, replicas_of                                               # a face's memory crossed replicas
    assert stats["errors"] == 0 and stats["lost"] == 0


@pytest.fixture(scope="module")
def one_replica(cluster, nets, face_landmarks):
    effect = ray_effect(nets, "mm-one", replicas=1, landmarks=[face_landmarks], gather_ms=150.0,
                        staleness_ms=500.0)
    try:
        yield effect
    finally:
        effect.close()


@pytest.fixture(scope="module")
def face_landmarks(clip):
    from stream.face.landmarks import FaceMeshLandmarker

    with FaceMeshLandmarker(max_faces=1, video_mode=False) as lm:
        (found,) = lm.detect(clip[0])
    return found


class ReplayLandmarker:
    """The same landmarks for every frame (tracking cost out of the way; alignment and paste are real)."""

    def __init__(self, faces):
        self.faces = [np.asarray(f, np.float32) for f in faces]

    def detect(self, frame):
        return [f.copy() for f in self.faces]

    def close(self):
        pass


@in_cluster
def test_cluster_a_bad_request_fails_alone_in_a_shared_pass(one_replica, nets):
    """Two streams' requests in one replica pass, one with a crop of the wrong size: it gets the editor's
    ValueError (raised in the replica), the other its edit."""
    backend = one_replica.backend
    s = backend.info.crop_size
    good = [FaceJob(np.full((s, s, 3), 120, np.uint8), np.zeros(2, np.float32))]
    bad = [FaceJob(np.zeros((s + 1, s, 3), np.uint8), np.zeros(2, np.float32))]
    f_bad, f_good = backend.submit("bad", bad), backend.submit("good", good)
    edits = f_good.result(timeout=60)
    with pytest.raises(ValueError, match="face crop must be uint8"):
        f_bad.result(timeout=60)
    assert len(edits) == 1 and edits[0].edit.shape == (s, s, 3)
    assert edits[0].timing["batch"] == 1            # retried alone after the shared pass failed


@in_cluster
def test_cluster_killed_replica_costs_fresh_edits_only_and_edits_resume(one_replica, clip):
    """4 cameras at 15 fps, the only replica killed mid-run: every stream keeps its output rate; frames are
    re-pasted with the last edit until it is older than the bound (500 ms), then pass through -- counted
    (`stale`); the lost requests are counted (`lost`); edits resume from the replica Ray starts instead."""
    from ray import get_actor, kill

    from stream.driver import FrameDriver

    effect, fps = one_replica, 15.0
    sessions = [effect.new_session(controls=Controls(directions={"smile": 3.0}), stream_id=f"cam{i}")
                for i in range(4)]
    log = {s.id: [] for s in sessions}
    drivers = [FrameDriver(s, on_output=lambda f, info, sid=s.id: log[sid].append(
        (time.monotonic(), info["status"].state, info["status"].edited_faces))).start() for s in sessions]
    stop = threading.Event()

    def camera(driver, offset):
        t0, i = time.monotonic(), 0
        while not stop.is_set():
            driver.push(clip[(offset + i) % len(clip)])
            i += 1
            time.sleep(max(0.0, t0 + i / fps - time.monotonic()))

    feeders = [threading.Thread(target=camera, args=(d, i), daemon=True) for i, d in enumerate(drivers)]
    for f in feeders:
        f.start()
    try:
        wait_for(lambda: all(s.counters.edits >= 3 for s in sessions), 90, "first edits")
        time.sleep(3.0)                                                  # the rate before the kill
        (killed,) = effect.stats()["replicas"]
        before_kill = effect.stats()
        (name,) = [n for n in ray_support.replica_actor_names("mm-one") if n[0].endswith(killed)]
        edits_at_kill = [s.counters.edits for s in sessions]
        t_kill = time.monotonic()
        kill(get_actor(name[0], namespace=name[1]), no_restart=True)
        wait_for(lambda: len(effect.stats()["replicas"]) == 2 and all(
            s.counters.edits >= n + 2 for s, n in zip(sessions, edits_at_kill)), 120, "edits after the restart")
        t_back = time.monotonic()
        time.sleep(2.0)
    finally:
        stop.set()
        for f in feeders:
            f.join(5)
        for d in drivers:
            d.stop(drain=False)
    stats = effect.stats()
    rows = []
    for s in sessions:
        out = log[s.id]
        before = [t for t, *_ in out if t_kill - 3.0 <= t < t_kill]
        during = [(t, state, n) for t, state, n in out if t_kill <= t < t_back]
        fps_before = len(before) / 3.0
        fps_during = len(during) / (t_back - t_kill)
        gaps = np.diff([t for t, *_ in out if t_kill - 1 <= t <= t_back + 1])
        stale_seen = sum(1 for _t, state, _n in out if state == "stale")
        counted = s.stats()
        rows.append((s.id, fps_before, fps_during, float(gaps.max()), len(during),
                     sum(1 for *_x, n in during if n), sum(1 for *_x, n in during if not n), stale_seen,
                     counted["errors"]))
        assert fps_before > 0.6 * fps, (s.id, fps_before)
        assert fps_during >= 0.7 * fps_before, (s.id, fps_before, fps_during)     # the stream kept its rate
        assert gaps.max() < 1.0, (s.id, gaps.max())                                # ... without a stall
        assert counted["stale"] == stale_seen > 0                                  # passed-through frames counted
        assert all(k.startswith("edit: ReplicaLost:") for k in counted["errors_by_kind"]), counted
    for s in sessions:
        s.close()
    print(f"\nreplica {killed} killed; new replica edited after {t_back - t_kill:.1f} s; backend lost "
          f"{stats['lost']}, timeouts {stats['timeouts']}, per replica {stats['replicas']}")
    print("stream  fps before  fps outage  max gap s  frames in outage  re-pasted  passed through  "
          "stale (whole run, counted)  errors")
    for sid, fb, fd, gap, n, pasted, passed, stale, errors in rows:
        print(f"{sid:>6} {fb:>11.1f} {fd:>11.1f} {gap:>10.2f} {n:>17} {pasted:>10} {passed:>15} {stale:>27} "
              f"{errors:>7}")
    # every failure since the kill is a lost request (none timed out, nothing else failed)
    assert stats["timeouts"] == before_kill["timeouts"] == 0
    assert stats["errors"] - before_kill["errors"] == stats["lost"] - before_kill["lost"]


@in_cluster
def test_cluster_a_request_running_when_its_replica_dies_fails_as_replica_lost(cluster):
    """A pass that takes 3 s (a slow stand-in editor), its replica killed 1.5 s in: that request fails with
    ReplicaLost (one line, one kind in the counters) -- not with a hang, not with Ray's own long error."""
    from ray import get_actor, kill

    from stream.serving.ray_backend import RayBackend, ReplicaLost

    config = EffectConfig(serve="ray", ray_address="local", ray_app="mm-slow", replicas=1, cpus_per_replica=0.0,
                          paste_size=32)
    backend = RayBackend(config, editor_source=ray_support.SlowTint(delay_ms=3000.0))
    try:
        future = backend.submit("cam", [FaceJob(np.zeros((32, 32, 3), np.uint8), np.ones(5, np.float32))])
        time.sleep(1.5)
        ((name, namespace),) = ray_support.replica_actor_names("mm-slow")
        kill(get_actor(name, namespace=namespace), no_restart=True)
        with pytest.raises(ReplicaLost):
            future.result(timeout=60)
        stats = backend.stats()
    finally:
        backend.close()
    assert stats["lost"] == 1 and stats["errors"] == 1 and list(stats["errors_by_kind"])[0].startswith("ReplicaLost")


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


@in_cluster
def test_cluster_front_end_uses_the_running_application_and_leaves_it_running(cluster):
    """The operator's path: the application is deployed from the Serve config's builder (here the demo editor on
    CPU); a front end with --serve ray finds it by name, edits through it, and closing leaves it running."""
    from ray import serve

    from stream.serving.ray_deploy import app_builder

    serve.run(app_builder({"device": "cpu", "demo": True, "paste_size": 64}), name="mm-operated", route_prefix=None)
    try:
        effect = Effect.open(EffectConfig(serve="ray", ray_address="auto", ray_app="mm-operated", replicas=3))
        try:
            assert effect.info.state == "demo" and effect.info.crop_size == 64
            crop = np.full((64, 64, 3), 100, np.uint8)
            coef = np.zeros(len(effect.info.direction_names), np.float32)
            coef[0] = 5.0
            (edit,) = effect.backend.submit("cam", [FaceJob(crop, coef)]).result(timeout=60)
            assert np.abs(edit.edit.astype(int) - crop).max() > 50          # tinted by the replica
        finally:
            effect.close()
        assert serve.status().applications["mm-operated"].status == "RUNNING"
        assert len(ray_support.replica_actor_names("mm-operated")) == 1  # the app's, not the flag's 3 replicas
    finally:
        serve.delete("mm-operated")
