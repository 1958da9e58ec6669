"""The effect's options, defined ONCE: `EffectConfig` and the command-line flags every door accepts.

`add_effect_arguments(parser)` adds the same flags (with the same help and defaults) to `python -m stream`,
`python -m web` and `python -m web.gradio`; `config_from_args(args)` turns them into an `EffectConfig`.
Door-only flags (host, port, input file, ...) stay in each door.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from stream.controls import PASTE_MODES

MODES = ("live", "paper")
ALIGNERS = ("dlib68", "mediapipe")     # = stream.face.tracking.ALIGNERS (kept light: no face import here)
SERVE_CHOICES = ("local", "ray")   # where the editor runs: in this process, or as a Ray Serve deployment
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
# How old an edit may be and still be re-pasted on the current frame, per device type (ms). CPU, measured (README
# "What a CPU user sees"; python -m stream.bench_streams --config full, 2 cores): one camera's full-size edit is
# 1.7 s old when it arrives and 3.4 s old when the next replaces it, so 4 s keeps one stream's edit on screen
# (a 3 s bound showed it on 81-85 % of frames); older than that, the expression lags too much to show. CUDA: not
# measured here (no GPU was lent): an edit pass takes tens of ms there, so 0.5 s covers a few refresh periods even
# with many streams batched; tools/gpu_check.sh reports max_edit_age_ms to revisit it.
DEFAULT_STALENESS_MS = {"cuda": 500.0, "cpu": 4000.0}


@dataclass
class EffectConfig:
    """How the effect is built and run. Every field has a usable default; names resolve through `engine.weights`."""

    generator: str | None = None            # generator name/path; None -> the encoder's decoder, else stylegan2-ffhq
    encoder: str = "restyle-psp-ffhq"       # ReStyle -> temporal live mode; e4e/pSp -> single pass per frame
    directions: tuple = ()                  # direction names (in directions_dir) or file paths; () -> every file
    directions_dir: str | None = None       # None -> directions.files.default_dir() ($MICROMOTION_HOME/directions)
    device: str = "auto"                    # "auto" | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"                 # "auto" (fp16 on CUDA; engine.runtime decides on CPU) | fp32 | fp16 | bf16
    mode: str = "live"                      # "live" (video rate) | "paper" (ReStyle-pSp x5 from the average, fp32)
    encoder_iters: int | None = None        # live: ReStyle steps per frame (1); paper: iterations (5)
    max_faces: int = 2                      # faces edited per frame (largest first); they are batched
    paste_mode: str = "residual"            # the controls' starting paste mode: residual | replace
    paste_size: int | None = None           # aligned crop side for paste-back; None -> the rendered resolution
    live_resolution: int | None = 256       # live: render G only up to this size (its skip RGB output); None -> full
    feather_px: float | None = None         # paste mask feather in crop pixels; None -> stream.face.paste's default
    cuda_graphs: bool = True                # replay the network pass from CUDA graphs (CUDA only), per batch bucket
    compile: bool = False                   # torch.compile the network pass (opt-in)
    smoothing: bool = True                  # One Euro smoothing of the landmarks
    aligner: str | None = None              # landmarks that place the FFHQ crop: "dlib68" (the encoders' training
                                            # recipe, on MediaPipe's box) | "mediapipe" (MediaPipe's own quad);
                                            # None -> `aligner_for(device)`
    reset_threshold: float = 0.25           # landmark jump (mean displacement / face size) that restarts a face
    min_eye_dist_px: float = 20.0           # faces with eyes closer than this (pixels) are left alone ("too small")
    gather_ms: float = 4.0                  # editor: wait this long after the first waiting face to batch others
    max_batch: int = 8                      # editor: most faces in one network pass (all streams together)
    staleness_ms: float | None = None       # re-paste an edit up to this age (ms); None -> DEFAULT_STALENESS_MS
    tracking_only: bool = False             # no networks: track and draw the face only
    demo: bool = False                      # no networks: tint faces by direction (stream.demo.TintEditor)
    profile: bool = False                   # synchronise CUDA at stage boundaries (honest per-stage timings)
    serve: str = "local"                    # the editor: "local" (in this process) | "ray" (Ray Serve replicas)
    ray_address: str = "auto"               # ray: "auto" (this machine's cluster) | "ray://HOST:PORT" | HOST:PORT |
                                            #      "local" (a private Ray on 127.0.0.1, started and stopped here)
    ray_app: str = "micromotion"            # ray: the Serve application; used when running, else deployed from here
    replicas: int = 1                       # ray, when deploying from here: editor replicas
    gpus_per_replica: float | None = None   # ray, when deploying from here: None -> 1 if the cluster has GPUs, else 0
    cpus_per_replica: float = 1.0           # ray, when deploying from here: CPU cores reserved per replica

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.aligner is not None and self.aligner not in ALIGNERS:
            raise ValueError(f"unknown aligner {self.aligner!r}; use one of {', '.join(ALIGNERS)}")
        if self.paste_mode not in PASTE_MODES:
            raise ValueError(f"unknown paste mode {self.paste_mode!r}; use one of {', '.join(PASTE_MODES)}")
        for name in ("max_faces", "max_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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
        if not self.reset_threshold > 0:
            raise ValueError(f"reset_threshold must be > 0, got {self.reset_threshold!r}")
        if not 0 <= self.gather_ms <= 1000:
            raise ValueError(f"gather_ms must be in [0, 1000], got {self.gather_ms!r}")
        if self.staleness_ms is not None and not self.staleness_ms >= 0:
            raise ValueError(f"staleness_ms must be >= 0 (0: never re-paste an old edit), got {self.staleness_ms!r}")
        check_serving(self)

    @property
    def remote(self) -> bool:
        """True when the networks run in Ray Serve replicas, not in this process (stand-ins stay here)."""
        return self.serve == "ray" and not self.tracking_only

    def staleness_for(self, device_type: str) -> float:
        """The staleness bound in ms for a device type ("cpu", "cuda"): the configured one, else the default."""
        if self.staleness_ms is not None:
            return float(self.staleness_ms)
        return DEFAULT_STALENESS_MS.get(device_type, DEFAULT_STALENESS_MS["cpu"])

    def aligner_for(self, device_type: str, offline: bool = False) -> str:
        """The crop aligner: the configured one; else dlib68 (the crops the encoders were trained on), except live
        streams (not `offline`: a file or photo job, whose frames wait for their edits) in live mode with the
        networks on the CPU, where dlib's +8 ms per face per frame competes with them for the same
        cores (measured on 2 cores: tracking 13.1 vs 4.9 ms per 640x480 frame; 4 cameras hold 30 fps with MediaPipe's
        quad, 20 fps with dlib's) -- there MediaPipe's own quad (0.84 % vs 1.70 % of the side from the official quad
        on clips: README "Alignment")."""
        if self.aligner is not None:
            return self.aligner
        return "mediapipe" if device_type == "cpu" and self.mode == "live" and not offline else "dlib68"

    def to_dict(self) -> dict:
        return asdict(self)


def add_effect_arguments(parser: argparse.ArgumentParser) -> None:
    """The effect flags every door accepts (same names, help and defaults everywhere)."""
    g = parser.add_argument_group("effect (the same flags in every door)")
    g.add_argument("--generator", default=None,
                   help="generator weights: a name from `python -m engine.weights list` or a file "
                        "(default: the encoder's own decoder, else stylegan2-ffhq)")
    g.add_argument("--encoder", default=None, help="encoder weights: a name or a file (default restyle-psp-ffhq)")
    g.add_argument("--direction", action="append", default=None, metavar="NAME_OR_FILE",
                   help="load this direction (repeatable; a name in the directions folder or a file; "
                        "default: every file in the folder)")
    g.add_argument("--directions-dir", default=None,
                   help="folder of direction files (default: $MICROMOTION_HOME/directions)")
    g.add_argument("--device", default=None, help="torch device: auto, cpu, cuda, cuda:N (default auto)")
    g.add_argument("--precision", default=None, choices=PRECISION_CHOICES,
                   help="network precision (default auto: fp16 on CUDA; see engine.runtime for CPU)")
    g.add_argument("--mode", default=None, choices=MODES,
                   help="live: one temporal ReStyle step per frame (video rate); paper: ReStyle-pSp, 5 iterations "
                        "from the average latent, fp32 -- the paper's inversion, slow (default live)")
    g.add_argument("--paste-mode", default=None, choices=PASTE_MODES,
                   help="residual: your own face + G(w') - G(w) (keeps skin and light); replace: paste G(w') "
                        "(default residual)")
    g.add_argument("--max-faces", type=int, default=None, help="faces edited per frame, largest first (default 2)")
    g.add_argument("--aligner", default=None, choices=ALIGNERS,
                   help="dlib68: dlib's 68 points place the crop as the encoders were trained; mediapipe: MediaPipe's "
                        "own points, ~8 ms less CPU per face and frame (default: dlib68, except live mode with the "
                        "networks on the CPU)")
    g.add_argument("--live-resolution", type=int, default=None,
                   help="live mode renders the generator up to this size, the size faces are pasted at "
                        "(default 256; 512 or 1024 for large faces in HD video)")
    g.add_argument("--overlay", action="store_true",
                   help="draw the status line (state, fps, edit age) on the output frames")
    g.add_argument("--gather-ms", type=float, default=None,
                   help="editor: after the first waiting face, wait this long for faces of other streams to batch "
                        "(default 4)")
    g.add_argument("--max-batch", type=int, default=None, help="editor: most faces in one network pass (default 8)")
    g.add_argument("--staleness-ms", type=float, default=None,
                   help="show an edit on later frames (moved with the head) until it is this old; older -> the "
                        f"frame passes through (default {DEFAULT_STALENESS_MS['cuda']:g} on CUDA, "
                        f"{DEFAULT_STALENESS_MS['cpu']:g} on CPU)")
    g.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", default=None,
                   help="run the networks eagerly on CUDA (default: replay CUDA graphs)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the network pass")
    g.add_argument("--tracking-only", action="store_true", default=None,
                   help="no networks: show the face tracking only")
    g.add_argument("--demo", action="store_true", default=None,
                   help="no networks: tint each face by a colour per direction (the whole live path, no weights)")
    g.add_argument("--serve", default=None, choices=SERVE_CHOICES,
                   help="where the editor's networks run: local (in this process, default) or ray (a Ray Serve "
                        "deployment of GPU replicas batching faces across streams; README \"Scaling out with Ray "
                        "Serve\")")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="--serve ray: the cluster: auto (the one this machine belongs to, default), "
                        "ray://HOST:PORT (Ray Client), HOST:PORT, or local (a private Ray on 127.0.0.1)")
    g.add_argument("--ray-app", default=None, metavar="NAME",
                   help="--serve ray: the Serve application to use (default micromotion); deployed from these "
                        "flags when it is not running")
    g.add_argument("--replicas", type=int, default=None,
                   help="--serve ray, when deploying: editor replicas (default 1)")
    g.add_argument("--gpus-per-replica", type=float, default=None,
                   help="--serve ray, when deploying: GPUs per replica, e.g. 0.5 for two replicas per GPU "
                        "(default 1 when the cluster has GPUs, else 0)")
    g.add_argument("--cpus-per-replica", type=float, default=None,
                   help="--serve ray, when deploying: CPU cores reserved per replica (default 1)")


def check_serving(config: EffectConfig) -> None:
    """One-line ValueError for serving options that cannot work."""
    if config.serve not in SERVE_CHOICES:
        raise ValueError(f"unknown --serve {config.serve!r}; use one of {', '.join(SERVE_CHOICES)}")
    if not isinstance(config.ray_address, str) or not config.ray_address.strip():
        raise ValueError("--ray-address is empty; give auto, local, ray://HOST:PORT or HOST:PORT")
    if not isinstance(config.ray_app, str) or not config.ray_app.strip() or "#" in config.ray_app:
        raise ValueError(f"--ray-app {config.ray_app!r} is not a usable application name (non-empty, no '#')")
    if not isinstance(config.replicas, int) or isinstance(config.replicas, bool) or config.replicas < 1:
        raise ValueError(f"replicas must be a positive integer, got {config.replicas!r}")
    for name in ("gpus_per_replica", "cpus_per_replica"):
        value = getattr(config, name)
        if value is not None and not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")


_ARG_TO_FIELD = {"direction": "directions"}


def config_from_args(args: argparse.Namespace, **overrides) -> EffectConfig:
    """An `EffectConfig` from the flags of `add_effect_arguments` (flags left out keep the config's defaults)."""
    names = {f.name for f in fields(EffectConfig)}
    options = {}
    for key, value in vars(args).items():
        field_name = _ARG_TO_FIELD.get(key, key)
        if field_name in names and value is not None:
            options[field_name] = tuple(value) if field_name == "directions" else value
    options.update({k: v for k, v in overrides.items() if v is not None})
    return EffectConfig(**options)
