"""One option grammar for every command: jsonargparse's, as LightningCLI reads ``selfsup pretrain``.

- ``--name value``, names written with underscores (``--label_fraction``);
- a group's options behind its name and a dot: ``--data.path``, ``--data.window``,
  ``--data.batch_size``. The data group is the signature of
  :class:`selfsup.data.module.PretrainDataModule` for ``pretrain`` and every evaluator alike, so
  one YAML ``data:`` block serves both, and ``--data FILE.yaml`` reads such a block;
- ``--config FILE``: a YAML of the command's options; flags after it override it;
- yes/no options take a value (``--augment true``); list options take one value in
  brackets (``--k [20,200]``), and ``--k+ 500`` appends to the default;
- ``--print_config`` prints every value and exits; ``--help`` lists the options.

The schema of a command is the signature of the function that runs it (types, defaults,
and the docstring's ``Args:`` as help), so nothing is declared twice. Nothing in argv is
rewritten: a spelling of another grammar (``--data X.npz``, ``--window lung``,
``--batch-size 64``, ``--no-cache``, ``--k 20 200``) is one line that names this one.
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

#: Config files jsonargparse reads for a group (``--data FILE``).
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


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


def check_spelling(argv: list[str], options: dict[str, Any], prog: str) -> None:
    """Refuse, with the spelling of this grammar, what another grammar would have meant.

    ``options`` maps every option name (dotted for groups: ``data.path``) to its type.
    Only names are looked at; values pass through as they are."""
    groups = {name.split(".", 1)[0] for name in options if "." in name}
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if not arg.startswith("--") or arg.startswith("---"):
            continue
        name, eq, value = arg[2:].partition("=")
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        name = name.rstrip("+")
        if name in options or name in ("config", "print_config", "help"):
            continue
        if "-" in name:
            fixed = name.replace("-", "_")
            flag = fixed[3:] if fixed.startswith("no_") else None
            if flag in options and options[flag] is bool:
                raise ConfigError(f"--{name}: write --{flag} false. See {prog} --help.")
            if fixed in options or any(f"{g}.{fixed}" in options for g in groups):
                raise ConfigError(
                    f"--{name}: option names are written with underscores: "
                    f"--{_where(fixed, options, groups)}. See {prog} --help."
                )
        if name.startswith("no_") and options.get(name[3:]) is bool:
            raise ConfigError(f"--{name}: write --{name[3:]} false. See {prog} --help.")
        if f"{name}.path" in options and not value.endswith(CONFIG_SUFFIXES):
            raise ConfigError(
                f"--{name} {value}: --{name} reads a YAML of {name} options; the path is "
                f"--{name}.path {value}. See {prog} --help."
            )
        moved = [g for g in groups if f"{g}.{name}" in options]
        if moved:
            raise ConfigError(
                f"--{name} is a {moved[0]} option: write --{moved[0]}.{name}, as in a config's "
                f"{moved[0]}: block. See {prog} --help."
            )


def group_options(name: str, cls: type) -> dict[str, Any]:
    """The options of the group ``name`` a class's signature makes: ``{"data.path": str, ...}``."""
    params = inspect.signature(cls).parameters
    return {f"{name}.{p}": (bool if params[p].annotation in (bool, "bool") else params[p].annotation)
            for p in params}  # fmt: skip


def check_data_spelling(argv: list[str], prog: str) -> None:
    """:func:`check_spelling` for a command whose parser is LightningCLI's (``pretrain``):
    the data options spelled as another grammar spells them."""
    from selfsup.data.module import PretrainDataModule

    check_spelling(argv, group_options("data", PretrainDataModule), prog)


def _where(name: str, options: dict[str, Any], groups: set[str]) -> str:
    if name in options:
        return name
    return next(f"{g}.{name}" for g in sorted(groups) if f"{g}.{name}" in options)


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return True
    return any(_is_list(t) for t in typing.get_args(annotation) if t is not type(None))


def _nested_class(annotation: Any) -> type | None:
    """A class (not a dataclass) whose signature is a group of options: ``data: PretrainDataModule``."""
    plain = inspect.isclass(annotation) and not dataclasses.is_dataclass(annotation)
    if plain and annotation.__module__ not in ("builtins", "pathlib", "typing"):
        return annotation
    return None


