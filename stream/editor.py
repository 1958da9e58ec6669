"""The editor: the networks and the directions, nothing else. It edits a batch of faces from any streams at once.

    job  = FaceJob(crop, coefficients, memory)      one face: aligned crop, its stream's alpha_i * t per direction,
                                                     and the face's memory from its previous edit (temporal ReStyle)
           FaceJob(..., render_ws=W)                 or: render this W+ instead of the edit (reenactment: the
                                                     crop is still inverted -- memory, base, ws -- but G renders W)
    Editor.edit([job, ...]) -> [FaceEdit, ...]      ONE encoder pass and ONE generator pass for all of them:
        live:  w = w_prev + E(crop ⊕ G(w_prev))      (ReStyle, one step from the face's last latent; cold start
                                                     from the average latent and image)
        paper: w = ReStyle-pSp x5 from the average   (fp32, eager: the paper's inversion)
        w' = w + sum_i c_i * delta_i                 (each face its own coefficients c; render_ws when given)
        G([w, w'])                                   -> base crop G(w), edited crop G(w'), new memory (w, pool G(w)),
                                                        and w itself (FaceEdit.ws, on the host)

The editor knows nothing of frames, cameras or sessions; which thread calls `edit` is the serving layer's business
(`stream.serving`): one caller at a time. On CUDA, batches are padded to a bucket size (1, 2, 4, 8, 16) and each
bucket's pass is replayed from a CUDA graph, so steady state never recaptures.

`EditorInfo` is the picklable description front ends need (crop size, direction names and hints, mode, notice);
`EditorStandin` has the same surface without networks and says what is missing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from stream import status as st
from stream.options import EffectConfig

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16)
PAPER_ITERS = 5          # paper mode: ReStyle-pSp iterations from the average latent


@dataclass
class FaceMemory:
    """What the editor remembers of one face between its edits (temporal ReStyle); lives on the editor's device."""

    ws: Any        # torch float32 [num_ws, w_dim]: the face's last latent
    recon: Any     # torch [3, s, s] (network dtype): pool(G(ws)), the encoder's second input next time


@dataclass
class FaceJob:
    """One face to edit."""

    crop: np.ndarray                  # uint8 [S, S, 3] BGR, FFHQ-aligned at EditorInfo.crop_size
    coefficients: np.ndarray          # float32 [K]: alpha_i * t per direction, in EditorInfo.direction_names order
    memory: FaceMemory | None = None  # the face's memory from its last edit; None -> start from the average
    render_ws: np.ndarray | None = None  # float32 [num_ws, w_dim]: render G(render_ws) as `edit` instead of
                                         # G(w + sum c_i delta_i) (coefficients ignored); None -> the edit


@dataclass
class FaceEdit:
    """The editor's answer for one face."""

    edit: np.ndarray                  # uint8 [S, S, 3] BGR: G(w'), the edited face
    base: np.ndarray                  # uint8 [S, S, 3] BGR: G(w), the reconstruction (residual paste: edit - base)
    memory: FaceMemory | None         # the memory to send with this face's next job (None: stateless encoder)
    timing: dict = field(default_factory=dict)  # {"encode_ms", "generate_ms", "batch"} of the pass it was in
    ws: np.ndarray | None = None      # float32 [num_ws, w_dim]: w, the latent this pass inverted the crop to
                                      # (None: an editor without latents, e.g. the demo)


@dataclass
class EditorInfo:
    """What front ends need to know of an editor (picklable: it travels to remote front ends)."""

    available: bool                   # False: a stand-in without networks (see `state`, `notice`)
    state: str                        # "ready" | "directions_missing" | "networks_missing" | "tracking_only" | "demo"
    notice: str | None                # one line for the user when something is missing or limited
    command: str | None               # the command that fixes `state` (None when ready)
    mode: str                         # "live" | "paper"
    crop_size: int                    # side of the aligned crops the editor takes and returns
    direction_names: list             # the directions, in coefficient order
    direction_meta: dict              # name -> {"alpha_range", "alpha_default", "method"} (UI hints)
    skipped_directions: list          # [(file, reason)] of direction files that could not be used
    device_type: str = "cpu"          # "cpu" | "cuda"
    precision: str = "fp32"

    def direction_info(self) -> dict:
        """{name: {"alpha_range", "alpha_default", "method"}} (read-only hints; a UI hint never limits the API)."""
        return {name: dict(self.direction_meta.get(name, {})) for name in self.direction_names}


