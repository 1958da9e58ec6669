"""`RayBackend`: the editor as a Ray Serve deployment (`stream.serving.ray_deploy`), behind the serving surface
sessions already use (`info`, `submit(stream_id, jobs) -> Future`, `cancel`, `stats`, `close`).

    front end (aiortc, tracking, alignment, paste-back)        GPU replicas (`EditorDeployment`, networks once)
    session.submit(faces of one frame) --handle.edit.remote--> Serve batch queue (faces of many streams)
                                        <--[FaceEdit]--------- one Editor pass per batch

Every door picks it with the same flags (`stream.options`): `--serve ray --ray-address auto|local|ray://HOST:PORT
|HOST:PORT [--ray-app NAME --replicas N --gpus-per-replica G --cpus-per-replica C]`. The application named
`--ray-app` is used when it runs on the cluster (deployed with `serve deploy deploy/serve_gpu.yaml`); otherwise this
front end deploys it from its own flags and deletes it when it closes. `--ray-address local` starts a private Ray on
127.0.0.1 for this process (and stops it on close). A cluster that cannot be reached is `RayUnavailable`, one
line naming the address (a ValueError, so every door reports it as bad usage and exits 2).

Per-face memory (temporal ReStyle: last latent + reconstruction) TRAVELS WITH THE REQUEST (`stream.serving.wire`):
replicas stay stateless, so any replica can take any frame (Serve's load-aware routing, autoscaling and restarts
work unchanged) and a replica that dies loses no face's memory. The cost is bytes: per face and frame, each way,
ws float32 [num_ws, w_dim] (36 KiB at 18 x 512) + recon [3, 256, 256] in the network dtype (384 KiB fp16; 768 KiB
fp32), on top of the crop (192 KiB up at 256 px) and edit + base (384 KiB down). Session-sticky routing would
save those bytes but pin streams to replicas (new replicas take no load from running streams, a dead replica's
faces restart from the average latent -- a visible jump) and needs a custom router.

Failure: a request whose replica dies fails with `ReplicaLost`; one that waits longer than `timeout_s` (no replica
back in time) fails with `EditTimeout`. The session counts it, keeps its last edit per the staleness rule and sends
its next frame, which Serve routes to a live replica (or holds until Ray restarts one): the stream never stops.
`submit` never blocks the caller: each request is waited for on its own daemon thread (a session has at most one
request in flight, so there are at most as many as streams).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlsplit

from stream.errors import ErrorCounter
from stream.stats import EditRate

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0     # a request not answered in this time fails (EditTimeout); the stream goes on
START_TIMEOUT_S = 300.0      # waiting for the application's first answer (replicas loading networks)
CONNECT_CHECK_S = 5.0        # TCP check of an explicit HOST:PORT before Ray's own (much longer) retries
_SEEN_PASSES = 256           # per replica: recent pass ids kept to count each pass once


class RayUnavailable(ValueError):
    """The Ray cluster (or Serve application) cannot be used; the message is one line naming the address.

    A ValueError so that every door's existing bad-usage path prints it and exits 2."""


class ReplicaLost(RuntimeError):
    """The replica editing a request died (or was restarted) before answering."""


class EditTimeout(RuntimeError):
    """No replica answered a request within the backend's timeout."""


# ---------------------------------------------------------------------------------------------------------------------
# the cluster


def connect(address: str, replicas_cpus: float = 0.0) -> bool:
    """Join (or start) Ray; True when this call started a private cluster (`address == "local"`) to stop later.

    Already connected in this process -> that connection is used. RayUnavailable when it cannot be reached."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING}
    if address == "local":
        import os  # noqa: PLC0415

        cpus = max(os.cpu_count() or 1, int(replicas_cpus + 0.999))
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=cpus, **quiet)
        return True
    check_reachable(address)
    if address.startswith("ray://"):
        client_token_auth()
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as exc:
        hint = ("; a Ray Client also needs the cluster's token: RAY_AUTH_TOKEN or ~/.ray/auth_token"
                if address.startswith("ray://") else "")
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({first_line(exc)}); start one with "
                             f"`ray start --head`, or give --ray-address local for a private Ray on this machine"
                             f"{hint}") from exc
    return False


def client_token_auth() -> None:
    """Ray >= 2.52 clusters require a token, and Ray Client sends it only in token mode: turn that on (as
    `ray.init` does for local clusters) when a token is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token) and RAY_AUTH_MODE is not set."""
    import os  # noqa: PLC0415

    if "RAY_AUTH_MODE" in os.environ:
        return
    try:  # Ray's own switch (sets RAY_AUTH_MODE and refreshes its cached config); pinned Ray 2.60
        from ray._private.authentication.authentication_token_setup import (  # noqa: PLC0415
            maybe_enable_token_auth_if_token_available)
    except ImportError:
        return
    if maybe_enable_token_auth_if_token_available(warn_if_disabled=False):
        log.info("Ray Client: sending the cluster token (RAY_AUTH_MODE=token)")


def check_reachable(address: str, timeout_s: float = CONNECT_CHECK_S) -> None:
    """For HOST:PORT and ray://HOST:PORT: a TCP connect within `timeout_s`, else RayUnavailable ("auto": no-op)."""
    host, port = split_address(address)
    if host is None:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check "
                             f"--ray-address and that the head node runs (`ray start --head`)") from exc