def run_with_options(
    prog: str,
    fn: Callable[..., int],
    argv: list[str],
    defaults: dict[str, Any] | None = None,
    positional: str | None = None,
    config_file: bool = True,
    **fixed: Any,
) -> int:
    """Parse ``argv`` against ``fn``'s signature and call it.

    A parameter typed with a dataclass (:class:`~selfsup.commands.evaluate.EvalSource`)
    contributes its fields as top-level options and receives an instance; a parameter
    typed with another class (``data: PretrainDataModule``) is the group ``--data.*`` and
    receives that class built from the group. ``defaults`` overrides signature defaults
    for this command (``{"data.batch_size": 64}``); ``positional`` names the list
    parameter that arguments without a flag fill (``selfsup summary DIR ...``);
    ``config_file`` False leaves ``--config`` to a parameter of that name; ``fixed``
    are passed as they are. Errors are one line (ConfigError)."""
    from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

    description = (inspect.getdoc(fn) or "").split("\n\n")[0]
    # No abbreviations: --epoch must not quietly mean --epochs (argparse's default allows it).
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False,
                            allow_abbrev=False)  # fmt: skip
    if config_file:
        parser.add_argument("--config", action=ActionConfigFile, help="a YAML of these options")
    hints = {n: t for n, t in typing.get_type_hints(fn).items() if n not in fixed}
    hints.pop("return", None)
    flat = {n: t for n, t in hints.items() if dataclasses.is_dataclass(t)}
    nested = {n: c for n, t in hints.items() if (c := _nested_class(t)) is not None}
    for cls in flat.values():
        parser.add_class_arguments(cls, nested_key=None)
    for name, cls in nested.items():
        parser.add_class_arguments(cls, name, sub_configs=True)
    if positional:
        doc = re.search(rf"{positional}: (.+)", inspect.getdoc(fn) or "")
        parser.add_argument(positional, nargs="+", type=str, help=doc.group(1) if doc else None)
    parser.add_function_arguments(
        fn, nested_key=None, skip={*flat, *nested, *fixed, *([positional] if positional else [])}
    )
    if defaults:
        parser.set_defaults(**defaults)

    options: dict[str, Any] = {n: t for n, t in hints.items() if n not in flat and n not in nested}
    for cls in flat.values():
        options.update(typing.get_type_hints(cls))
    for name, cls in nested.items():
        options.update(group_options(name, cls))
    options = {n: (bool if t in (bool, "bool") else t) for n, t in options.items()}
    if config_file:
        for path in config_files(argv):
            check_yaml(path)
    check_spelling(argv, options, prog)
    try:
        config = parser.parse_args(argv)
    except ArgumentError as e:
        raise ConfigError(explain(str(e), options, prog)) from None
    values = config.as_dict()
    values.pop("config", None)
    for name, cls in flat.items():
        values[name] = cls(**{f.name: values.pop(f.name) for f in dataclasses.fields(cls)})
    for name, cls in nested.items():
        group = values.pop(name)
        # Not jsonargparse's own keys (__path__: the file a group was read from). A
        # pretraining block's view pipeline is passed as written: the evaluators read with
        # the checkpoint's eval transform and never build it.
        values[name] = cls(**{k: v for k, v in group.items() if not k.startswith("__")})
    return fn(**values, **fixed)


def explain(message: str, options: dict[str, Any], prog: str) -> str:
    """One line for jsonargparse's error, naming this grammar's spelling."""
    names = sorted(options)
    flat = " ".join(message.split())
    key = re.search(r'(?:Parser key|argument) "?-*([\w.]+)"?', message)
    name = key.group(1) if key else None
    if name and "expected one argument" in flat and options.get(name) is bool:
        return f"--{name} takes a value: --{name} true (or false). See {prog} --help."
    if name and re.search(r"Expected a <class '(list|tuple)'>", flat):
        return (
            f"--{name} takes its values as one list: --{name} [A,B] (no spaces), or --{name}+ A "
            f"to append. See {prog} --help."
        )
    stray = re.search(r"[Uu]nrecognized arguments: ([^-\s]\S*)", message)
    if stray:
        return (
            f"{stray.group(1)}: a value without an option; a list option takes its values as "
            f"one, in brackets (--image [a.png,b.png]). See {prog} --help."
        )
    unknown = re.search(r"(?:[Uu]nrecognized arguments|Key|Option):?\s*['\"]?-*([\w.]+)", message)
    if unknown and unknown.group(1) not in options:
        bad = unknown.group(1)
        close = difflib.get_close_matches(bad, names, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join('--' + c for c in close)}?" if close else ""
        return f"no option --{bad}.{hint} See {prog} --help."
    return f"{flat[:300]} (see {prog} --help)."


def print_result(result: dict[str, Any]) -> None:
    """The evaluators' last line of stdout: one JSON object."""
    print(json.dumps(result), flush=True)
