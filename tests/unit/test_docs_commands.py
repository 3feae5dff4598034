"""Every `make` and `nightshift` command the docs show exists, with the options shown.

Commands are taken from the fenced shell blocks and the inline code of README.md, docs/ and the
other guides: `make TARGET` must be a Makefile target; `nightshift COMMAND ...` must parse as
far as its words go: the command exists, each option is one of its own, and its required options
are given (a command named in prose, with no option at all, only has to exist).
"""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from nightshift.cli import _parser
from tests.conftest import REPO

GUIDES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "include" / "pipelines" / "README.md",
    REPO / "bench" / "README.md",
    REPO / "ARCHITECTURE.md",
]
COMMAND = re.compile(r"^(?:\.venv/bin/)?(nightshift|make)\s")


def _shell_lines(text: str) -> list[str]:
    """Lines of fenced shell blocks (continuations joined) and inline code spans."""
    lines: list[str] = []
    for block in re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [line.strip() for line in lines]


def _commands() -> list[tuple[str, str]]:
    found = []
    for guide in GUIDES:
        for line in _shell_lines(guide.read_text()):
            for part in re.split(r"\s*(?:&&|;|\|)\s*", re.sub(r"\s+#.*$", "", line)):
                part = part.strip()
                if part.startswith("$("):
                    part = part.removeprefix("$(").rstrip(')"')
                if COMMAND.match(part):
                    found.append((guide.relative_to(REPO).as_posix(), part))
    return found


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.M))


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _check_nightshift(words: list[str]) -> list[str]:
    """Return what is wrong with ``nightshift WORDS`` (empty when nothing)."""
    parser, problems = _parser(), []
    words = [w for w in words if w not in ("-v", "--verbose")]
    while words and not words[0].startswith("-"):
        sub = _subparser(parser, words[0])
        if sub is None:
            if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
                problems.append(f"no command '{words[0]}' under '{parser.prog}'")
            break
        parser, words = sub, words[1:]
    known = {option for action in parser._actions for option in action.option_strings}
    given = {w.split("=")[0] for w in words if w.startswith("--")}
    problems += [f"'{parser.prog}' has no option {o}" for o in sorted(given - known)]
    mention = not given  # `nightshift backfill` named in prose, not a command to run
    for action in parser._actions:
        if mention:
            break
        if action.required and action.option_strings and not given & set(action.option_strings):
            problems.append(f"'{parser.prog}' needs {action.option_strings[0]}")
    return problems


COMMANDS = _commands()


def test_the_guides_show_commands_at_all() -> None:
    assert len([c for _, c in COMMANDS if "nightshift" in c.split()[0]]) >= 15
    assert len([c for _, c in COMMANDS if c.startswith("make ")]) >= 10


@pytest.mark.parametrize(("guide", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_each_command_exists_with_its_options(guide: str, command: str) -> None:
    words = shlex.split(command.replace("…", "x"))
    if words[0] == "make":
        missing = [w for w in words[1:] if "=" not in w and w not in _make_targets()]
        assert missing == [], f"{guide}: no make target {missing}"
    else:
        problems = _check_nightshift(words[1:])
        assert problems == [], f"{guide}: {command}: {problems}"