def bucket_size(n: int, buckets: Sequence[int] = BUCKETS) -> int:
    """The smallest bucket >= n (n itself past the largest bucket)."""
    return next((b for b in buckets if b >= n), n)


class EditorStandin:
    """An editor without networks: the same surface, `info.available` False and a notice saying what is missing."""

    def __init__(self,
                 state: str,                       # "networks_missing" | "tracking_only"
                 notice: str,                      # what the user reads
                 command: str | None = None,       # the one command that fixes it
                 crop_size: int = 256,             # the trackers still align faces (drawn, not edited)
                 mode: str = "live"):
        self.info = EditorInfo(available=False, state=state, notice=notice, command=command, mode=mode,
                               crop_size=crop_size, direction_names=[], direction_meta={}, skipped_directions=[])

    def edit(self, jobs: Sequence[FaceJob]) -> list[FaceEdit]:
        raise RuntimeError(f"no networks to edit with: {self.info.notice}")


class Editor:
    """Networks + directions; `edit(jobs)` runs one batched pass. Build with `stream.loader.load_editor`."""

    def __init__(self,
                 generator,                        # engine.stylegan2.Generator (num_ws, w_dim, resolution)
                 encoder,                          # engine.encoders.Encoder trained for that generator
                 directions: Sequence,             # [(name, delta [num_ws, w_dim] or [w_dim], meta dict)]
                 config: EffectConfig,             # mode, live_resolution, paste_size, precision, graphs, ...
                 skipped_directions: Sequence = (),  # [(file, reason)] reported in info
                 ):
        from engine.runtime import PinnedTransfer, Precision, prepare, resolve_device  # noqa: PLC0415

        self.config = config
        self.device = resolve_device(config.device)
        self.paper = config.mode == "paper"
        self.precision = Precision.resolve("fp32" if self.paper else config.precision, self.device)
        E, G = encoder, generator
        if (G.num_ws, G.w_dim) != (E.num_ws, E.w_dim):
            raise ValueError(f"encoder makes W+ [{E.num_ws}, {E.w_dim}] but the generator takes "
                             f"[{G.num_ws}, {G.w_dim}]; use an encoder trained for this generator")
        if self.paper and E.kind != "restyle_psp":
            log.warning("paper mode is defined with ReStyle-pSp; running it with a %s encoder", E.kind)
        self.E = prepare(E, self.device, self.precision)
        self.G = G if getattr(E, "decoder", None) is G else prepare(G, self.device, self.precision)
        self.num_ws, self.w_dim = G.num_ws, G.w_dim
        live_res = None if self.paper else config.live_resolution
        self.render_resolution = min(live_res, G.resolution) if live_res else G.resolution
        self.crop_size = config.paste_size or self.render_resolution
        self.restyle = E.kind.startswith("restyle")
        self.iters = (config.encoder_iters or (PAPER_ITERS if self.paper else 1)) if self.restyle else 1
        self.names, self.deltas, meta = self._stack_directions(directions)
        self._graphs = config.cuda_graphs and not self.paper and self.device.type == "cuda"
        self._transfer = PinnedTransfer(self.device)
        self._encode_runner, self._synth_runner = self._build_runners()
        import torch  # noqa: PLC0415

        with torch.no_grad():
            self._avg_ws = E.latent_avg.detach().float().to(self.device).reshape(self.num_ws, self.w_dim)
            self._avg_img = E.average_image()[0].detach() if self.restyle else None
        state, notice, command = "ready", None, None
        if not self.names:   # networks, nothing to edit with (stream.loader says why: which folder, which files)
            state, notice, command = st.DIRECTIONS_MISSING, st.describe(st.DIRECTIONS_MISSING), st.DIRECTIONS_COMMAND
        self.info = EditorInfo(
            available=True, state=state, notice=notice, command=command, mode=config.mode, crop_size=self.crop_size,
            direction_names=list(self.names), direction_meta=meta, skipped_directions=list(skipped_directions),
            device_type=self.device.type, precision=self.precision.name)

    # ------------------------------------------------------------------ construction
    def _stack_directions(self, directions: Sequence):
        """Names, deltas [K, num_ws, w_dim] float32 on the device (K >= 1: a zero row when none), hints."""
        import torch  # noqa: PLC0415

        names, deltas, meta = [], [], {}
        for name, delta, info in directions:
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
            meta[str(name)] = direction_hints(info or {})
        if not deltas:  # keep the batch shapes fixed: one all-zero direction nobody can select
            deltas = [torch.zeros(self.num_ws, self.w_dim)]
        return names, torch.stack(deltas).to(self.device), meta

    def _build_runners(self):
        from engine.runtime import CudaGraphRunner, maybe_compile  # noqa: PLC0415

        comp = self.config.compile and not self.paper
        graphs = len(BUCKETS) + 2
        encode = CudaGraphRunner(maybe_compile(self._encode_step, comp), enabled=self._graphs, max_graphs=graphs,
                                 name="encode")
        synth = CudaGraphRunner(maybe_compile(self._synth, comp), enabled=self._graphs, max_graphs=graphs,
                                name="synth")
        return encode, synth

    # ------------------------------------------------------------------ the batched pass
    def edit(self, jobs: Sequence[FaceJob]) -> list[FaceEdit]:
        """Edit every job's face in one network pass. Crops [S, S, 3] uint8 with S = `crop_size`."""
        import torch  # noqa: PLC0415

        n = len(jobs)
        if n == 0:
            return []
        crops, coef, render, use = self._stack_jobs(jobs)
        t0 = time.perf_counter()
        with torch.inference_mode():
            crops_d = self._transfer.to_device(crops)
            if self.paper:
                x = crops_to_input(crops_d, self.E.input_size, self._dtype(self.E))
                ws = self.E(x, n_iters=self.iters if self.restyle else None).float()
            else:
                ws_prev, recon_prev = self._previous(jobs, crops.shape[0])
                ws = self._encode_runner(crops_d, ws_prev, recon_prev)
            t1 = self._sync_time()
            edit, base, recon = self._synth_runner(ws, self._transfer.to_device(coef),
                                                   self._transfer.to_device(render), self._transfer.to_device(use))
            edit_u8, base_u8 = self._transfer.to_host(edit), self._transfer.to_host(base)
            ws_host = self._transfer.to_host(ws[:n].float())
            memories = [FaceMemory(ws[i].clone(), recon[i].clone()) if self.restyle and not self.paper else None
                        for i in range(n)]
        t2 = time.perf_counter()
        timing = {"encode_ms": (t1 - t0) * 1e3, "generate_ms": (t2 - t1) * 1e3, "batch": n}
        return [FaceEdit(edit_u8[i].copy(), base_u8[i].copy(), memories[i], timing, ws=ws_host[i].copy())
                for i in range(n)]

    def _stack_jobs(self, jobs: Sequence[FaceJob]):
        """crops uint8 [B, S, S, 3], coefficients float32 [B, K], render_ws float32 [B, num_ws, w_dim] and its
        row flags float32 [B] (1: render that row's render_ws); B = the bucket size on CUDA graphs, else N."""
        k = self.deltas.shape[0]
        for job in jobs:
            if job.crop.shape != (self.crop_size, self.crop_size, 3) or job.crop.dtype != np.uint8:
                raise ValueError(f"a face crop must be uint8 [{self.crop_size}, {self.crop_size}, 3], got "
                                 f"{job.crop.dtype} {list(job.crop.shape)}")
            if job.coefficients.shape != (len(self.names),) and not (len(self.names) == 0 and job.coefficients.size == 0):
                raise ValueError(f"coefficients must be [{len(self.names)}] (one per direction), got "
                                 f"{list(job.coefficients.shape)}")
            if job.render_ws is not None and np.shape(job.render_ws) != (self.num_ws, self.w_dim):
                raise ValueError(f"render_ws must be [{self.num_ws}, {self.w_dim}] (num_ws, w_dim), got "
                                 f"{list(np.shape(job.render_ws))}")
        n = len(jobs)
        size = bucket_size(n) if self._graphs else n
        crops = np.empty((size, self.crop_size, self.crop_size, 3), np.uint8)
        coef = np.zeros((size, k), np.float32)
        render = np.zeros((size, self.num_ws, self.w_dim), np.float32)
        use = np.zeros((size,), np.float32)
        for i in range(size):
            job = jobs[i if i < n else 0]  # padding rows repeat the first face (valid data, results dropped)
            crops[i] = job.crop
            if len(self.names):
                coef[i] = job.coefficients
            if job.render_ws is not None:
                render[i] = np.asarray(job.render_ws, np.float32)
                use[i] = 1.0
        return crops, coef, render, use

    def _previous(self, jobs: Sequence[FaceJob], size: int):
        """Stacked previous (ws, recon) per face [size, ...]; faces without memory start from the average."""
        import torch  # noqa: PLC0415

        if not self.restyle:
            return self._avg_ws.expand(size, -1, -1), self._avg_ws[:1, :1].expand(size, -1)
        rows = [jobs[i if i < len(jobs) else 0].memory for i in range(size)]
        ws = torch.stack([m.ws if m is not None else self._avg_ws for m in rows])
        recon = torch.stack([m.recon if m is not None else self._avg_img for m in rows])
        return ws, recon

    def _encode_step(self, crops_u8, ws_prev, recon_prev):
        """uint8 crops [B,S,S,3] BGR + previous (ws [B,num_ws,w_dim] f32, recon [B,3,s,s]) -> ws f32 (graph-safe)."""
        x = crops_to_input(crops_u8, self.E.input_size, self._dtype(self.E))
        if not self.restyle:
            return self.E(x).float()
        return self.E.step_latent(x, ws_prev, recon_prev).float()

    def _synth(self, ws, coef, render, use):
        """(ws f32 [B,num_ws,w_dim], coef f32 [B,K], render f32 [B,num_ws,w_dim], use f32 [B]) -> (edit u8
        [B,S,S,3], base u8, recon) in ONE G call; rows with use 1 render `render` instead of the edit."""
        import torch  # noqa: PLC0415

        n = ws.shape[0]
        ws_edit = ws + torch.einsum("nk,kij->nij", coef, self.deltas)
        ws_edit = torch.where(use[:, None, None] > 0, render, ws_edit)
        # ws stay float32: G computes styles in float32 whatever its dtype (engine.stylegan2's half policy)
        img = self.G(torch.cat([ws, ws_edit]), out_resolution=self.render_resolution)
        out = images_to_u8(img, self.crop_size)
        recon = self.E.pool(img[:n]) if self.restyle else img[:n, :, :1, :1]
        return out[n:], out[:n], recon

    def _sync_time(self) -> float:
        if self.config.profile:
            from engine.runtime import synchronize  # noqa: PLC0415

            synchronize(self.device)
        return time.perf_counter()

    @staticmethod
    def _dtype(module):
        return next(module.parameters()).dtype


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def direction_hints(meta: dict) -> dict:
    """{"alpha_range": [lo, hi] | None, "alpha_default": float | None, "method": str | None} from file metadata."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    lo_hi = meta.get("alpha_range")
    default = meta.get("alpha_default")
    return {
        "alpha_range": [float(v) for v in lo_hi] if isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2
        and all(number(v) for v in lo_hi) else None,
        "alpha_default": float(default) if number(default) else None,
        "method": meta.get("method") if isinstance(meta.get("method"), str) else None,
    }


def crops_to_input(crops_u8, size: int, dtype):
    """uint8 [N, S, S, 3] BGR -> float [N, 3, size, size] RGB in [-1, 1] (area resize when S > size)."""
    import torch.nn.functional as F  # noqa: PLC0415

    x = crops_u8.permute(0, 3, 1, 2).flip(1).to(dtype) / 127.5 - 1.0
    if x.shape[-1] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return x


def images_to_u8(img, size: int):
    """float [N, 3, R, R] RGB in [-1, 1] -> uint8 [N, size, size, 3] BGR (area/bilinear resize to `size`)."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    if img.shape[-1] != size:
        mode = "area" if img.shape[-1] > size else "bilinear"
        img = F.interpolate(img, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    img = ((img.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return img.to(torch.uint8).flip(1).permute(0, 2, 3, 1).contiguous()
