"""Issue 11, problem 10: every flag of every command line has a help text.

Every module with a `__main__` guard (or named __main__.py) under engine/ directions/ stream/ web/ is a CLI. Each is
run as `python -m MODULE` in-process with argparse's parsing intercepted: the parser it built is walked (sub-commands
included; `python -m directions build` adds its options only when asked for, so it is walked with "build").
"""
from __future__ import annotations

import argparse
import runpy
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("engine", "directions", "stream", "web")


def cli_modules() -> list[str]:
    found = []
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if path.name == "__main__.py" or 'if __name__ == "__main__"' in text:
                parts = path.relative_to(REPO).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    return found


class _Parsed(Exception):
    """Raised instead of parsing: the CLI built its parser."""


def built_parser(module: str, argv: list[str], monkeypatch) -> argparse.ArgumentParser:
    """The parser `python -m module argv...` builds (nothing runs past argument parsing)."""
    parsers = []

    def grab(self, args=None, namespace=None):
        parsers.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", grab)
    monkeypatch.setattr(sys, "argv", [module, *argv])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported by another test
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=False)
        except _Parsed:
            pass
    assert parsers, f"python -m {module} built no argparse parser"
    return parsers[0]


def missing_help(parser: argparse.ArgumentParser, name: str) -> list[str]:
    bad = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest for a in action._choices_actions if a.help}
            for sub, subparser in action.choices.items():
                if sub not in helped:
                    bad.append(f"{name} {sub}: sub-command without help")
                bad += missing_help(subparser, f"{name} {sub}")
            continue
        flag = "/".join(action.option_strings) or action.dest
        text = action.help
        if not text or text == argparse.SUPPRESS:
            bad.append(f"{name} {flag}: no help")
        elif "(default: the default)" in text:
            bad.append(f"{name} {flag}: help says nothing: {text!r}")
    return bad


def test_the_list_of_clis_is_complete():
    modules = cli_modules()
    for expected in ("engine", "engine.weights", "directions", "stream", "web", "web.gradio", "stream.bench_streams"):
        assert expected in modules


@pytest.mark.parametrize("module", cli_modules())
def test_every_flag_has_help(module, monkeypatch):
    argv = ["build"] if module == "directions" else []  # directions.build's main() prepends "build" itself
    parser = built_parser(module, argv, monkeypatch)
    assert missing_help(parser, f"python -m {module}") == []
