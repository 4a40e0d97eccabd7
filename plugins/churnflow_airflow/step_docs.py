"""Task docs from the CLI's own help, without importing the task package at parse time.

`step_docs.json` holds `churnflow <command> --help` for every command; `make step-docs`
regenerates it from the installed CLI and a test fails while it is stale. The factory reads
it (one small JSON file) to give every step a `doc_md` that says what its command does, its
options and what its exit codes mean to Airflow.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DOCS_FILE = Path(__file__).with_name("step_docs.json")
HELP_WIDTH = 88


@functools.cache
def command_docs() -> dict[str, dict[str, str]]:
    return json.loads(DOCS_FILE.read_text())


def step_doc_md(argv: Sequence[str], *, runner: str, image: str, profile: str) -> str | None:
    """Markdown for the task of a `churnflow <command>` step; None for any other argv."""
    if len(argv) < 2 or argv[0] != "churnflow" or str(argv[1]) not in command_docs():
        return None
    entry = command_docs()[str(argv[1])]
    return (
        f"**`churnflow {argv[1]}`**: {entry['summary']}\n\n"
        f"Runs `{' '.join(map(str, argv))}` under the `{runner}` runner "
        f"(image `{image}`, resource profile `{profile}`).\n\n"
        f"```text\n{entry['help'].rstrip()}\n```\n\n"
        "Exit code 65 (the input breaks a contract) or 78 (configuration) fails the task "
        "without retries; any other failure is retried with backoff."
    )


def generate() -> dict[str, dict[str, str]]:
    """Every command's one-line summary and `--help`, from the task package's parser."""
    from churnflow.cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {action.dest: action.help or "" for action in commands._choices_actions}
    docs: dict[str, dict[str, str]] = {}
    for name, sub in sorted(commands.choices.items()):
        sub.formatter_class = functools.partial(argparse.HelpFormatter, width=HELP_WIDTH)
        docs[name] = {"summary": summaries.get(name, ""), "help": sub.format_help()}
    return docs


def render(docs: dict[str, Any]) -> str:
    return json.dumps(docs, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # `make step-docs`
    DOCS_FILE.write_text(render(generate()))
    print(f"wrote {DOCS_FILE}")
