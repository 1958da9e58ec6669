"""Build checkpoints filled by the shared fixture recipe (`../shared/fixtures/recipe.py`) in a real file layout.

`build_recipe_checkpoint(keys_json, out_path, const_kernel, extra)` reads a `*.keys.json` layout:

* `{"g_ema": {key: {shape, dtype}}, "latent_avg": {...}}` (stylegan2_config_f) -> rosinality generator file
  `{'g_ema': state_dict, 'latent_avg': [512]}`;
* `{"state_dict": {...}, "latent_avg": {...}, "opts": {...}}` (restyle_psp_ffhq, e4e_ffhq) -> pSp-style file
  `{'state_dict': state_dict, 'opts': opts, 'latent_avg': [18, 512]}`.

Every tensor is `recipe.fill(key, shape, dtype)` with the key exactly as stored in the file; with
`const_kernel=True` every key whose last component is `kernel` holds outer([1,3,3,1], [1,3,3,1]) / 16, the value
of every real checkpoint (the `_constkernel` reference files). `latent_avg = fill('latent_avg', shape)`.
The recipe module is imported from the fixtures folder (never copied into the repository).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Mapping

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool}


def load_recipe(recipe_path: str | Path):
    """Import `recipe.py` from its file (module object with `fill(key, shape, dtype)`)."""
    spec = importlib.util.spec_from_file_location("micromotion_fixture_recipe", str(recipe_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def const_fir_kernel() -> torch.Tensor:
    """outer([1,3,3,1], [1,3,3,1]) / 16: the [4,4] FIR kernel buffer of every real rosinality checkpoint."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(k, k) / 16


def fill_layout(layout: Mapping[str, Mapping[str, Any]], fill, const_kernel: bool) -> dict[str, torch.Tensor]:
    """{key: fill(key, shape, dtype)} for a `{key: {shape, dtype}}` layout (kernels optionally constant)."""
    out = {}
    for key, spec in layout.items():
        dtype = _DTYPES[spec["dtype"]]
        if const_kernel and key.rsplit(".", 1)[-1] == "kernel":
            out[key] = const_fir_kernel().to(dtype).reshape(spec["shape"])
        else:
            out[key] = fill(key, spec["shape"], dtype)
    return out


def build_recipe_checkpoint(
    keys_json: str | Path,            # a fixtures *.keys.json layout
    out_path: str | Path,             # where to torch.save the checkpoint
    const_kernel: bool = True,        # FIR kernels = the real constant (True) or recipe-filled (False)
    extra: Mapping[str, Any] | None = None,  # top-level entries added to / replacing those of the file
    recipe_path: str | Path | None = None,   # recipe.py (default: beside keys_json)
) -> Path:
    """Write a recipe-filled checkpoint in the layout of `keys_json`; returns `out_path`."""
    keys_json = Path(keys_json)
    recipe = load_recipe(recipe_path or keys_json.parent / "recipe.py")
    layout = json.loads(keys_json.read_text())
    if "g_ema" in layout:
        ckpt: dict[str, Any] = {"g_ema": fill_layout(layout["g_ema"], recipe.fill, const_kernel)}
    elif "state_dict" in layout:
        ckpt = {"state_dict": fill_layout(layout["state_dict"], recipe.fill, const_kernel)}
        if "opts" in layout:
            ckpt["opts"] = dict(layout["opts"])
    else:
        raise ValueError(f"{keys_json}: neither a 'g_ema' nor a 'state_dict' layout (keys {list(layout)})")
    if "latent_avg" in layout:
        spec = layout["latent_avg"]
        ckpt["latent_avg"] = recipe.fill("latent_avg", spec["shape"], _DTYPES[spec["dtype"]])
    if extra:
        ckpt.update(extra)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out_path)
    return out_path
