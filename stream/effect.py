"""The per-frame micromotion effect: the one frame function every front end wraps.

The walk of one frame (DESIGN.md "One frame, one path")::

    frame uint8 [H, W, 3] BGR
     -> landmarks   (MediaPipe FaceMesh + One Euro smoothing: the stream's `stream.face.tracking.FaceTracker`)
     -> align       (one FFHQ warp per face at the paste size; the encoder input is that crop resized to 256)
     -> encode      live: ReStyle temporal = ONE encoder step per frame from the previous frame's (w, G(w)),
                    or e4e/pSp single pass; paper: ReStyle-pSp, 5 iterations from the average latent, fp32 eager
     -> edit        w' = w + sum_i alpha_i * t * delta_i    (t from the animation clock: 0 -> 1 -> 0, or held)
     -> generate    G([w, w']) in ONE batch when residual paste or temporal ReStyle needs G(w); else G(w')
     -> paste       inverse warp with a feathered face-oval mask (replace, or residual: crop + G(w') - G(w))
     -> frame out   same shape, uint8; untouched outside the masks

Public pieces:

* `EffectConfig`  -- what to load and how to run it (networks, directions, device, precision, mode, sizes).
* `Controls`      -- what the user turns per frame (direction -> alpha, animation, on/off, paste mode);
                     `Controls.from_dict` validates JSON from a browser with one-line `ValueError`s.
* `StreamState`   -- everything that belongs to one stream (landmark tracker, smoothers, previous latents and
                     reconstructions per face, animation clock, counters). Two peers never share one.
* `Effect`        -- `Effect(config)`, `effect.new_state()`, `effect.process(frame_bgr, controls, state=None)`,
                     `effect.available_directions`, `Effect.tracking_only(config)`, `Effect.create(config)`.
* `WeightsMissing` -- raised by `Effect(config)` when no weights are installed; its message is the one command.

On CUDA the encoder and generator run in fp16 (bf16 option) and the per-frame network work is replayed from
CUDA graphs (`engine.runtime.CudaGraphRunner`, one capture per number of faces) with pinned, non-blocking
host<->device copies. On CPU everything is eager fp32. Torch, cv2 and mediapipe are imported lazily.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

DOWNLOAD_COMMAND = "python -m engine.weights download --default"
MODES = ("live", "paper")
PASTE_MODES = ("replace", "residual")
STAGES = ("landmarks", "align", "encode", "generate", "paste")
PAPER_ITERS = 5          # paper mode: ReStyle-pSp iterations from the average latent
MAX_ALPHA = 100.0        # |alpha| above this is refused as a typo (the paper uses up to ~5-10)
_EMA = 0.1               # weight of the newest sample in the per-stage moving averages


def _missing_weights_base() -> type:
    """engine.weights.MissingWeightsError when available (so `except MissingWeightsError` catches us)."""
    try:
        from engine.weights import MissingWeightsError  # noqa: PLC0415 -- light module, no torch

        return MissingWeightsError
    except Exception:  # noqa: BLE001
        return FileNotFoundError


class WeightsMissing(_missing_weights_base()):
    """No network weights installed. `str(exc)` names what is missing and the ONE command that fetches them.

    Attributes: `command` (the download command), `what` (the missing item), `cause` (the engine's error).
    """

    def __init__(self, what: str = "", cause: BaseException | None = None):  # noqa: D107
        Exception.__init__(self, what)
        self.what = what
        self.cause = cause
        self.command = DOWNLOAD_COMMAND
        self.message = (f"network weights are not installed{f' ({what})' if what else ''}; "
                        f"fetch them with: {DOWNLOAD_COMMAND}")

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------------------------------------------------
# Configuration and controls


@dataclass
class EffectConfig:
    """How an `Effect` is built. Every field has a usable default; names resolve through `engine.weights`."""

    generator: str | None = None            # generator name/path; None -> the encoder's decoder, else stylegan2-ffhq
    encoder: str = "restyle-psp-ffhq"       # ReStyle -> temporal live mode; e4e/pSp -> single pass per frame
    directions: tuple = ()                  # direction names (looked up in directions_dir) or file paths;
                                            # () -> every direction file in directions_dir
    directions_dir: str | None = None       # None -> directions.files.default_dir() ($MICROMOTION_HOME/directions)
    device: str = "auto"                    # "auto" | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"                 # "auto" (fp16 on CUDA, fp32 on CPU) | "fp32" | "fp16" | "bf16"
    mode: str = "live"                      # "live" (video rate) | "paper" (ReStyle-pSp x5 from the average, fp32)
    encoder_iters: int | None = None        # live: ReStyle steps per frame (1); paper: iterations (5)
    max_faces: int = 2                      # faces edited per frame (largest first); they are batched
    paste_size: int | None = None           # aligned crop side for paste-back; None -> the rendered resolution
    live_resolution: int | None = 256       # live: render G only up to this size (its skip RGB output, the size a
                                            # webcam face is pasted at); None -> full. Paper mode renders full size
    feather_px: float | None = None         # paste mask feather in crop pixels; None -> stream.face.paste's default
    cuda_graphs: bool = True                # replay the per-frame network work from CUDA graphs (CUDA only)
    compile: bool = False                   # torch.compile the per-frame functions (opt-in)
    smoothing: bool = True                  # One Euro smoothing of the landmarks
    reset_threshold: float = 0.25           # landmark jump (mean displacement / face size) that restarts ReStyle
    min_eye_dist_px: float = 20.0           # faces with eyes closer than this (pixels) are left alone
    profile: bool = False                   # synchronise CUDA at stage boundaries (honest per-stage timings)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not isinstance(self.max_faces, int) or self.max_faces < 1:
            raise ValueError(f"max_faces must be a positive integer, got {self.max_faces!r}")
        if self.encoder_iters is not None and (not isinstance(self.encoder_iters, int) or self.encoder_iters < 1):
            raise ValueError(f"encoder_iters must be a positive integer or None, got {self.encoder_iters!r}")
        lr = self.live_resolution
        if lr is not None and (not isinstance(lr, int) or lr < 8 or lr & (lr - 1)):
            raise ValueError(f"live_resolution must be a power of two >= 8 or None, got {lr!r}")
        if self.paste_size is not None and (not isinstance(self.paste_size, int) or self.paste_size < 16):
            raise ValueError(f"paste_size must be an integer >= 16 or None, got {self.paste_size!r}")
        if isinstance(self.directions, (str, Path)):
            self.directions = (str(self.directions),)
        self.directions = tuple(str(d) for d in self.directions)
        if not (self.reset_threshold > 0):
            raise ValueError(f"reset_threshold must be > 0, got {self.reset_threshold!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Controls:
    """What the user turns, per frame. JSON-friendly (`from_dict` / `to_dict`).

    directions: direction name -> alpha (strength; several are mixed: w' = w + sum alpha_i * t * delta_i).
    animate:    True -> t sweeps 0 -> 1 -> 0 every `period_s` seconds (triangle wave); False -> t is held.
    period_s:   animation period in seconds (> 0).
    t:          held value of t in [0, 1] when not animating.
    enabled:    False -> frames pass through unchanged.
    paste_mode: "residual" (real crop + G(w') - G(w): keeps the person's own pixels) or "replace" (G(w')).
    """

    directions: dict = field(default_factory=dict)
    animate: bool = False
    period_s: float = 2.0
    t: float = 1.0
    enabled: bool = True
    paste_mode: str = "residual"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], available: Sequence[str] | None = None) -> "Controls":
        """Validated controls from a JSON-like mapping; unknown keys/directions -> one-line ValueError.

        available: the direction names the effect has (`Effect.available_directions`); None skips that check.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"controls must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown control(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(known))}")
        controls = cls(**{k: data[k] for k in known if k in data})
        controls.validate(available)
        return controls

    def validate(self, available: Sequence[str] | None = None) -> "Controls":
        """Check types and ranges in place (normalising numbers to float); returns self."""
        if not isinstance(self.directions, Mapping):
            raise ValueError(f"directions must be an object of name -> alpha, got {type(self.directions).__name__}")
        clean = {}
        for name, alpha in self.directions.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"direction names must be non-empty strings, got {name!r}")
            clean[name] = _finite("alpha of " + repr(name), alpha, -MAX_ALPHA, MAX_ALPHA)
        if available is not None:
            missing = sorted(set(clean) - set(available))
            if missing:
                have = ", ".join(sorted(available)) or "none installed"
                raise ValueError(f"unknown direction(s) {', '.join(map(repr, missing))}; available: {have}")
        self.directions = clean
        for name in ("animate", "enabled"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self.period_s = _finite("period_s", self.period_s, 1e-3, 3600.0)
        self.t = _finite("t", self.t, 0.0, 1.0)
        if self.paste_mode not in PASTE_MODES:
            raise ValueError(f"unknown paste_mode {self.paste_mode!r}; use one of {', '.join(PASTE_MODES)}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(what: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{what} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return value


def animation_t(controls: Controls, elapsed_s: float) -> float:
    """t for the controls at `elapsed_s` seconds since the stream started: triangle 0 -> 1 -> 0, or held."""
    if not controls.animate:
        return float(controls.t)
    phase = (elapsed_s / controls.period_s) % 1.0
    return float(1.0 - abs(2.0 * phase - 1.0))


# ---------------------------------------------------------------------------------------------------------------------
# Per-stream state


class FaceMemory:
    """What a stream remembers of one tracked face between frames (temporal ReStyle)."""

    def __init__(self, raw: np.ndarray):
        self.raw = raw      # float32 [478, 2] landmarks as detected last frame (jump detection)
        self.ws = None      # torch [num_ws, w_dim] float32 on the device (None -> start from the average)
        self.recon = None   # torch [3, S, S] pool(G(ws)) in the network dtype


class StreamState:
    """Everything one stream owns: face tracker (landmarker + smoothers), latents per face, animation clock,
    counters. Make one with `Effect.new_state()` per camera / browser peer.

    clock: seconds (monotonic); tests pass a fake clock to drive the animation and the smoothing.
    Counters (`stats()`): frames, edited, no_face, disabled, errors (total and per kind), faces,
    resets (temporal ReStyle restarts after a jump), stage_ms (moving averages) and last_ms.
    """

    def __init__(self, tracker=None, clock: Callable[[], float] = time.monotonic):
        self.tracker = tracker
        self.clock = clock
        self.t0: float | None = None
        self.memory: dict[int, FaceMemory] = {}
        self.frames = 0
        self.edited = 0
        self.no_face = 0
        self.disabled = 0
        self.resets = 0
        self.errors: Counter = Counter()
        self.stage_ms: dict[str, float] = {}
        self.last_ms: dict[str, float] = {}
        self.last_t = 0.0

    def elapsed(self) -> float:
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        return now - self.t0

    def record(self, stage: str, ms: float) -> None:
        self.last_ms[stage] = ms
        prev = self.stage_ms.get(stage)
        self.stage_ms[stage] = ms if prev is None else (1 - _EMA) * prev + _EMA * ms

    def reset(self) -> None:
        """Forget faces and latents (e.g. on a scene cut); counters stay."""
        self.memory = {}
        if self.tracker is not None and hasattr(self.tracker, "reset"):
            self.tracker.reset()

    def stats(self) -> dict:
        return {
            "frames": self.frames,
            "edited": self.edited,
            "no_face": self.no_face,
            "disabled": self.disabled,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "faces": len(self.memory),
            "resets": self.resets,
            "t": self.last_t,
            "stage_ms": dict(self.stage_ms),
            "last_ms": dict(self.last_ms),
        }

    def close(self) -> None:
        """Release the tracker and its landmarker (MediaPipe graph)."""
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            if hasattr(tracker, "close"):
                tracker.close()
            landmarker = getattr(tracker, "landmarker", None)
            if landmarker is not None and hasattr(landmarker, "close"):
                landmarker.close()


class TimedLandmarker:
    """Wraps a landmarker; remembers how long its last `detect` took (ms) so stages can be told apart."""

    def __init__(self, inner):
        self.inner = inner
        self.last_ms: float | None = None

    def detect(self, frame_bgr: np.ndarray) -> list:
        t0 = time.perf_counter()
        try:
            return self.inner.detect(frame_bgr)
        finally:
            self.last_ms = (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


def _face_size(lm: np.ndarray) -> float:
    span = lm.max(0) - lm.min(0)
    return float(max(span.max(), 1.0))


def landmark_jump(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean landmark displacement between two frames, in face sizes (0 = still; ~1 = moved by a whole face)."""
    if previous.shape != current.shape:
        return float("inf")
    return float(np.linalg.norm(current - previous, axis=1).mean()) / _face_size(current)


# ---------------------------------------------------------------------------------------------------------------------
# Tensor helpers (graph-capturable: no host sync, no data-dependent shapes)


def _crops_to_input(crops_u8, size: int, dtype):
    """uint8 [N, S, S, 3] BGR -> float [N, 3, size, size] RGB in [-1, 1] (area resize when S > size)."""
    import torch.nn.functional as F  # noqa: PLC0415

    x = crops_u8.permute(0, 3, 1, 2).flip(1).to(dtype) / 127.5 - 1.0
    if x.shape[-1] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return x


def _images_to_u8(img, size: int):
    """float [N, 3, R, R] RGB in [-1, 1] -> uint8 [N, size, size, 3] BGR (area/bilinear resize to `size`)."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    if img.shape[-1] != size:
        mode = "area" if img.shape[-1] > size else "bilinear"
        img = F.interpolate(img, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    img = ((img.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return img.to(torch.uint8).flip(1).permute(0, 2, 3, 1).contiguous()


# ---------------------------------------------------------------------------------------------------------------------
# The effect


class Effect:
    """The micromotion frame function. Thread-safe: several streams (each with its own `StreamState`) may call
    `process` concurrently; the network work is serialised by a lock.

    Build with `Effect(config)` (loads everything; `WeightsMissing` when no weights are installed), or inject
    ready modules for tests and benchmarks: `Effect(config, generator=G, encoder=E, directions={...},
    landmarker_factory=...)`. Injected modules are prepared in place (eval, device, precision).
    Per stream: `state = effect.new_state()`, then `effect.process(frame, controls, state)` for each frame.
    """

    def __init__(
        self,
        config: EffectConfig | None = None,
        *,
        generator=None,                                   # a Generator (else loaded from config.generator)
        encoder=None,                                     # an Encoder (else loaded from config.encoder)
        directions=None,                                  # {name: delta [num_ws,w_dim]} or [Direction]; else files
        landmarker_factory: Callable[[], Any] | None = None,  # () -> object with detect(frame) -> [[478,2]];
                                                              # None -> stream.face.landmarks.FaceMeshLandmarker
    ):
        from engine.runtime import PinnedTransfer, Precision, resolve_device  # noqa: PLC0415

        self.config = config = config or EffectConfig()
        self.device = resolve_device(config.device)
        self.paper = config.mode == "paper"
        # Paper mode is the reference: fp32, eager, no graphs.
        self.precision = Precision.resolve("fp32" if self.paper else config.precision, self.device)
        self._landmarker_factory = landmarker_factory
        self.notice: str | None = None
        self._lock = threading.Lock()
        self._logged: set = set()
        self._default_state: StreamState | None = None
        self.stats = {"frames": 0, "edited": 0, "errors": 0, "errors_by_kind": Counter()}
        self.G = self.E = None
        self.deltas = None
        self._names: list[str] = []
        self._direction_meta: dict[str, dict] = {}   # name -> the direction file's metadata (if any)
        self.paste_size = config.paste_size or 256
        if generator is None and encoder is None and directions is None and getattr(self, "_tracking_only", False):
            return
        self._load(generator, encoder, directions)
        self._transfer = PinnedTransfer(self.device)
        self._build_runners()

    # ------------------------------------------------------------------ construction
    @classmethod
    def tracking_only(cls, config: EffectConfig | None = None, reason: str | None = None,
                      landmarker_factory: Callable[[], Any] | None = None) -> "Effect":
        """An effect without networks: it draws the tracked face (landmarks + oval) and says what is missing.

        Front ends use it when `Effect(config)` raised `WeightsMissing`, so they still start.
        """
        self = cls.__new__(cls)
        self._tracking_only = True
        cls.__init__(self, config, landmarker_factory=landmarker_factory)
        self.notice = reason or f"weights missing: {DOWNLOAD_COMMAND}"
        return self

    @classmethod
    def create(cls, config: EffectConfig | None = None, **kwargs) -> "Effect":
        """`Effect(config)`, or `Effect.tracking_only` (with `.notice` holding the command) when weights are missing."""
        try:
            return cls(config, **kwargs)
        except WeightsMissing as exc:
            log.warning("%s -- running face tracking only", exc)
            return cls.tracking_only(config, reason=str(exc), landmarker_factory=kwargs.get("landmarker_factory"))

    @property
    def is_tracking_only(self) -> bool:
        return self.G is None

    @property
    def available_directions(self) -> list[str]:
        """Names accepted in `Controls.directions`."""
        return list(self._names)

    def direction_info(self) -> dict[str, dict]:
        """Read-only hints per loaded direction, from its file's metadata: {name: {"alpha_range": [lo, hi] or
        None, "alpha_default": float or None, "method": str or None}}. Directions given as bare tensors have
        all three None; tracking-only -> {}. A UI hint only: `Controls` accepts any |alpha| <= MAX_ALPHA."""
        out = {}
        for name in self._names:
            meta = self._direction_meta.get(name, {})
            lo_hi = meta.get("alpha_range")
            default = meta.get("alpha_default")
            out[name] = {
                "alpha_range": [float(v) for v in lo_hi] if isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi) else None,
                "alpha_default": float(default) if isinstance(default, (int, float))
                and not isinstance(default, bool) else None,
                "method": meta.get("method") if isinstance(meta.get("method"), str) else None,
            }
        return out

    def new_tracker(self):
        """A per-stream `stream.face.tracking.FaceTracker` (landmarker, One Euro smoothing, alignment at paste size)."""
        from stream.face.tracking import FaceTracker  # noqa: PLC0415

        cfg = self.config
        if self._landmarker_factory is not None:
            landmarker = self._landmarker_factory()
        else:
            from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415

            landmarker = FaceMeshLandmarker(max_faces=cfg.max_faces, video_mode=True)
        return FaceTracker(
            max_faces=cfg.max_faces,
            align_size=self.paste_size,
            min_eye_dist_px=cfg.min_eye_dist_px,
            smooth=cfg.smoothing,
            landmarker=TimedLandmarker(landmarker),
        )

    def new_state(self, clock: Callable[[], float] = time.monotonic) -> StreamState:
        """A fresh per-stream state (its own face tracker and latents): one per camera / browser peer."""
        return StreamState(tracker=self.new_tracker(), clock=clock)

    def _load(self, generator, encoder, directions) -> None:
        from engine.runtime import prepare  # noqa: PLC0415

        cfg = self.config
        E = encoder if encoder is not None else _load_network("encoder", cfg.encoder, self.device)
        G = generator
        if G is None:
            G = getattr(E, "decoder", None) if cfg.generator is None else None
            if G is None:
                G = _load_network("generator", cfg.generator or "stylegan2-ffhq", self.device)
        if (G.num_ws, G.w_dim) != (E.num_ws, E.w_dim):
            raise ValueError(f"encoder makes W+ [{E.num_ws}, {E.w_dim}] but the generator takes "
                             f"[{G.num_ws}, {G.w_dim}]; use an encoder trained for this generator")
        if self.paper and E.kind != "restyle_psp":
            log.warning("paper mode is defined with ReStyle-pSp; running it with a %s encoder", E.kind)
        self.E = prepare(E, self.device, self.precision)
        self.G = G if getattr(E, "decoder", None) is G else prepare(G, self.device, self.precision)
        self.num_ws, self.w_dim = G.num_ws, G.w_dim
        self.resolution = G.resolution
        live_res = None if self.paper else cfg.live_resolution
        self.render_resolution = min(live_res, G.resolution) if live_res else G.resolution
        self.paste_size = cfg.paste_size or self.render_resolution  # the trackers align at this size
        self.restyle = E.kind.startswith("restyle")
        if self.paper:
            self.iters = cfg.encoder_iters or (PAPER_ITERS if self.restyle else 1)
        else:
            self.iters = cfg.encoder_iters or 1
        if not self.restyle:
            self.iters = 1
        self._load_directions(directions)
        import torch  # noqa: PLC0415

        with torch.no_grad():
            self._avg_ws = E.latent_avg.detach().float().to(self.device).reshape(self.num_ws, self.w_dim)
            self._avg_img = E.average_image()[0].detach() if self.restyle else None

    def _load_directions(self, directions) -> None:
        import torch  # noqa: PLC0415

        items: list[tuple[str, Any]] = []
        if directions is None:
            directions = _load_direction_files(self.config, self.G)
        if isinstance(directions, Mapping):
            items = list(directions.items())
        else:
            items = [(d.name, d.delta) for d in directions]
            self._direction_meta = {str(d.name): dict(getattr(d, "meta", None) or {}) for d in directions}
        names, deltas = [], []
        for name, delta in items:
            delta = torch.as_tensor(delta).detach().float()
            if delta.numel() == self.w_dim:
                delta = delta.reshape(1, self.w_dim).expand(self.num_ws, self.w_dim)
            if delta.numel() != self.num_ws * self.w_dim:
                raise ValueError(f"direction {name!r} has shape {list(delta.shape)}; this generator needs "
                                 f"[{self.num_ws}, {self.w_dim}] (num_ws, w_dim)")
            if name in names:
                raise ValueError(f"two directions are named {name!r}; rename one of the files")
            names.append(str(name))
            deltas.append(delta.reshape(self.num_ws, self.w_dim))
        if not deltas:  # keep the batch shapes fixed: one all-zero direction nobody can select
            deltas = [torch.zeros(self.num_ws, self.w_dim)]
        self._names = names
        self.deltas = torch.stack(deltas).to(self.device)  # [K, num_ws, w_dim] float32

    def _build_runners(self) -> None:
        from engine.runtime import CudaGraphRunner, maybe_compile  # noqa: PLC0415

        graphs = self.config.cuda_graphs and not self.paper and self.device.type == "cuda"
        comp = self.config.compile and not self.paper
        self._encode_runner = CudaGraphRunner(maybe_compile(self._encode_step, comp), enabled=graphs,
                                              name="encode")
        self._synth_runners = {
            need_base: CudaGraphRunner(maybe_compile(self._make_synth(need_base), comp), enabled=graphs,
                                       name=f"synth{'+base' if need_base else ''}")
            for need_base in (False, True)
        }

    # ------------------------------------------------------------------ network work (tensor-only)
    def _encode_step(self, crops_u8, ws_prev, recon_prev):
        """Live: uint8 crops [N,S,S,3] BGR + previous (ws [N,num_ws,w_dim] f32, recon [N,3,s,s]) -> ws f32.

        ReStyle: one step, ws_prev + E.encoder(image ⊕ recon_prev). Single-pass encoders ignore ws/recon.
        """
        import torch  # noqa: PLC0415

        dtype = self._net_dtype(self.E)
        x = _crops_to_input(crops_u8, self.E.input_size, dtype)
        if not self.restyle:
            return self.E(x).float()
        codes = self.E.encoder(torch.cat([x, recon_prev.to(dtype)], dim=1))
        return ws_prev + codes.float()

    def _make_synth(self, need_base: bool):
        """The generate function: (ws f32 [N,num_ws,w_dim], coef f32 [K]) -> (edit u8, base u8 or edit, recon)."""
        import torch  # noqa: PLC0415

        def synth(ws, coef):
            n = ws.shape[0]
            offset = torch.einsum("k,kij->ij", coef, self.deltas)
            ws_edit = ws + offset[None]
            batch = torch.cat([ws, ws_edit]) if need_base else ws_edit
            img = self.G(batch.to(self._net_dtype(self.G)), out_resolution=self.render_resolution)
            out = _images_to_u8(img, self.paste_size)
            if need_base:
                recon = self.E.pool(img[:n]) if self.restyle else img[:n, :, :1, :1]
                return out[n:], out[:n], recon
            return out, out, img[:, :, :1, :1]

        synth.__name__ = f"synth{'_base' if need_base else ''}"
        return synth

    @staticmethod
    def _net_dtype(module):
        return next(module.parameters()).dtype

    # ------------------------------------------------------------------ the frame function
    def process(self, frame_bgr: np.ndarray, controls: Controls | Mapping | None = None,
                state: StreamState | None = None) -> np.ndarray:
        """Apply the controls' micromotions to every face in the frame.

        frame_bgr: uint8 [H, W, 3] BGR. Returns a uint8 array of the same shape: a new array when a face was
        edited; the input object itself when nothing was done (no face, disabled) or when the frame failed
        (the exception is counted in `state.errors` / `effect.stats` and logged once per kind).
        Raises ValueError only for a frame that is not uint8 [H, W, 3] or invalid controls.
        """
        frame_bgr = _check_frame(frame_bgr)
        if controls is None:
            controls = Controls()
        elif isinstance(controls, Mapping):
            controls = Controls.from_dict(controls, self.available_directions if not self.is_tracking_only else None)
        if state is None:
            if self._default_state is None:
                self._default_state = self.new_state()
            state = self._default_state
        state.frames += 1
        self.stats["frames"] += 1
        if not controls.enabled:
            state.disabled += 1
            return frame_bgr
        try:
            out = self._process(frame_bgr, controls, state)
        except Exception as exc:  # noqa: BLE001 -- one bad frame must not end the stream
            self._count_error(exc, state)
            return frame_bgr
        if out is not frame_bgr:
            state.edited += 1
            self.stats["edited"] += 1
        return out

    def _count_error(self, exc: BaseException, state: StreamState) -> None:
        head = (str(exc).splitlines() or [""])[0][:80]
        kind = f"{type(exc).__name__}: {head}"
        state.errors[kind] += 1
        self.stats["errors"] += 1
        self.stats["errors_by_kind"][kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("frame passed through unchanged after %s (logged once per kind; counted in stats)", kind,
                      exc_info=exc)

    def _timed(self, state: StreamState, stage: str, t_start: float) -> float:
        if self.config.profile:
            from engine.runtime import synchronize  # noqa: PLC0415

            synchronize(self.device)
        now = time.perf_counter()
        state.record(stage, (now - t_start) * 1e3)
        return now

    def _process(self, frame: np.ndarray, controls: Controls, state: StreamState) -> np.ndarray:
        t0 = time.perf_counter()
        if state.tracker is None:
            state.tracker = self.new_tracker()
        faces = state.tracker.track(frame, state.clock())
        faces = sorted(faces, key=lambda f: _face_size(f.landmarks), reverse=True)[: self.config.max_faces]
        detect_ms = getattr(getattr(state.tracker, "landmarker", None), "last_ms", None)
        t1 = time.perf_counter()
        if detect_ms is None:  # a tracker without a timed landmarker: all of it counts as landmarks
            t0 = self._timed(state, "landmarks", t0)
        else:  # tracker = detection (landmarks) + smoothing and the FFHQ warp of each face (align)
            state.record("landmarks", detect_ms)
            t0 = t1 - max((t1 - t0) - detect_ms / 1e3, 0.0)
        state.last_t = t = animation_t(controls, state.elapsed())
        if not faces:
            state.no_face += 1
            state.memory = {}
            return frame
        if self.is_tracking_only:
            return self._draw_tracking(frame, faces)
        unknown = set(controls.directions) - set(self._names)
        if unknown:
            raise ValueError(f"unknown direction(s) {sorted(unknown)}; available: {self._names}")
        memories = self._remember(faces, state)
        aligned = [f.aligned for f in faces]
        crops = np.stack([a.crop for a in aligned])
        t0 = self._timed(state, "align", t0)
        need_base = controls.paste_mode == "residual" or (self.restyle and not self.paper)
        with self._lock:
            edit_u8, base_u8 = self._run_networks(crops, memories, controls, t, need_base, state, t0)
        t0 = time.perf_counter()
        out = self._paste(frame, aligned, edit_u8, base_u8, controls.paste_mode)
        self._timed(state, "paste", t0)
        return out

    def _remember(self, faces: list, state: StreamState) -> list[FaceMemory]:
        """The memory of each face (new faces and faces that jumped start over); lost faces are forgotten."""
        memory = {}
        for f in faces:
            mem = state.memory.get(f.track_id)
            raw = np.asarray(f.raw_landmarks, dtype=np.float32)
            if mem is not None and landmark_jump(mem.raw, raw) > self.config.reset_threshold:
                state.resets += 1
                mem = None
            if mem is None:
                mem = FaceMemory(raw)
            mem.raw = raw
            memory[f.track_id] = mem
        state.memory = memory
        return [memory[f.track_id] for f in faces]

    def _run_networks(self, crops: np.ndarray, memories: list[FaceMemory], controls: Controls, t: float,
                      need_base: bool, state: StreamState, t0: float):
        import torch  # noqa: PLC0415

        with torch.inference_mode():
            crops_d = self._transfer.to_device(crops)
            if self.paper:
                x = _crops_to_input(crops_d, self.E.input_size, self._net_dtype(self.E))
                ws = self.E(x, n_iters=self.iters if self.restyle else None).float()
            else:
                ws_prev, recon_prev = self._previous(memories)
                ws = self._encode_runner(crops_d, ws_prev, recon_prev)
            t0 = self._timed(state, "encode", t0)
            coef = np.zeros(self.deltas.shape[0], dtype=np.float32)
            for name, alpha in controls.directions.items():
                coef[self._names.index(name)] = alpha * t
            edit, base, recon = self._synth_runners[need_base](ws, self._transfer.to_device(coef))
            if self.restyle and not self.paper:
                for i, mem in enumerate(memories):
                    mem.ws = ws[i].clone()
                    mem.recon = recon[i].clone()
            edit_u8 = self._transfer.to_host(edit)
            base_u8 = self._transfer.to_host(base) if need_base else None
            self._timed(state, "generate", t0)
        return edit_u8, base_u8

    def _previous(self, memories: list[FaceMemory]):
        """Stacked previous (ws, recon) per face; faces without history start from (latent_avg, average image)."""
        import torch  # noqa: PLC0415

        n = len(memories)
        if not self.restyle:
            return self._avg_ws.expand(n, -1, -1), self._avg_ws[:1, :1].expand(n, -1)
        ws = torch.stack([m.ws if m.ws is not None else self._avg_ws for m in memories])
        recon = torch.stack([m.recon if m.recon is not None else self._avg_img for m in memories])
        return ws, recon

    def _paste(self, frame, aligned, edit_u8, base_u8, mode: str) -> np.ndarray:
        from stream.face.paste import MASK_WORK_SIZE, face_mask, paste_back  # noqa: PLC0415

        out = frame
        feather = self.config.feather_px
        for i, a in enumerate(aligned):
            # The mask is drawn at <= MASK_WORK_SIZE anyway and paste_back warps a mask of any side, so it is not
            # resized up to the crop; feather_px is in crop pixels, hence rescaled to the mask's side.
            size = min(a.size, MASK_WORK_SIZE)
            mask = face_mask(a, size, feather_px=None if feather is None else feather * size / a.size)
            out = paste_back(out, edit_u8[i], a, mask=mask, mode=mode,
                             base_crop=None if base_u8 is None else base_u8[i],
                             inplace=out is not frame)  # the first face copies the frame, the others reuse it
        return out

    def _draw_tracking(self, frame: np.ndarray, faces: list) -> np.ndarray:
        """Tracking-only output: landmarks, the face hull, and the notice (what is missing, the command)."""
        import cv2  # noqa: PLC0415

        out = frame.copy()
        for tr in faces:
            pts = np.round(tr.landmarks).astype(np.int32)
            hull = cv2.convexHull(pts)
            cv2.polylines(out, [hull], True, (0, 255, 0), 2, cv2.LINE_AA)
            for x, y in pts[::4]:
                cv2.circle(out, (int(x), int(y)), 1, (0, 200, 255), -1)
        if self.notice:
            _put_text(out, self.notice.split(";")[-1].strip(), (8, out.shape[0] - 10))
        return out

    def close(self) -> None:
        if self._default_state is not None:
            self._default_state.close()


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _check_frame(frame) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame must be a uint8 [H, W, 3] BGR array, got {got}; convert it with cv2.cvtColor")
    return frame


def _put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5) -> None:
    import cv2  # noqa: PLC0415

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _load_network(what: str, name: str, device) -> Any:
    """engine.load_generator / load_encoder, with missing weights turned into `WeightsMissing`."""
    from engine import checkpoints  # noqa: PLC0415

    loader = checkpoints.load_generator if what == "generator" else checkpoints.load_encoder
    try:
        return loader(name, device=device)
    except FileNotFoundError as exc:
        if type(exc).__name__ == "MissingWeightsError":  # a known name, not downloaded yet
            raise WeightsMissing(f"{what} {name}", cause=exc) from exc
        raise  # an unknown name or a missing path: its own message says what to pass


def _load_direction_files(config: EffectConfig, G) -> list:
    """Directions named in the config (names in directions_dir, or paths), or every file in directions_dir.

    A named direction that cannot be used (unreadable, made for another generator) is an error; a file found by
    listing the folder is skipped with a warning, so one stray file does not take every direction away.
    """
    from directions import files  # noqa: PLC0415

    folder = Path(config.directions_dir) if config.directions_dir else Path(files.default_dir())
    if config.directions:
        paths = []
        for item in config.directions:
            p = Path(item).expanduser()
            paths.append(p if p.is_file() else Path(files.find_direction(item, [folder])))
    else:
        listed = files.list_directions(folder) if folder.is_dir() else []
        paths = [Path(getattr(x, "path", x)) for x in listed]
    named = bool(config.directions)
    out = []
    for p in paths:
        try:
            d = files.load(p)
            check = getattr(d, "check_compatible", None)
            if check is not None:
                check(G.num_ws, G.w_dim, generator_sha256=getattr(G, "source_sha256", None))
        except Exception as exc:  # noqa: BLE001 -- a stray file in the folder must not stop the effect
            if named:  # the user asked for this one: say why it cannot be used
                raise
            log.warning("skipping direction file %s: %s", p, exc)
            continue
        out.append(d)
    return out


__all__ = [
    "DOWNLOAD_COMMAND",
    "Controls",
    "Effect",
    "EffectConfig",
    "StreamState",
    "WeightsMissing",
    "animation_t",
    "landmark_jump",
]
