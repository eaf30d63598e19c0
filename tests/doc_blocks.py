"""The fenced blocks of README.md and docs/*.md, taken apart the way tests/test_docs_examples.py and
tests/ros/test_ros_doc_examples.py run them, so the docs cannot drift from the code.

A block is a fence whose info string starts with bash, sh, console or python. The line above a fence
may say how to test it, in an HTML comment (GitHub does not show it):

    <!-- test: skip REASON -->        not run, for the REASON given (required). Its repository paths
                                      must still exist and its genie-robot commands still parse.
    <!-- test: env K=V [K=V ...] -->  run with these environment variables

A `python outline` fence (docs/architecture.md) is an API outline, signatures rather than a program,
and is not run. Fences without a language (diagrams, pseudocode) are not code.

Shell text is read as POSIX shell words (shlex): `\\` continues a line, `#` starts a comment, `[--x]`
is an optional flag (run with it, so the flag must exist) and `...` stands for arguments left out.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "console"}
RUNNABLE = SHELL | {"python"}
# Folders and files a reader makes by following the docs: never read from the checkout.
OUTPUTS = {"data", "runs", "models", "bundles", "reports", "outputs", "mlflow.db", "mlruns", "install"}

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(skip|env)\b(.*?)-->\s*$")


@dataclass
class Block:
    doc: str  # path relative to the repository, e.g. "README.md"
    line: int  # 1-based line of the opening fence
    lang: str
    info: str  # the info string after the language
    text: str
    skip: str | None = None  # the reason, when marked skip
    env: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE and "outline" not in self.info.split()


@dataclass
class Command:
    block: Block
    line: int  # 1-based line in the doc where the command starts
    text: str  # as written, continuation lines joined
    argv: list[str]  # shell words: env assignments, then the program and its arguments

    @property
    def where(self) -> str:
        return f"{self.block.doc}:{self.line}"

    @property
    def env(self) -> dict[str, str]:
        """Leading `NAME=value` words."""
        out = {}
        for word in self.argv:
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", word)
            if not m:
                break
            out[m.group(1)] = m.group(2)
        return out

    @property
    def program(self) -> list[str]:
        return self.argv[len(self.env):]


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file of the repository, with its test marker."""
    return parse_blocks(path.read_text().splitlines(), str(path.relative_to(ROOT)))


def parse_blocks(lines: list[str], doc: str) -> list[Block]:
    """Every fenced block of markdown `lines`, with the test marker of the line above it."""
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(2), m.group(3).strip()
        words = info.split()
        lang, rest = (words[0].lower(), " ".join(words[1:])) if words else ("", "")
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        block = Block(doc, i + 1, lang, rest, "\n".join(lines[i + 1 : j]))
        if i > 0 and (marker := _MARKER.match(lines[i - 1])):
            kind, arg = marker.group(1), marker.group(2).strip()
            if kind == "skip":
                block.skip = arg  # "" is caught by the tests: a skip must say why
            else:
                block.env = dict(word.split("=", 1) for word in shlex.split(arg))
        out.append(block)
        i = j + 1
    return out


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped;
    in a console block only `$ ` lines are commands (the rest is their output)."""
    out, lines = [], block.text.splitlines()
    k = 0
    while k < len(lines):
        start, text = k, lines[k]
        while text.rstrip().endswith("\\") and k + 1 < len(lines):
            k += 1
            text = text.rstrip()[:-1] + " " + lines[k].strip()
        k += 1
        if block.lang == "console":
            if not text.lstrip().startswith("$ "):
                continue
            text = text.lstrip()[2:]
        argv = split_words(text)
        if argv:
            out.append(Command(block, block.line + 1 + start, text.strip(), argv))
    return out


def split_words(text: str) -> list[str]:
    """Shell words of one command line; `[--flag]` -> `--flag`, `...` dropped (see module doc)."""
    words = []
    for word in shlex.split(text, comments=True):
        if word == "...":
            continue
        if word.startswith("[") and word.endswith("]") and word[1:2] == "-":
            word = word[1:-1]
        words.append(word)
    return words


def repo_paths(words: list[str]) -> list[str]:
    """The words (or `--flag=value` values) that name files of this repository or ../shared: their
    first component is a top-level entry of the checkout (outputs a reader makes excluded)."""
    top = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} - OUTPUTS
    out = []
    for word in words:
        value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        value = value.removeprefix("./")
        first = value.split("/", 1)[0]
        if value.startswith("../shared/") or ("/" in value and first in top and "*" not in value):
            out.append(value)
    return out
