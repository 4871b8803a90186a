"""Every `selfsup ...` command line in the README and the documentation parses with the real
parser: each runs in-process through `selfsup.cli.main` with --print_config appended, so an
option that does not exist, an old spelling or a value of the wrong type fails here before a
reader meets it. What the command then printed must hold every option it was given (argparse
would take `--epoch` for `--epochs`; a doc should not).

Read: README.md, docs/**/*.md and the files the pages include (`--8<-- "FILE"`): the lines
of ```bash (sh, shell, console or unmarked) code blocks that start with `selfsup`, joined over
`\\` continuations, without `$ ` prompts or `# comments`; and inline code that is a selfsup
command with options (README's table of commands). ```text blocks show output and refused
spellings and are not parsed; benchmarks/results/RESULTS.md records what ran then and is not read.
Placeholders (DATA, CKPT, RUN) stay as they are: --print_config reads no data or checkpoint.
A ```yaml block whose first line is `# NAME.yaml` is written to the working directory first,
so the commands of its page that read it parse (and check its keys).

`launch pretrain|probe ... -- REST`: --print_config goes before `--`, and REST is parsed as
the `selfsup pretrain` (or `selfsup probe`) command line it is.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from selfsup.cli import main

DOCS = REPO / "docs"
PARSED = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*(`{3,})\s*([\w-]*)")
INCLUDE = re.compile(r"""^\s*-+8<-+\s+["']([^"':]+)""")
INLINE = re.compile(r"`(selfsup [a-z][^`]*--[^`]*)`")
NAMED_YAML = re.compile(r"^#\s*([\w.-]+\.ya?ml)\s*$")


def doc_files() -> list[Path]:
    """README.md, the pages under docs/ (not through its link to benchmarks/), and what the
    pages include."""
    pages = [p for p in sorted(DOCS.rglob("*.md")) if DOCS.resolve() in p.resolve().parents]
    included = []
    for page in [REPO / "README.md", *pages]:
        for line in page.read_text().splitlines():
            if (m := INCLUDE.match(line)) and (REPO / m.group(1)) not in included:
                included.append(REPO / m.group(1))
    return list(dict.fromkeys([REPO / "README.md", *pages, *included]))


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of every fenced block."""
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if current is None and m:
            current = (m.group(1), m.group(2).lower(), number + 1, [])
        elif current is not None and line.strip().startswith(current[0]):
            blocks.append(current[1:])
            current = None
        elif current is not None:
            current[3].append(line)
    return blocks


def joined_lines(first: int, lines: list[str]) -> list[tuple[int, str]]:
    """Shell lines with their `\\` continuations joined and `$ ` prompts removed."""
    out: list[tuple[int, str]] = []
    pending, start = "", first
    for i, line in enumerate(lines):
        if not pending:
            start = first + i
            line = re.sub(r"^\s*\$\s+", "", line)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def selfsup_argv(line: str) -> list[str] | None:
    """The arguments after `selfsup` of one shell command, or None for another command."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, token in enumerate(tokens):
        if token in ("|", "||", "&&", ";"):
            tokens = tokens[:i]
            break
    if not tokens or Path(tokens[0]).name != "selfsup":
        return None
    argv = tokens[1:]
    if not argv or {"-h", "--help", "-V", "--version"} & set(argv):
        return None
    return argv


def doc_commands(path: Path, text: str) -> list[tuple[str, list[str]]]:
    """(where, argv) of every selfsup command in a doc."""
    name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    found = []
    for lang, first, lines in code_blocks(text):
        if lang in PARSED:
            for number, line in joined_lines(first, lines):
                if (argv := selfsup_argv(line)) is not None:
                    found.append((f"{name}:{number}", argv))
    for number, line in enumerate(text.splitlines(), start=1):
        for span in INLINE.findall(line):
            if (argv := selfsup_argv(span)) is not None:
                found.append((f"{name}:{number}", argv))
    return found


def named_yaml_files(text: str) -> dict[str, str]:
    """The ```yaml blocks of a page that name their file in their first line."""
    files = {}
    for lang, _, lines in code_blocks(text):
        if lang in ("yaml", "yml") and lines and (m := NAMED_YAML.match(lines[0].strip())):
            files[m.group(1)] = "\n".join(lines) + "\n"
    return files


COMMANDS = [(where, argv, path) for path in doc_files()
            for where, argv in doc_commands(path, path.read_text())]  # fmt: skip


def printed_config(argv: list[str], capsys) -> dict:
    """What `selfsup ARGV --print_config` prints; a failure names the doc's error."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        code = main([*argv, "--print_config"])
        captured = capsys.readouterr()
        pytest.fail(
            f"selfsup {shlex.join(argv)}: exit {code}, printed no config: "
            f"{captured.err.strip() or captured.out.strip()[-500:]}"
        )
    captured = capsys.readouterr()
    assert done.value.code in (0, None), (
        f"selfsup {shlex.join(argv)}: exit {done.value.code}: {captured.err.strip()[-500:]}"
    )
    return yaml.safe_load(captured.out) or {}


def check_names(argv: list[str], printed: dict) -> None:
    """Every option given is a key of the printed config (no abbreviations)."""
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            continue
        name = arg[2:].split("=", 1)[0].rstrip("+")
        if name in ("config", "print_config"):
            continue
        node = printed
        for part in name.split("."):
            assert isinstance(node, dict) and part in node, (
                f"selfsup {shlex.join(argv)}: --{name} is not an option of its own "
                f"(an abbreviation?); the printed config has no {name}"
            )
            node = node[part]


def check_command(argv: list[str], capsys) -> None:
    """Parse a doc's `selfsup ARGV` as the real command would, options and all."""
    if argv[0] == "launch":
        own, rest = (
            (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
        )
        check_names(own[2:], printed_config(own, capsys))
        if rest and own[1] == "pretrain":
            check_names(rest, printed_config(["pretrain", *rest], capsys))
        elif rest:
            probe = ["probe", "--ckpt", "CKPT", "--data.path", "DATA", *rest]
            check_names(rest, printed_config(probe, capsys))
    else:
        first = 2 if argv[0] == "data" else 1
        check_names(argv[first:], printed_config(argv, capsys))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A working directory with the repository's configs/, as the docs' commands expect."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("where", "argv", "path"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_doc_command_parses(where, argv, path, workdir, capsys):
    for name, text in named_yaml_files(path.read_text()).items():
        (workdir / name).write_text(text)
    check_command(argv, capsys)


def test_the_docs_hold_the_commands_this_test_reads():
    files = {c[2].relative_to(REPO).as_posix() for c in COMMANDS}
    assert {"README.md", "docs/getting-started.md", "docs/evaluation.md", "docs/data.md",
            "launch/README.md"} <= files  # fmt: skip
    kinds = {
        tuple(argv[:2]) if argv[0] in ("launch", "data") else argv[0] for _, argv, _ in COMMANDS
    }
    assert {"pretrain", "knn", "probe", "finetune", "embed", "attention", "reconstruct", "export",
            "summary", ("data", "inspect"), ("launch", "pretrain"), ("launch", "probe")} <= kinds  # fmt: skip


DOC_WITH_A_WRONG_OPTION = """
```bash
selfsup probe --ckpt runs/a --data.path scans.csv \\
    --label_fractions '[0.1,1.0]'   # one letter too many
```
"""


def test_a_doc_with_an_option_that_does_not_exist_fails(workdir, capsys):
    [(where, argv)] = doc_commands(workdir / "page.md", DOC_WITH_A_WRONG_OPTION)
    assert where == "page.md:3" and argv[-1] == "[0.1,1.0]"
    with pytest.raises(pytest.fail.Exception, match="no option --label_fractions"):
        check_command(argv, capsys)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("selfsup probe --ckpt C --data.path D --epoch 3", "no option --epoch"),
        ("selfsup launch pretrain --nodes 2 -- --config configs/dino/vit_tiny_gray64.yaml "
         "--trainer.max_epoch 3", "--trainer.max_epoch"),
        ("selfsup launch probe --ckpt C --data.path D -- --window lung", "write --data.window"),
        ("selfsup data inspect --data D", "--data.path D"),
    ],
)  # fmt: skip
def test_abbreviations_and_the_command_after_launch_are_checked(line, message, workdir, capsys):
    with pytest.raises((AssertionError, pytest.fail.Exception), match=re.escape(message)):
        check_command(selfsup_argv(line), capsys)


def test_continuations_prompts_and_comments():
    text = "```console\n$ selfsup knn --ckpt C \\\n    --data.path D  # the kNN\n$ ls\n```\n"
    assert doc_commands(REPO / "x.md", text) == [
        ("x.md:2", ["knn", "--ckpt", "C", "--data.path", "D"])
    ]
