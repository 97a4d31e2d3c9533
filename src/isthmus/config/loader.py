"""Reading the YAML config file: ``${VAR}`` expansion, validation, and problems reported by path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from isthmus.config.schema import FileConfig
from isthmus.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigProblems(ConfigError):
    """Every problem found in a config file, each as ``path: message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _expand(node: Any, env: Mapping[str, str], loc: tuple[int | str, ...], problems: list[str]) -> Any:
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{format_path(loc)}: environment variable {name} is not set")
            return ""

        return _VAR.sub(repl, node)
    if isinstance(node, dict):
        return {k: _expand(v, env, (*loc, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, env, (*loc, i), problems) for i, v in enumerate(node)]
    return node


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{format_path(loc)}: {msg}")
    return problems


def parse_config(text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None) -> FileConfig:
    """Parse and validate config text; raise :class:`ConfigProblems` listing every problem found."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigProblems(source, [f"{where}: invalid YAML: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigProblems(source, ["(root): the file must hold a mapping of settings"])
    problems: list[str] = []
    expanded = _expand(raw, os.environ if env is None else env, (), problems)
    try:
        config = FileConfig.model_validate(expanded)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        raise ConfigProblems(source, problems) from None
    if problems:
        raise ConfigProblems(source, problems)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> FileConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigProblems(str(p), [f"(file): cannot read: {exc.strerror or exc}"]) from None
    return parse_config(text, source=str(p), env=env)
