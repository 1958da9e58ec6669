"""Half-precision error table on the fixture recipe checkpoints (for the release note).

    python tests/engine/half_error_table.py [--resolution 256] [--precisions bf16,fp16] [--iters 1,5]
                                            [--no-encoders] [--json FILE] [--keep DIR]

Builds the config-f generator, ReStyle-pSp and e4e checkpoints of ../shared/fixtures with `recipe.py` (constant FIR
kernels, as in every real checkpoint; ~2.3 GB in a temporary folder, removed afterwards unless --keep) and runs
`engine.precision_errors` on them; the encoders read the fixtures' face image. On real weights run
`python -m engine.precision_errors --encoder e4e-ffhq --encoder restyle-psp-ffhq` instead.
fp16 on a CPU without native fp16 is slow (minutes per network at 256 px; every ReStyle iteration decodes at 1024):
the release-note tables were made with `--precisions bf16 --iters 1,5`, `--precisions fp16 --iters 1` (256 px) and
`--precisions bf16 --resolution 1024 --no-encoders`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO)]

from recipe_ckpt import build_recipe_checkpoint  # noqa: E402

SHARED = Path(os.environ.get("MICROMOTION_SHARED", REPO.parent / "shared")).resolve()


def build_all(out_dir: Path, encoders: bool) -> dict[str, Path]:
    """Recipe checkpoints (constant kernels) in out_dir: {'generator': ..., 'restyle_psp': ..., 'e4e': ...}."""
    fixtures = SHARED / "fixtures"
    names = {"generator": "stylegan2_config_f"}
    if encoders:
        names.update(restyle_psp="restyle_psp_ffhq", e4e="e4e_ffhq")
    paths = {}
    for key, stem in names.items():
        path = out_dir / f"{stem}_constkernel.pt"
        if not path.exists():
            print(f"building {path.name} ...", file=sys.stderr)
            build_recipe_checkpoint(fixtures / f"{stem}.keys.json", path, const_kernel=True)
        paths[key] = path
    return paths


def main(argv=None) -> int:
    from engine import precision_errors  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", default="256")
    p.add_argument("--precisions", default="bf16,fp16")
    p.add_argument("--iters", default="1,5", help="ReStyle iteration counts")
    p.add_argument("--no-encoders", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--keep", default=None, help="build / reuse the checkpoints in this folder and keep them")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="half_error_table_") as tmp:
        paths = build_all(Path(args.keep or tmp), not args.no_encoders)
        cli = ["--generator", str(paths["generator"]), "--resolution", args.resolution,
               "--precisions", args.precisions, "--iters", args.iters,
               "--image", str(SHARED / "fixtures" / "restyle_psp_reference_constkernel.npz")]
        for key in ("restyle_psp", "e4e"):
            if key in paths:
                cli += ["--encoder", str(paths[key])]
        if args.json:
            cli += ["--json", args.json]
        return precision_errors.main(cli)


if __name__ == "__main__":
    sys.exit(main())
