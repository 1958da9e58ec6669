"""Engine test fixtures: recipe-filled reference checkpoints (built once per session) and tiny generators.

* `recipe_checkpoint(keys_json_name, const_kernel=True) -> Path`: a checkpoint in the layout of a fixtures
  `*.keys.json`, filled by `recipe.py` (see `recipe_ckpt.build_recipe_checkpoint`), built at most once per
  session per (name, variant) into a session tmp dir. Works for `stylegan2_config_f.keys.json`,
  `restyle_psp_ffhq.keys.json` and `e4e_ffhq.keys.json`.
* `stylegan2_recipe_ckpt` / `stylegan2_recipe_ckpt_randkernel`: the full 1024 config-f generator
  (`_constkernel` variant / recipe-filled kernels).
* `tiny_generator`: a seeded random `Generator(resolution=32, ...)` with 16 channels for wiring tests;
  `make_tiny_generator(**overrides)` builds other small configs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_helpers import TINY_CONFIG, make_tiny_generator  # noqa: E402,F401
from recipe_ckpt import build_recipe_checkpoint  # noqa: E402

@pytest.fixture
def tiny_generator():
    """Generator(resolution=32, w_dim=16, z_dim=16, n_mapping=2, channel_max=16), seed 0, random weights."""
    return make_tiny_generator()


@pytest.fixture(scope="session")
def recipe_ckpt_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recipe_checkpoints")


@pytest.fixture(scope="session")
def recipe_checkpoint(fixtures_dir, recipe_ckpt_dir):
    """Factory: recipe_checkpoint('e4e_ffhq.keys.json', const_kernel=True) -> Path (cached per session)."""
    cache: dict[tuple[str, bool], Path] = {}

    def build(keys_json_name: str, const_kernel: bool = True) -> Path:
        key = (keys_json_name, bool(const_kernel))
        if key not in cache:
            stem = keys_json_name.replace(".keys.json", "")
            out = recipe_ckpt_dir / f"{stem}{'_constkernel' if const_kernel else ''}.pt"
            cache[key] = build_recipe_checkpoint(fixtures_dir / keys_json_name, out, const_kernel=const_kernel)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def stylegan2_recipe_ckpt(recipe_checkpoint) -> Path:
    """Full config-f generator checkpoint (rosinality layout), FIR kernels = the real constant."""
    return recipe_checkpoint("stylegan2_config_f.keys.json", const_kernel=True)


@pytest.fixture(scope="session")
def stylegan2_recipe_ckpt_randkernel(recipe_checkpoint) -> Path:
    """Same, with every FIR kernel filled by the recipe (checks that kernels are read from the file)."""
    return recipe_checkpoint("stylegan2_config_f.keys.json", const_kernel=False)
