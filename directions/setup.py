"""`python -m directions setup`: everything the live effect needs, in one idempotent command.

    python -m directions setup                    # the paper's five directions + the default networks
    python -m directions setup --check            # what is installed and what is missing; downloads nothing
    python -m directions setup --base-url URL     # a mirror holding BASE/<weights file name> for every file

Two parts, each tried even when the other fails:

* directions: the paper's official five (:mod:`directions.official`, sha256 pinned), written to the directions folder
  (``$MICROMOTION_HOME/directions``). First, because they are small (5 × 37 kB, from GitHub) and an effect with
  networks but no direction edits nothing. A file of the user's own that has an official direction's name is kept.
* networks: ``engine.weights.DEFAULT_NAMES`` (the generator and the default encoders, ~2.3 GB, resumable) into
  ``$MICROMOTION_HOME/weights``.

What is already there is skipped (no re-download, no rewrite), so the command is also the fix for every "missing"
state: every door (page, Gradio, ``python -m stream``) shows :data:`SETUP_COMMAND` whether the networks or only the
directions are missing. Each failure is one line naming the cause and the fix. Exit status: 0 everything is
installed; 1 a download failed (or, with ``--check``, something is missing); 2 bad usage.

Standard library only at import (torch is loaded by the direction files' reader when directions are installed).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, TextIO, Union

log = logging.getLogger(__name__)

#: The one command every door shows when networks or directions are missing (stream.loader, stream.status).
SETUP_COMMAND = "python -m directions setup"

OK_STATUSES = ("present", "downloaded", "installed", "updated", "unchanged", "kept")


@dataclass
class Step:
    """One item of the setup.

    part:   "direction" | "network".
    name:   the direction name ("smile") or the weights name ("e4e-ffhq").
    status: "present" | "downloaded" (networks), "installed" | "updated" | "unchanged" | "kept" (directions; kept:
            the user's own file of that name), "missing" (--check) or "failed".
    detail: where the file is, or the one-line error (cause and fix).
    """

    part: str
    name: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def line(self) -> str:
        words = {"present": "already present", "unchanged": "already installed",
                 "kept": "kept (your own file, not the official one)", "failed": "FAILED"}
        return f"  {self.name}: {words.get(self.status, self.status)}" + (f" — {self.detail}" if self.detail else "")


@dataclass
class SetupReport:
    """What `setup` / `check` found or did, in order (directions first)."""

    directions_dir: Path
    weights_dir: Path
    steps: list = field(default_factory=list)   # [Step]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failed(self) -> list:
        return [s for s in self.steps if not s.ok]

    def part_ok(self, part: str) -> bool:
        return all(s.ok for s in self.steps if s.part == part)

    def missing_words(self) -> str:
        """'the directions smile, angry and the network e4e-ffhq' -- what is not installed, in words."""
        parts = []
        for part in ("direction", "network"):
            names = [s.name for s in self.failed if s.part == part]
            if names:
                parts.append(f"the {part}{'s' if len(names) > 1 else ''} {', '.join(names)}")
        return " and ".join(parts)

    def summary(self) -> str:
        """One line: ready, or what is missing, what that means for the effect and what to do."""
        n_dir = sum(s.ok for s in self.steps if s.part == "direction")
        n_net = sum(s.ok for s in self.steps if s.part == "network")
        if self.ok:
            return (f"ready: {n_net} network(s) in {self.weights_dir}, {n_dir} direction(s) in "
                    f"{self.directions_dir}; start the page with `python -m web`")
        if not self.part_ok("network"):
            effect = "the front ends track faces only (nothing is edited)"
        else:
            effect = "the effect reconstructs faces but has no direction to edit them with"
        return (f"setup incomplete: {self.missing_words()} not installed; until then {effect}. Fix the cause "
                f"above and run `{SETUP_COMMAND}` again (what is installed is skipped)")


def _folders(folder: Union[str, Path, None]) -> tuple[Path, Path]:
    from directions import files  # noqa: PLC0415
    from engine import weights  # noqa: PLC0415

    return (Path(folder).expanduser() if folder is not None else files.default_dir()), weights.cache_dir()


def check(folder: Union[str, Path, None] = None, networks: Optional[Sequence[str]] = None) -> SetupReport:
    """What is installed, downloading nothing: every official direction in `folder` (default
    ``$MICROMOTION_HOME/directions``) and every network in `networks` (default ``engine.weights.DEFAULT_NAMES``)."""
    from directions import official  # noqa: PLC0415
    from engine import weights  # noqa: PLC0415

    dir_folder, weights_dir = _folders(folder)
    report = SetupReport(dir_folder, weights_dir)
    own = official.user_files(None, dir_folder)
    for name in official.OFFICIAL_NAMES:
        path = dir_folder / f"{name}.safetensors"
        if name in own:
            report.steps.append(_own_file_step(name, path))
        elif path.is_file():
            report.steps.append(Step("direction", name, "present", str(path)))
        else:
            report.steps.append(Step("direction", name, "missing", f"not at {path}"))
    for name in networks or weights.DEFAULT_NAMES:
        path = weights.path_for(name)
        report.steps.append(Step("network", name, "present" if path.is_file() else "missing",
                                 str(path) if path.is_file() else f"not at {path}"))
    return report


def setup(folder: Union[str, Path, None] = None,
          base_url: Optional[str] = None,
          progress: bool = True,
          retries: int = 3,
          networks: Optional[Sequence[str]] = None,
          out: Optional[TextIO] = None,
          err: Optional[TextIO] = None) -> SetupReport:
    """Install the official directions and download the default networks; skip what is there; never raise for a
    failed download (it becomes a "failed" step with its one-line reason).

    folder:   the directions folder (default ``$MICROMOTION_HOME/directions``).
    base_url: a mirror holding ``BASE/<weights file name>`` for every file (default: the official URLs, or
              ``$MICROMOTION_WEIGHTS_BASE_URL``).
    progress: tqdm bars for the downloads (on stderr).
    retries:  attempts after a dropped connection, per file (each resumes).
    networks: weights names (default ``engine.weights.DEFAULT_NAMES``).
    out, err: where the step lines go as they finish, failures to `err` (None: nowhere).
    """
    from engine import weights  # noqa: PLC0415

    dir_folder, weights_dir = _folders(folder)
    report = SetupReport(dir_folder, weights_dir)

    def say(text: str, stream: Optional[TextIO] = out) -> None:
        if stream is not None:
            print(text, file=stream, flush=True)

    def done(step: Step) -> None:
        report.steps.append(step)
        say(step.line(), out if step.ok else err)

    say(f"directions → {dir_folder}")
    steps = _install_directions(dir_folder, base_url, progress)
    report.steps += steps
    for step in steps:
        if step.ok:
            say(step.line())
    failed = [s for s in steps if not s.ok]
    if failed:  # one download failure stops them all: one line
        say(f"  {', '.join(s.name for s in failed)}: FAILED — {failed[0].detail}", err)

    names = list(networks or weights.DEFAULT_NAMES)
    todo = [n for n in names if not weights.path_for(n).is_file()]
    size = sum(weights.entry(n).approx_size_mb for n in todo)
    say(f"networks → {weights_dir}" + (f" (about {size / 1000:.1f} GB to download; resumable)" if todo else ""))
    for name in names:
        done(_download_network(name, base_url, progress, retries))
    return report


def _install_directions(folder: Path, base_url: Optional[str], progress: bool) -> list:
    """Steps for the five official directions: the user's own files of those names kept, the others installed."""
    from directions import official  # noqa: PLC0415
    from engine.weights import WeightsError  # noqa: PLC0415

    steps = []
    try:
        own = official.user_files(None, folder)
    except OSError as exc:
        return [Step("direction", name, "failed", f"cannot read {folder} ({exc})") for name in official.OFFICIAL_NAMES]
    steps += [_own_file_step(name, path) for name, path in own.items()]
    wanted = [n for n in official.OFFICIAL_NAMES if n not in own]
    if not wanted:
        return steps
    try:
        results = official.install(wanted, folder, progress=progress, weights_base_url=base_url)
    except (WeightsError, ValueError, OSError) as exc:  # download / hash / unreadable file / cannot write
        log.debug("official directions failed", exc_info=True)
        reason = str(exc) or type(exc).__name__
        return steps + [Step("direction", name, "failed", reason) for name in wanted]
    return steps + [Step("direction", r.name, r.status, str(r.path)) for r in results]


def _own_file_step(name: str, path: Path) -> Step:
    """A file with an official direction's name that is not the official direction: the user's own build (kept),
    or an unreadable file (failed: setup never deletes a file it did not write)."""
    from directions import files  # noqa: PLC0415

    try:
        files.load(path)
    except (files.DirectionError, OSError) as exc:
        return Step("direction", name, "failed", f"{exc}; delete {path} and run `{SETUP_COMMAND}` again")
    return Step("direction", name, "kept", f"{path}; install the official one elsewhere with "
                                           f"`python -m directions install-official --dir DIR`")


def _download_network(name: str, base_url: Optional[str], progress: bool, retries: int) -> Step:
    from engine import weights  # noqa: PLC0415

    try:
        res = weights.download(name, base_url=base_url, retries=retries, progress=progress)
    except (weights.WeightsError, FileNotFoundError) as exc:
        return Step("network", name, "failed", str(exc))
    return Step("network", name, res.status, str(res.path))


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `setup` (the caller owns the parser and the sub-command dispatch)."""
    parser.add_argument("--check", action="store_true",
                        help="only say what is installed and what is missing (downloads nothing; exit 1 when "
                             "something is missing)")
    parser.add_argument("--dir", default=None,
                        help="directions folder (default $MICROMOTION_HOME/directions, where every door looks)")
    parser.add_argument("--base-url", default=None, metavar="URL",
                        help="mirror holding BASE/<weights file name> for every file (default: the official URLs, "
                             "or $MICROMOTION_WEIGHTS_BASE_URL)")
    parser.add_argument("--retries", type=int, default=3,
                        help="attempts per file after a dropped connection, each resuming (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bars")


def run(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """`python -m directions setup`: one line per item (failures on stderr), then a summary; 0 ready, 1 something
    failed (or, with --check, is missing)."""
    out, err = out or sys.stdout, err or sys.stderr
    if args.retries < 0:
        print("error: --retries must be >= 0", file=err)
        return 2
    if args.check:
        report = check(args.dir)
        for part, title in (("direction", f"directions → {report.directions_dir}"),
                            ("network", f"networks → {report.weights_dir}")):
            print(title, file=out)
            for step in report.steps:
                if step.part == part:
                    print(step.line(), file=out)
    else:
        report = setup(args.dir, base_url=args.base_url, progress=not args.no_progress, retries=args.retries,
                       out=out, err=err)
    if report.ok:
        print(report.summary(), file=out)
        return 0
    if args.check:
        print(f"missing: {report.missing_words()}; install with `{SETUP_COMMAND}`", file=err)
    else:
        print(report.summary(), file=err)
    return 1
