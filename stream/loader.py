"""The one loader every door uses: `load_editor(config)` -> an `Editor`, or an `EditorStandin` saying what is missing.

* networks: `engine.load_encoder` / `engine.load_generator` by manifest name or path; a known name that is not
  downloaded yet becomes `WeightsMissing` (its message is the one command that fetches everything), and
  `load_editor` answers with a stand-in instead of failing, so every door still starts and shows the command;
* directions: the names in `config.directions` (a name that cannot be used is an error: the user asked for it), or
  every file in the directions folder (a file that cannot be used is skipped, named in `info.skipped_directions`
  with the reason, and logged). An editor left with no direction says so: `info.state` "directions_missing", a
  notice and the command.

`SETUP_COMMAND` (`python -m directions setup`: the default networks + the paper's directions, skipping what is
installed) is the ONE command every door shows for both missing states; `DOWNLOAD_COMMAND` is the same constant.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from directions.setup import SETUP_COMMAND
from engine.weights import MissingWeightsError
from stream.editor import Editor, EditorStandin
from stream.options import EffectConfig
from stream.status import DIRECTIONS_MISSING

log = logging.getLogger(__name__)

DOWNLOAD_COMMAND = SETUP_COMMAND  # the name doors used before there was one setup command: the same constant


class WeightsMissing(MissingWeightsError):
    """No network weights installed. `str(exc)` names what is missing and the ONE command that fetches them.

    Attributes: `command` (the download command), `what` (the missing item), `cause` (the engine's error).
    """

    def __init__(self, what: str = "", cause: BaseException | None = None):  # noqa: D107
        FileNotFoundError.__init__(self, what)
        self.what = what
        self.cause = cause
        self.command = SETUP_COMMAND
        self.message = (f"network weights are not installed{f' ({what})' if what else ''}; "
                        f"fetch them (and the directions) with: {SETUP_COMMAND}")

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
        return EditorStandin("networks_missing", f"No network weights installed ({exc.what}): face tracking only. "
                             f"Fetch networks and directions with `{exc.command}`, then restart.",
                             command=exc.command, crop_size=config.paste_size or 256, mode=config.mode)


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
    folder = None
    if items is None:
        items, skipped = load_direction_files(config, G)
        folder = directions_folder(config)
    editor = Editor(G, E, items, config, skipped_directions=skipped)
    if not items:
        say_directions_missing(editor.info, skipped, folder)
    return editor


def directions_folder(config: EffectConfig) -> Path:
    """The folder the directions are read from: `config.directions_dir`, else `$MICROMOTION_HOME/directions`."""
    from directions import files  # noqa: PLC0415

    return Path(config.directions_dir).expanduser() if config.directions_dir else Path(files.default_dir())


def say_directions_missing(info, skipped: Sequence, folder: Path | None) -> None:
    """Mark an editor that holds networks but no direction: state, one-line notice (why, and the fix), command."""
    where = f" in {folder}" if folder is not None else ""
    if skipped:
        path, reason = skipped[0]
        more = f"; {len(skipped) - 1} more in `python -m directions list`" if len(skipped) > 1 else ""
        why = f"no direction file{where} fits these networks ({Path(path).name} skipped: {reason}{more})"
    else:
        why = f"no directions installed{where}"
    info.state = DIRECTIONS_MISSING
    info.command = SETUP_COMMAND
    build = " (or make one for these networks with `python -m directions build`)" if skipped else ""
    info.notice = (f"{why}: faces are reconstructed, not edited. Install the paper's directions with "
                   f"`{SETUP_COMMAND}`{build}, then restart.")
    log.warning("%s", info.notice)


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

    folder = directions_folder(config)
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
