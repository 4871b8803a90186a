"""Options of the commands, read by jsonargparse from function signatures.

Every command takes ``--config FILE`` (a YAML of its options), ``--print_config`` and
flag overrides, as ``selfsup pretrain`` does; the schema is the signature of the
function that declares the options (types, defaults, and the docstring's ``Args:`` as
help), so nothing is declared twice.

Flags are written ``--batch_size`` or ``--batch-size``, and list options take their
values space-separated (``--k 20 200``) as well as jsonargparse's ``--k [20,200]``:
jsonargparse has neither dashes nor ``nargs`` for typed lists, and the commands'
users have always written both.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfsup.errors import ConfigError


def check_yaml(path: str | Path, what: str = "--config") -> dict[str, Any]:
    """The mapping in a YAML file; a missing file or a syntax error is one line with the
    file, line and column."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: no such file.")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}. Fix the file.") from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{path} holds a {type(values).__name__}, not a mapping of options.")
    return values or {}


def config_files(argv: list[str]) -> list[str]:
    """The files given with ``--config FILE`` or ``--config=FILE``."""
    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    return files + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def _is_list(annotation: Any) -> bool:
    types = typing.get_args(annotation) if typing.get_origin(annotation) is not None else ()
    origin = typing.get_origin(annotation)
    return origin in (list, tuple) or any(_is_list(t) for t in types if t is not type(None))


def normalise_argv(argv: list[str], list_options: set[str], bool_options: set[str]) -> list[str]:
    """``--a-b`` -> ``--a_b``; ``--k 20 200`` -> ``--k [20, 200]`` for list options;
    ``--augment`` alone -> ``--augment true`` for bool options."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and not arg.startswith("---"):
            name, eq, value = arg[2:].partition("=")
            name = name.replace("-", "_")
            if name == "no_cache" and not eq:  # the flag users know, as jsonargparse's bool
                out += ["--cache", "false"]
                i += 1
                continue
            arg = f"--{name}{eq}{value}"
            if name in bool_options and not eq:
                following = argv[i + 1] if i + 1 < len(argv) else "--"
                if following.startswith("--") or following.lower() not in ("true", "false"):
                    out += [arg, "true"]
                    i += 1
                    continue
            if name in list_options and not eq:
                values = []
                while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    values.append(argv[i + 1])
                    i += 1
                if len(values) == 1 and values[0].startswith("["):
                    out += [arg, values[0]]
                else:
                    out += [arg, json.dumps([_scalar(v) for v in values])]
                i += 1
                continue
        out.append(arg)
        i += 1
    return out


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_with_options(
    prog: str,
    fn: Callable[..., int],
    argv: list[str],
    defaults: dict[str, Any] | None = None,
    positional: str | None = None,
) -> int:
    """Parse ``argv`` against ``fn``'s signature and call it. A parameter typed with a
    dataclass (:class:`~selfsup.commands.evaluate.EvalSource`) contributes its fields as
    top-level options and receives an instance. ``defaults`` overrides signature
    defaults for this command; ``positional`` names the list parameter that leading
    arguments without a flag fill (``selfsup summary DIR ...``). ``--print_config``
    prints the resolved options and exits 0; errors are one line (ConfigError)."""
    from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

    description = (inspect.getdoc(fn) or "").split("\n\n")[0]
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML of these options")
    hints = typing.get_type_hints(fn)
    groups = {n: t for n, t in hints.items() if dataclasses.is_dataclass(t)}
    for cls in groups.values():
        parser.add_class_arguments(cls, nested_key=None)
    parser.add_function_arguments(fn, nested_key=None, skip=set(groups))
    if defaults:
        parser.set_defaults(**defaults)
    all_hints = {n: t for n, t in hints.items() if n not in groups and n != "return"}
    for cls in groups.values():
        all_hints.update(typing.get_type_hints(cls))
    for path in config_files(argv):
        check_yaml(path)
    if positional and argv and not argv[0].startswith("-"):
        argv = [f"--{positional}", *argv]
    argv = normalise_argv(
        argv,
        {n for n, t in all_hints.items() if _is_list(t)},
        {n for n, t in all_hints.items() if t is bool},
    )
    try:
        config = parser.parse_args(argv).as_dict()
    except ArgumentError as e:
        raise ConfigError(_explain(str(e), sorted(all_hints), prog)) from None
    config.pop("config", None)
    for name, cls in groups.items():
        config[name] = cls(**{f.name: config.pop(f.name) for f in dataclasses.fields(cls)})
    return fn(**config)


def _explain(message: str, options: list[str], prog: str) -> str:
    unknown = re.search(r"(?:unrecognized arguments|Key|Option):?\s*['\"]?-*([\w.]+)", message)
    if unknown and unknown.group(1) not in options:
        name = unknown.group(1)
        close = difflib.get_close_matches(name, options, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join('--' + c for c in close)}?" if close else ""
        return f"no option --{name}.{hint} See {prog} --help."
    return f"{' '.join(message.split())[:300]} (see {prog} --help)."


def print_result(result: dict[str, Any]) -> None:
    """The evaluators' last line of stdout: one JSON object."""
    print(json.dumps(result), flush=True)
