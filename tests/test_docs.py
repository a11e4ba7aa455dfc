"""Every recipe command in the README and the docs' getting-started and command-line pages parses,
so that a renamed or removed flag fails here rather than in a reader's terminal."""

from __future__ import annotations

import re
import shlex

import pytest

from .conftest import ROOT, run_recipe_in_process

PAGES = ["README.md", "docs/getting-started.md", "docs/command-line.md"]
OPERATORS = {">", ">>", ";", "&&", "|", "||"}


def recipe_commands(page: str) -> list[tuple[str, list[str]]]:
    """``(recipe, arguments)`` of each ``recipes/<name>.py`` command in the page's bash blocks."""
    text = (ROOT / page).read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        variables: dict[str, str] = {}
        for line in block.splitlines():
            tokens = shlex.split(line, comments=True)
            expanded: list[str] = []
            for token in tokens:
                for name, value in variables.items():
                    token = token.replace(f"${name}", value)
                expanded.append(token)
            for token in expanded:  # R=recipes/pong.py; PY=.venv/bin/python
                name, eq, value = token.rstrip(";").partition("=")
                if eq and re.fullmatch(r"[A-Z]+", name):
                    variables[name] = value
            for start, token in enumerate(expanded):
                found = re.fullmatch(r"recipes/(\w+)\.py", token)
                if found:
                    args = []
                    for arg in expanded[start + 1 :]:
                        if arg in OPERATORS:
                            break
                        args.append(arg.rstrip(";"))
                        if arg.endswith(";"):
                            break
                    commands.append((found.group(1), args))
    return commands


COMMANDS = [(page, recipe, args) for page in PAGES for recipe, args in recipe_commands(page)]


def test_the_pages_have_commands_to_check() -> None:
    assert {page for page, _, _ in COMMANDS} == set(PAGES) - {"docs/command-line.md"}
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("page", "recipe", "args"), COMMANDS, ids=[f"{p}:{r} {' '.join(a)}" for p, r, a in COMMANDS])
def test_each_documented_command_parses(page, recipe, args, tmp_path, monkeypatch, capsys) -> None:
    args = [str(ROOT / arg) if arg.startswith("recipes/") else arg for arg in args]  # relative to the clone
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "--config" and not (ROOT / value).is_file():  # written by the page's previous command
            printed = run_recipe_in_process(recipe, ["fit", "--print_config"], tmp_path, monkeypatch, capsys)
            (tmp_path / value).write_text(printed.stdout)
    if "--help" not in args and "--print_config" not in args:
        args.append("--print_config")
    run = run_recipe_in_process(recipe, args, tmp_path, monkeypatch, capsys)
    assert run.returncode == 0, f"{page}: recipes/{recipe}.py {' '.join(args)}\n{run.stderr[-2000:]}"


def test_the_readme_stays_short() -> None:
    """A pitch, the quick start, one results table, everyday use and links: the rest lives in docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_every_file_the_readme_and_the_docs_name_exists() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    named = {
        (page.name, path)
        for page in pages
        for path in re.findall(r"`((?:impala_lit|recipes|bench|tests|docs)/[\w./-]+\.\w+)", page.read_text())
    }
    missing = sorted((page, path) for page, path in named if not (ROOT / path).exists() and "<" not in path)
    assert len(named) > 30 and not missing, missing
