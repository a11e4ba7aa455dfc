"""MkDocs hook: ``<!-- help: RECIPE SUBCOMMAND -->`` in a page becomes that recipe's ``--help``, run at build time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MARKER = re.compile(r"<!-- help: (\w+) (\w+) -->")


def recipe_help(recipe: str, subcommand: str) -> str:
    """``python recipes/<recipe>.py <subcommand> --help``, at 100 columns."""
    command = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), subcommand, "--help"]
    env = dict(os.environ, COLUMNS="100")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=True)
    return done.stdout


def on_page_markdown(markdown: str, **kwargs) -> str:
    return MARKER.sub(lambda m: f"```text\n{recipe_help(m.group(1), m.group(2)).rstrip()}\n```", markdown)
