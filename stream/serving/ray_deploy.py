"""The editor as a Ray Serve deployment: each replica loads the networks once and edits faces of many streams in
batched passes (`@serve.batch`). Front ends reach it through `stream.serving.ray_backend.RayBackend`.

    request  (one stream's faces of one frame)  [FaceJob(crop, coefficients, memory: WireMemory | None,
                                                 render_ws)]
    reply                                       [FaceEdit(edit, base, memory: WireMemory | None, timing, ws)]

A replica gathers requests for up to `gather_ms` after the first, until `max_batch` faces wait (Serve's batch queue,
counting faces), and runs them through `stream.editor.Editor.edit` in ONE pass on its own editor thread (one pass
at a time; the event loop keeps taking requests meanwhile). A request with more faces than `max_batch` goes alone.
When a pass fails, each request of it is retried alone, so only the culprit's request fails. `timing` gains
"replica" (this replica's id) and "pass" (its pass counter) so front ends can count batches per replica.

Operating it: `serve deploy deploy/serve_gpu.yaml` runs `app_builder` (EffectConfig fields as `args`); the YAML
sets replicas, GPUs per replica, autoscaling and, through `user_config`, the batch size and wait. A front end
started with `--serve ray` and no running application deploys one from its own flags (`bind_from_config`).
Networks injected by a front end (tests, benchmarks) travel once through Ray's object store (`SharedNetworks`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from ray import serve

from stream.options import EffectConfig
from stream.serving.wire import from_wire, to_wire

log = logging.getLogger(__name__)

DEPLOYMENT = "Editor"                  # the deployment's name inside the application (the YAML names it too)
LOGGING = {"enable_access_log": False, "log_level": "WARNING"}   # no line per request


def request_faces(requests: list) -> int:
    """Serve's batch size of a list of requests: the faces in them."""
    return sum(len(jobs) for jobs in requests)


class SharedNetworks:
    """Networks a front end brings (tests, benchmarks): put once in Ray's object store, fetched by each replica
    (also by a replica Serve restarts) for as long as the front end that put them lives."""

    def __init__(self,
                 generator=None,                  # engine Generator, or None (the encoder's decoder)
                 encoder=None,                    # engine Encoder
                 directions=None):                # {name: delta} or [Direction], or None (the direction files)
        import ray  # noqa: PLC0415

        self.ref = ray.put((generator, encoder, directions))

    def build(self, config: EffectConfig):
        import ray  # noqa: PLC0415

        from stream.loader import build_editor  # noqa: PLC0415

        generator, encoder, directions = ray.get(self.ref)
        return build_editor(config, generator=generator, encoder=encoder, directions=directions)


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=32, logging_config=LOGGING, health_check_period_s=2.0,
                  health_check_timeout_s=30.0, max_constructor_retry_count=3)
