"""The one loader every door uses: `load_editor(config)` -> an `Editor`, or an `EditorStandin` saying what is missing.

* networks: `engine.load_encoder` / `engine.load_generator` by manifest name or path; a known name that is not
  downloaded yet becomes `WeightsMissing` (its message is the one command that fetches everything), and
  `load_editor` answers with a stand-in instead of failing, so every door still starts and shows the command;
* directions: the names in `config.directions` (a name that cannot be used is an error: the user asked for it), or
  every file in the directions folder (a file that cannot be used is skipped, named in `info.skipped_directions`
  with the reason, and logged).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.weights import MissingWeightsError
from stream.editor import Editor, EditorStandin
from stream.options import EffectConfig

log = logging.getLogger(__name__)

DOWNLOAD_COMMAND = "python -m engine.weights download --default"


class WeightsMissing(MissingWeightsError):
    """No network weights installed. `str(exc)` names what is missing and the ONE command that fetches them.

    Attributes: `command` (the download command), `what` (the missing item), `cause` (the engine's error).
    """

    def __init__(self, what: str = "", cause: BaseException | None = None):  # noqa: D107
        FileNotFoundError.__init__(self, what)
        self.what = what
        self.cause = cause
        self.command = DOWNLOAD_COMMAND
        self.message = (f"network weights are not installed{f' ({what})' if what else ''}; "
                        f"fetch them with: {DOWNLOAD_COMMAND}")

    def __str__(self) -> str:
        return self.message


def load_editor(config: EffectConfig | None = None, *,
                generator=None,                 # a ready Generator (tests, benchmarks); else loaded from config
                encoder=None,                   # a ready Encoder; else loaded from config
                directions=None,                # {name: delta} or [Direction]; else the files (config.directions)
                ) -> Editor | EditorStandin | Any:
    """The editor for `config`; a stand-in (with `info.notice` and `info.command`) when weights are missing or
    `config.tracking_only`. Errors the user must fix (a named direction that does not fit, an unknown name or
    path) raise with a one-line message."""
    config = config or EffectConfig()
    if config.demo:
        from stream.demo import TintEditor  # noqa: PLC0415

        return TintEditor(crop_size=config.paste_size or 256, mode=config.mode)
    if config.tracking_only:
        return EditorStandin("tracking_only", "face tracking only (--tracking-only): no edit is applied",
                             crop_size=config.paste_size or 256, mode=config.mode)
    try:
        return build_editor(config, generator=generator, encoder=encoder, directions=directions)
    except WeightsMissing as exc:
        log.warning("%s -- running face tracking only", exc)
        return EditorStandin("networks_missing", f"No weights installed: face tracking only. Fetch them with "
                             f"`{exc.command}` and restart.", command=exc.command,
                             crop_size=config.paste_size or 256, mode=config.mode)


def build_editor(config: EffectConfig, *, generator=None, encoder=None, directions=None) -> Editor:
    """`Editor` from the config (or the injected modules); `WeightsMissing` when a network is not downloaded."""
    from engine.runtime import resolve_device  # noqa: PLC0415

    device = resolve_device(config.device)
    E = encoder if encoder is not None else load_network("encoder", config.encoder, device)
    G = generator
    if G is None:
        G = getattr(E, "decoder", None) if config.generator is None else None
        if G is None:
            G = load_network("generator", config.generator or "stylegan2-ffhq", device)
    skipped: list = []
    items = injected_directions(directions)
    if items is None:
        items, skipped = load_direction_files(config, G)
    return Editor(G, E, items, config, skipped_directions=skipped)


def load_network(what: str, name: str, device) -> Any:
    """engine.load_generator / load_encoder, with a known-but-not-downloaded name turned into `WeightsMissing`."""
    from engine import checkpoints  # noqa: PLC0415

    loader = checkpoints.load_generator if what == "generator" else checkpoints.load_encoder
    try:
        return loader(name, device=device)
    except MissingWeightsError as exc:
        raise WeightsMissing(f"{what} {name}", cause=exc) from exc


def load_direction_files(config: EffectConfig, G) -> tuple[list, list]:
    """([(name, delta, meta)], [(file, reason)]): the directions named in the config, or every file in the folder
    (`directions.files.load_folder`). A named direction that cannot be used is an error; a listed file that cannot
    be used (unreadable, made for another generator, a duplicate name) is skipped and reported."""
    from directions import files  # noqa: PLC0415

    folder = Path(config.directions_dir).expanduser() if config.directions_dir else Path(files.default_dir())
    found = files.load_folder(folder, list(config.directions) or None, num_ws=G.num_ws, w_dim=G.w_dim,
                              generator_sha256=getattr(G, "source_sha256", None))
    items = [(d.name, d.delta, dict(d.meta or {})) for d in found.directions]
    return items, [(str(x.path), x.reason) for x in found.skipped]


def injected_directions(directions: Mapping | Sequence | None) -> list | None:
    """Normalise injected directions ({name: delta} or [Direction]) to [(name, delta, meta)] (None stays None)."""
    if directions is None:
        return None
    if isinstance(directions, Mapping):
        return [(name, delta, {}) for name, delta in directions.items()]
    return [(d.name, d.delta, dict(getattr(d, "meta", None) or {})) for d in directions]