def split_address(address: str) -> tuple[str | None, int | None]:
    """("host", port) of "ray://host:port" or "host:port"; (None, None) for "auto" / "local"."""
    if address in ("auto", "local"):
        return None, None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise RayUnavailable(f"--ray-address {address!r} is not auto, local, ray://HOST:PORT or HOST:PORT")
    return parts.hostname, port


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def find_or_deploy(config, networks=None, editor_source=None):
    """(handle, deployed_here, source): the running application `config.ray_app`, else one deployed from `config`.

    The replicas build their editor with `stream.loader.load_editor(config)`, or from `networks` ((G, E, directions),
    shipped once through the object store), or with `editor_source.build(config)` (any picklable object)."""
    from ray import serve  # noqa: PLC0415
    from ray.serve.exceptions import RayServeException  # noqa: PLC0415

    try:
        handle = serve.get_app_handle(config.ray_app)
    except RayServeException:
        handle = None
    if handle is not None:
        if networks is not None or editor_source is not None:
            log.warning("Serve application %r is already running: using it, not the networks given here",
                        config.ray_app)
        log.info("using the running Serve application %r", config.ray_app)
        return handle, False, None
    import ray  # noqa: PLC0415

    from stream.serving.ray_deploy import SharedNetworks, bind_from_config  # noqa: PLC0415

    gpus = config.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    source = editor_source if editor_source is not None else SharedNetworks(*networks) if networks else None
    log.info("deploying Serve application %r: %d replica(s), %g GPU and %g CPU each", config.ray_app,
             config.replicas, gpus, config.cpus_per_replica)
    serve.start(proxy_location="Disabled")     # handles only: no HTTP proxy, no port opened for it
    try:
        handle = serve.run(bind_from_config(config, source, gpus), name=config.ray_app, route_prefix=None)
    except RuntimeError as exc:
        raise RayUnavailable(f"the editor application {config.ray_app!r} failed to start on the cluster "
                             f"({first_line(exc)}); see the replica's log above") from exc
    return handle, True, source


# ---------------------------------------------------------------------------------------------------------------------
# the backend


@dataclass
class _Pending:
    stream_id: str
    response: object              # ray.serve.handle.DeploymentResponse
    future: Future
    faces: int
    t_submit: float