class EditorDeployment:
    """One replica: an editor (networks loaded once) behind Serve's batch queue (see the module docstring)."""

    def __init__(self,
                 config: EffectConfig | Mapping,           # the effect's options (networks, device, precision, batch)
                 source=None):                             # .build(config) -> editor (SharedNetworks, ...); None ->
                                                           # stream.loader.load_editor(config)
        from stream.loader import load_editor  # noqa: PLC0415

        self.config = config if isinstance(config, EffectConfig) else config_from_mapping(config)
        self.editor = source.build(self.config) if source is not None else load_editor(self.config)
        self._info = self.editor.info
        self._memory_layout = memory_layout(self.editor)
        self.replica = replica_id()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="editor")  # one pass at a time
        self._lock = threading.Lock()
        self._counts = {"passes": 0, "faces": 0, "requests": 0, "errors": 0, "busy_s": 0.0}
        self.max_batch, self.gather_ms = self.config.max_batch, self.config.gather_ms
        self._apply_batching()
        log.info("editor replica %s ready: %s on %s (%s), batch <= %d faces, gather %.1f ms", self.replica,
                    self._info.state, self._info.device_type, self._info.precision, self.max_batch, self.gather_ms)

    # ------------------------------------------------------------------ Serve's hooks and the front ends' calls
    def reconfigure(self, user_config: Mapping) -> None:
        """The deployment's `user_config` (the YAML's): {"max_batch": faces, "gather_ms": ms}; applied live."""
        self.max_batch = int(user_config.get("max_batch", self.max_batch))
        self.gather_ms = float(user_config.get("gather_ms", self.gather_ms))
        if self.max_batch < 1 or not 0 <= self.gather_ms <= 1000:
            raise ValueError(f"user_config needs max_batch >= 1 and gather_ms in [0, 1000], got {dict(user_config)}")
        self._apply_batching()

    def info(self):
        """The editor's `stream.editor.EditorInfo` (what front ends show and align with)."""
        return self._info

    def stats(self) -> dict:
        """This replica's passes, faces, requests, errors, busy seconds and mean batch (faces per pass)."""
        with self._lock:
            c = dict(self._counts)
        import torch  # noqa: PLC0415

        return {**c, "replica": self.replica, "mean_batch": c["faces"] / c["passes"] if c["passes"] else 0.0,
                "max_batch": self.max_batch, "gather_ms": self.gather_ms, "threads": torch.get_num_threads()}

    async def edit(self, jobs: list) -> list:
        """One stream's faces of one frame -> their edits (same order); raises the editor's error for them."""
        if len(jobs) > self.max_batch:
            result = (await self._run([jobs]))[0]
        else:
            result = await self._batched(jobs)
        if isinstance(result, BaseException):
            raise result
        return result

    # ------------------------------------------------------------------ batching
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.004, batch_size_fn=request_faces)
    async def _batched(self, requests: list) -> list:
        return await self._run(requests)

    def _apply_batching(self) -> None:
        self._batched.set_max_batch_size(self.max_batch)
        self._batched.set_batch_wait_timeout_s(self.gather_ms / 1e3)

    async def _run(self, requests: list) -> list:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._edit_requests, requests)

    def _edit_requests(self, requests: list) -> list:
        """[[FaceJob]] -> [[FaceEdit] | exception] in one pass; a failing pass is retried request by request."""
        jobs = [job for r in requests for job in r]
        try:
            edits = self._edit(jobs)
        except Exception as exc:  # noqa: BLE001 -- returned to (only) the requests it belongs to
            if len(requests) > 1:
                return [self._edit_requests([r])[0] for r in requests]
            with self._lock:
                self._counts["errors"] += 1
            log.warning("edit failed on replica %s: %s: %s", self.replica, type(exc).__name__, exc)
            return [exc]
        out, i = [], 0
        for r in requests:
            out.append(edits[i:i + len(r)])
            i += len(r)
        with self._lock:
            self._counts["requests"] += len(requests)
        return out

    def _edit(self, jobs: list) -> list:
        t0 = time.perf_counter()
        memories = [job.memory for job in jobs]
        if self._memory_layout is not None:
            memories = from_wire(memories, **self._memory_layout)
        edits = self.editor.edit([dataclasses.replace(j, memory=m) for j, m in zip(jobs, memories)])
        wired = to_wire([e.memory for e in edits])
        with self._lock:
            self._counts["passes"] += 1
            self._counts["faces"] += len(jobs)
            self._counts["busy_s"] += time.perf_counter() - t0
            tag = {"replica": self.replica, "pass": self._counts["passes"]}
        return [dataclasses.replace(e, memory=w, timing={**e.timing, **tag}) for e, w in zip(edits, wired)]


# ---------------------------------------------------------------------------------------------------------------------
# building the application


def app_builder(args: Mapping) -> Any:
    """`serve run/deploy` entry (the YAML's import_path): `args` are EffectConfig fields (encoder, directions,
    device, precision, mode, live_resolution, max_batch, gather_ms, ...)."""
    return EditorDeployment.bind(config_from_mapping(args or {}))


def bind_from_config(config: EffectConfig, source, gpus: float) -> Any:
    """The application a front end deploys from its own flags (replicas, GPUs and CPUs per replica, batch)."""
    return EditorDeployment.options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": gpus},
        max_ongoing_requests=max(16, 2 * config.max_batch),
    ).bind(config, source)


def config_from_mapping(args: Mapping) -> EffectConfig:
    """EffectConfig from a YAML/JSON mapping (lists become tuples); unknown keys are a one-line error."""
    from dataclasses import fields  # noqa: PLC0415

    names = {f.name for f in fields(EffectConfig)}
    unknown = sorted(set(args) - names)
    if unknown:
        raise ValueError(f"unknown editor option(s) {unknown} in the Serve config's args; use EffectConfig fields "
                         f"such as encoder, directions, device, precision, max_batch, gather_ms")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    return EffectConfig(**options)


def memory_layout(editor) -> dict | None:
    """What `from_wire` needs to rebuild this editor's memories (None: an editor without memories)."""
    encoder = getattr(editor, "E", None)
    if encoder is None or not getattr(editor, "restyle", False) or getattr(editor, "paper", False):
        return None
    size = encoder.input_size
    return {"device": editor.device, "num_ws": editor.num_ws, "w_dim": editor.w_dim, "recon_shape": (3, size, size),
            "recon_dtype": encoder.average_image().dtype}


def replica_id() -> str:
    """This replica's id within its deployment ("local" outside Serve)."""
    from ray.serve.exceptions import RayServeException  # noqa: PLC0415

    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:
        return "local"
