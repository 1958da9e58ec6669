"""Face identity embedders behind one interface: dlib's face-recognition ResNet and ArcFace IR-SE50.

Both turn face images into L2-normalised vectors; identity similarity is their cosine, identity change
``1 − cos`` (Table 1 of the paper). ::

    emb = make_embedder("dlib")                     # or "arcface" (weights: arcface-ir-se50)
    e = emb.embed(crops)                            # Embeddings(vectors [N, D] float32, found [N] bool)
    cosine_similarity(e.vectors, e.vectors)         # [N, N]

Images: a list of uint8 [H, W, 3] **BGR** arrays (the project's frame/crop convention) or a float tensor
[N, 3, H, W] RGB in [-1, 1] (generator output). ``boxes``:

* ``"aligned"`` (default) — the images are FFHQ-aligned crops (the project's aligner output, or generator output,
  which is aligned by construction). dlib gets a fixed face box (:data:`FFHQ_DLIB_BOX`); ArcFace its usual
  StyleCLIP/pSp face view.
* ``"detect"`` — dlib's HOG detector finds the largest face (dlib only); none → that row is not found.
* a list with one ``(x0, y0, x1, y1)`` pixel box (or None = not found) per image (dlib only), e.g. derived from
  MediaPipe landmarks by the caller.

dlib (``DlibEmbedder``) runs offline with the models inside the ``face-recognition-models`` wheel: a 5-point (or
68-point) shape predictor places the face in the box, ``compute_face_descriptor`` gives a 128-d vector. dlib's
descriptors are meant for Euclidean distance (same person below ≈ 0.6); here they are L2-normalised and compared by
cosine, so ``cos = 1 − d²/2`` with d the Euclidean distance of the *normalised* vectors (the raw descriptors have
norms close to, not exactly, 1). Rows of faces that were not found are NaN.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
from pathlib import Path
from typing import Sequence, Union

import numpy as np

log = logging.getLogger(__name__)

#: dlib face box (x0, y0, x1, y1) as fractions of an FFHQ-aligned crop's side. Measured: dlib's HOG detector on
#: project-aligned crops of the five reference faces gave x 0.180–0.785 every time and y 0.250–0.855 or
#: 0.316–0.922 (its scale steps); this is their mean, so the shape predictor sees the boxes it was trained on.
FFHQ_DLIB_BOX = (0.180, 0.283, 0.785, 0.889)
DLIB_MIN_SIDE = 256          # aligned crops smaller than this are upsampled first (the shape predictor's range)
DLIB_DESCRIPTOR_DIM = 128
EMBEDDERS = ("dlib", "arcface")

Boxes = Union[str, Sequence]


class EmbedderUnavailable(FileNotFoundError):
    """The models an embedder needs are not installed (message: one line naming the fix)."""


@dataclasses.dataclass
class Embeddings:
    """vectors: float32 [N, D], L2-normalised rows (NaN rows where no face was found); found: bool [N]."""

    vectors: np.ndarray
    found: np.ndarray


# ------------------------------------------------------------------------------------------------ maths


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float32); zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of a [N, D] with every row of b [M, D] → float64 [N, M] (NaN rows stay NaN)."""
    return normalise(a).astype(np.float64) @ normalise(b).astype(np.float64).T


def identity_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − cos of matching rows of a and b ([N, D] each) → float64 [N] in [0, 2] (0 = same identity; NaN if
    either row is NaN). Rounding that would make it slightly negative for identical rows is clipped to 0."""
    a, b = normalise(a).astype(np.float64), normalise(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"identity_change: shapes differ {a.shape} vs {b.shape}")
    return np.clip(1.0 - (a * b).sum(axis=-1), 0.0, 2.0)


# ------------------------------------------------------------------------------------------------ images


def to_bgr_uint8(images) -> list[np.ndarray]:
    """Images → list of contiguous uint8 [H, W, 3] BGR arrays.

    images: a list of uint8 [H, W, 3] BGR arrays (returned as they are), a uint8 array [N, H, W, 3] BGR, or a
    float tensor [N, 3, H, W] RGB in [-1, 1] (generator output; clamped).
    """
    if hasattr(images, "detach"):  # a torch tensor (torch is only imported when one is passed)
        x = images.detach().float().cpu()
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"image tensor must be [N, 3, H, W] RGB in [-1, 1], got {tuple(x.shape)}")
        arr = ((x.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        return [np.ascontiguousarray(a[..., ::-1]) for a in arr]
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {i} must be uint8 [H, W, 3] BGR, got {img.dtype} {list(img.shape)}")
        out.append(np.ascontiguousarray(img))
    return out


def aligned_box(size_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """The dlib face box (x0, y0, x1, y1) in pixels of an FFHQ-aligned crop of shape (H, W)."""
    h, w = size_hw
    x0, y0, x1, y1 = FFHQ_DLIB_BOX
    return (x0 * w, y0 * h, x1 * w, y1 * h)


def box_from_points(points: np.ndarray, margin: float = 0.0) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of points [K, 2] (pixels), grown by `margin` × its side on every edge."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    (x0, y0), (x1, y1) = p.min(0), p.max(0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (x0 - mx, y0 - my, x1 + mx, y1 + my)


# ------------------------------------------------------------------------------------------------ dlib


def dlib_model_dir() -> Path:
    """Folder of dlib's models inside the installed `face-recognition-models` wheel (not imported: it needs
    pkg_resources). Raises EmbedderUnavailable when the wheel is missing."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable("dlib's face models are not installed; `pip install face-recognition-models` "
                                  "(listed in requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _import_dlib():
    try:
        import dlib  # noqa: PLC0415 (heavy, optional)
    except ImportError as err:
        raise EmbedderUnavailable(f"dlib is not importable ({err}); `pip install dlib-bin` "
                                  f"(listed in requirements.txt)") from None
    return dlib