class RayBackend:
    """The serving surface over a Ray Serve deployment of the editor (see the module docstring)."""

    def __init__(self,
                 config,                                   # stream.options.EffectConfig (serve, ray_* fields, batch)
                 networks: tuple | None = None,            # (generator, encoder, directions) to ship; None: load there
                 editor_source=None,                       # or: picklable, .build(config) -> editor (on replicas)
                 timeout_s: float = REQUEST_TIMEOUT_S):    # a request not answered in this time fails
        self.config = config
        self.timeout_s = float(timeout_s)
        self.address = config.ray_address
        self._owns_cluster = connect(config.ray_address, config.replicas * config.cpus_per_replica)
        self._owns_app, self._source = False, None
        try:
            self.handle, self._owns_app, self._source = find_or_deploy(config, networks, editor_source)
            self.info = self.handle.info.remote().result(timeout_s=START_TIMEOUT_S)
        except BaseException:
            self._shutdown()
            raise
        self._edit = self.handle.edit
        self.errors = ErrorCounter(log, "edit failed")
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._closing = False
        self._counts = {"requests": 0, "faces": 0, "lost": 0, "timeouts": 0, "cancelled": 0,
                        "round_trip_s": 0.0}
        self._replicas: dict[str, dict] = {}
        self._rate = EditRate()
        log.info("editor on Ray Serve (%s, application %r): %s on %s, %d directions", self.address,
                 config.ray_app, self.info.state, self.info.device_type, len(self.info.direction_names))

    # ------------------------------------------------------------------ sessions' side
    def submit(self, stream_id: str, jobs: Sequence) -> Future:
        """Send one stream's faces of one frame; the future resolves to their edits (or the failure). Never blocks."""
        future: Future = Future()
        jobs = list(jobs)
        with self._lock:
            if self._closing:
                future.set_exception(RuntimeError("the editor is shutting down"))
                return future
        try:
            response = self._edit.remote(jobs)
        except Exception as exc:  # noqa: BLE001 -- e.g. the cluster is gone: this frame fails, not the stream
            self.errors.count(exc)
            future.set_exception(exc)
            return future
        pending = _Pending(stream_id, response, future, len(jobs), time.monotonic())
        with self._lock:
            self._pending[id(pending)] = pending
        threading.Thread(target=self._wait, args=(pending,), name=f"ray-edit-{stream_id}", daemon=True).start()
        return future

    def cancel(self, stream_id: str) -> None:
        """Drop the stream's requests (its client is gone); replicas skip them if they have not started."""
        with self._lock:
            dropped = [p for p in self._pending.values() if p.stream_id == stream_id]
        for p in dropped:
            if p.future.cancel():
                with self._lock:
                    self._counts["cancelled"] += 1
            # DeploymentResponse.cancel may wait for the request's replica assignment: never in the caller's thread
            threading.Thread(target=p.response.cancel, name="ray-cancel", daemon=True).start()

    def stats(self) -> dict:
        """Front-end counters (never waits on Ray): requests, faces, batches/mean_batch (passes this front end's
        faces were in), edits_per_s, lost (replica died), timeouts, errors, per-replica batches."""
        now = time.monotonic()
        with self._lock:
            c = dict(self._counts)
            replicas = {rid: {"batches": r["batches"], "faces": r["faces"], "batch_faces": r["batch_faces"],
                              "mean_batch": round(r["batch_faces"] / r["batches"], 3) if r["batches"] else 0.0}
                        for rid, r in self._replicas.items()}
            rate = self._rate.per_s(now)
            waiting = len(self._pending)
        batches = sum(r["batches"] for r in replicas.values())
        batch_faces = sum(r["batch_faces"] for r in replicas.values())
        return {**c, "batches": batches, "mean_batch": batch_faces / batches if batches else 0.0,
                "edits_per_s": rate, "waiting": waiting, "replicas": replicas, "backend": "ray",
                "ray_address": self.address, "ray_app": self.config.ray_app, **self.errors.as_dict()}

    def close(self) -> None:
        """Cancel waiting requests; delete the application if deployed here; stop a private Ray started here."""
        with self._lock:
            self._closing = True
            pending = list(self._pending.values())
        for p in pending:
            p.future.cancel()
        self._shutdown()

    # ------------------------------------------------------------------ waiting for replies
    def _wait(self, p: _Pending) -> None:
        try:
            edits = p.response.result(timeout_s=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 -- every failure goes to this request's future only
            self._fail(p, exc)
            return
        finally:
            with self._lock:
                self._pending.pop(id(p), None)
        self._record(p, edits)
        try:
            p.future.set_result(edits)
        except InvalidStateError:  # cancelled meanwhile (the session closed)
            pass

    def _fail(self, p: _Pending, exc: Exception) -> None:
        exc = self._translate(p, exc)
        if exc is None:  # cancelled
            return
        self.errors.count(exc)
        try:
            p.future.set_exception(exc)
        except InvalidStateError:
            pass

    def _translate(self, p: _Pending, exc: Exception) -> Exception | None:
        """Ray's failures -> ReplicaLost / EditTimeout (one kind each in the counters); the editor's own error
        (raised in the replica) -> that error; a cancelled request -> None."""
        from ray import exceptions as rex  # noqa: PLC0415
        from ray.serve.exceptions import RequestCancelledError  # noqa: PLC0415

        if p.future.cancelled() or isinstance(exc, (RequestCancelledError, rex.TaskCancelledError)):
            return None
        if isinstance(exc, TimeoutError):
            threading.Thread(target=p.response.cancel, name="ray-cancel", daemon=True).start()
            with self._lock:
                self._counts["timeouts"] += 1
            return EditTimeout(f"no editor replica answered within {self.timeout_s:g} s; the frame keeps its last "
                               f"edit")
        if isinstance(exc, rex.RayActorError):
            with self._lock:
                self._counts["lost"] += 1
            return ReplicaLost("the editor replica was lost before answering (Ray restarts it); the frame keeps "
                               "its last edit")
        if isinstance(exc, rex.RayTaskError) and isinstance(exc.cause, Exception):
            return exc.cause
        return exc

    def _record(self, p: _Pending, edits: list) -> None:
        now = time.monotonic()
        timing = edits[0].timing if edits else {}
        with self._lock:
            self._counts["requests"] += 1
            self._counts["faces"] += len(edits)
            self._counts["round_trip_s"] += now - p.t_submit
            self._rate.add(len(edits), now)
            rid = timing.get("replica")
            if rid is not None:
                r = self._replicas.setdefault(rid, {"seen": deque(maxlen=_SEEN_PASSES), "batches": 0, "faces": 0,
                                                    "batch_faces": 0})
                r["faces"] += len(edits)
                if timing.get("pass") not in r["seen"]:  # the first of this pass's requests to come back
                    r["seen"].append(timing.get("pass"))
                    r["batches"] += 1
                    r["batch_faces"] += int(timing.get("batch", len(edits)))

    def _shutdown(self) -> None:
        from ray import serve  # noqa: PLC0415

        if self._owns_app:
            try:
                serve.delete(self.config.ray_app)
            except Exception as exc:  # noqa: BLE001 -- closing: report and go on stopping
                log.warning("could not delete Serve application %r: %s", self.config.ray_app, first_line(exc))
            self._owns_app = False
        if self._owns_cluster:
            import ray  # noqa: PLC0415

            serve.shutdown()
            ray.shutdown()
            self._owns_cluster = False