@functools.lru_cache(maxsize=None)
def _shape_predictor(path: str):
    """dlib shape predictor loaded once per process (the 68-point model takes ~1.3 s to read)."""
    return _import_dlib().shape_predictor(path)


@functools.lru_cache(maxsize=1)
def _hog_detector():
    """dlib's HOG frontal face detector, built once per process (~1.3 s)."""
    return _import_dlib().get_frontal_face_detector()


class DlibShapes:
    """dlib shape predictor on given boxes (and, on request, its HOG face detector); shared by embedder and scorers."""

    def __init__(self,
                 points: int = 5,                    # 5 or 68: which shipped shape predictor to use.
                 model_dir: str | Path | None = None,  # Folder with dlib's .dat files (default: the wheel's).
                 ):
        if points not in (5, 68):
            raise ValueError(f"dlib shape predictor points must be 5 or 68, got {points}")
        self.dlib = _import_dlib()
        self.model_dir = Path(model_dir) if model_dir is not None else dlib_model_dir()
        path = self.model_dir / f"shape_predictor_{points}_face_landmarks.dat"
        if not path.is_file():
            raise EmbedderUnavailable(f"{path} is missing; reinstall face-recognition-models "
                                      f"(`pip install --force-reinstall face-recognition-models`)")
        self.points = points
        self.predictor = _shape_predictor(str(path))

    def rgb_and_boxes(self, images, boxes: Boxes):
        """(list of uint8 RGB arrays, list of pixel boxes or None) for `images` and a `boxes` spec (module doc)."""
        bgr = to_bgr_uint8(images)
        if isinstance(boxes, str):
            if boxes == "aligned":
                scaled, out_boxes = [], []
                for img in bgr:
                    side = min(img.shape[:2])
                    if side < DLIB_MIN_SIDE:
                        import cv2  # noqa: PLC0415

                        k = DLIB_MIN_SIDE / side
                        img = cv2.resize(img, (round(img.shape[1] * k), round(img.shape[0] * k)),
                                         interpolation=cv2.INTER_CUBIC)
                    scaled.append(img)
                    out_boxes.append(aligned_box(img.shape[:2]))
                bgr = scaled
            elif boxes == "detect":
                out_boxes = [self.detect(np.ascontiguousarray(img[..., ::-1])) for img in bgr]
            else:
                raise ValueError(f"boxes must be 'aligned', 'detect' or one box per image, got {boxes!r}")
        else:
            out_boxes = list(boxes)
            if len(out_boxes) != len(bgr):
                raise ValueError(f"{len(out_boxes)} boxes for {len(bgr)} images; give one (or None) per image")
        return [np.ascontiguousarray(img[..., ::-1]) for img in bgr], out_boxes

    def detect(self, rgb: np.ndarray):
        """Largest face box (x0, y0, x1, y1) found by dlib's HOG detector (upsampled once), or None."""
        rects = _hog_detector()(rgb, 1)
        if not rects:
            return None
        r = max(rects, key=lambda r: r.area())
        return (r.left(), r.top(), r.right(), r.bottom())

    def shape(self, rgb: np.ndarray, box):
        """dlib full_object_detection of the face in `box` (x0, y0, x1, y1) of an RGB uint8 image."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        return self.predictor(rgb, self.dlib.rectangle(x0, y0, x1, y1))

    @staticmethod
    def points_of(shape) -> np.ndarray:
        """float64 [K, 2] pixel coordinates of a full_object_detection."""
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class DlibEmbedder:
    """dlib's face-recognition ResNet (128-d; `dlib_face_recognition_resnet_model_v1.dat`), offline.

    embed(images, boxes="aligned") → Embeddings (vectors L2-normalised float32 [N, 128]).
    """

    name = "dlib"
    dim = DLIB_DESCRIPTOR_DIM

    def __init__(self,
                 points: int = 5,                    # Shape predictor placing the face chip: 5 (dlib's default) or 68.
                 jitters: int = 0,                   # dlib num_jitters: >1 averages randomly jittered chips (slower).
                 padding: float = 0.25,              # dlib chip padding (its default).
                 model_dir: str | Path | None = None,  # Folder with dlib's .dat files (default: the wheel's).
                 ):
        self.shapes = DlibShapes(points=points, model_dir=model_dir)
        path = self.shapes.model_dir / "dlib_face_recognition_resnet_model_v1.dat"
        if not path.is_file():
            raise EmbedderUnavailable(f"{path} is missing; reinstall face-recognition-models")
        self.model = self.shapes.dlib.face_recognition_model_v1(str(path))
        self.jitters = int(jitters)
        self.padding = float(padding)

    def embed(self, images, boxes: Boxes = "aligned") -> Embeddings:
        rgbs, bxs = self.shapes.rgb_and_boxes(images, boxes)
        vectors = np.full((len(rgbs), self.dim), np.nan, dtype=np.float32)
        found = np.array([box is not None for box in bxs], dtype=bool)
        # dlib's own chip (150 px, rotated upright by the shape), then one batched forward: identical numbers
        # to compute_face_descriptor(img, shape), ~25% faster
        chips = [self.shapes.dlib.get_face_chip(rgb, self.shapes.shape(rgb, box), 150, self.padding)
                 for rgb, box in zip(rgbs, bxs) if box is not None]
        if chips:
            desc = self.model.compute_face_descriptor(chips, self.jitters)
            vectors[found] = normalise(np.array([np.asarray(d) for d in desc], dtype=np.float32))
        return Embeddings(vectors, found)


def count_faces(images, max_side: int = 256) -> int:
    """How many images dlib's HOG detector finds a face in (each downscaled to at most `max_side` px first).

    A cheap check that a generator draws faces at all: tiny random test networks draw noise (0 found).
    """
    import cv2  # noqa: PLC0415

    shapes = DlibShapes(points=5)
    found = 0
    for img in to_bgr_uint8(images):
        k = max_side / max(img.shape[:2])
        if k < 1:
            img = cv2.resize(img, (round(img.shape[1] * k), round(img.shape[0] * k)), interpolation=cv2.INTER_AREA)
        found += shapes.detect(np.ascontiguousarray(img[..., ::-1])) is not None
    return found


# ------------------------------------------------------------------------------------------------ ArcFace


class ArcFaceEmbedder:
    """ArcFace IR-SE50 (512-d, `model_ir_se50.pth`) on FFHQ-aligned crops (the face view of `directions.identity`)."""

    name = "arcface"

    def __init__(self,
                 weights: str | Path | None = "arcface-ir-se50",  # Manifest name or path of model_ir_se50.pth.
                 network=None,                       # A ready ArcFaceIRSE instead of a file (tests).
                 device: str = "cpu",                # Torch device.
                 batch: int = 16,                    # Images per forward pass.
                 ):
        from directions.identity import load_arcface  # noqa: PLC0415 (torch)

        if network is None:
            from engine.weights import resolve  # noqa: PLC0415

            network = load_arcface(resolve(weights))  # MissingWeightsError names the download command
        self.net = network.eval().requires_grad_(False).to(device)
        self.dim = int(self.net.embed_dim)
        self.batch = int(batch)

    def embed(self, images, boxes: Boxes = "aligned") -> Embeddings:
        import torch  # noqa: PLC0415

        from directions.identity import face_view  # noqa: PLC0415
        from directions.video import crops_to_tensor  # noqa: PLC0415

        if not (isinstance(boxes, str) and boxes == "aligned"):
            raise ValueError("the ArcFace embedder takes FFHQ-aligned crops only (boxes='aligned'); align the "
                             "images first (python -m directions identity does) or use --embedder dlib")
        if hasattr(images, "detach"):
            x = images.detach().float().clamp(-1, 1)
        else:
            crops = to_bgr_uint8(images)
            x = crops_to_tensor(crops, max(c.shape[0] for c in crops)) if crops else torch.zeros(0, 3, 256, 256)
        p = next(self.net.parameters())
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch):
                chunk = x[start:start + self.batch].to(p.device, p.dtype)
                out.append(self.net(face_view(chunk, self.net.input_size)).float().cpu())
        vectors = torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)
        return Embeddings(normalise(vectors), np.ones(len(vectors), dtype=bool))


# ------------------------------------------------------------------------------------------------ factory


def make_embedder(name: str, weights: str | Path | None = None, device: str = "cpu"):
    """An embedder by name: "dlib" (always available offline) or "arcface" (weights: manifest name or path)."""
    if name == "dlib":
        return DlibEmbedder()
    if name == "arcface":
        return ArcFaceEmbedder(weights=weights or "arcface-ir-se50", device=device)
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
