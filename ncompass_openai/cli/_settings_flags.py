"""Command-line flags made from a pydantic-settings class: one flag per field, so the two cannot drift.

:func:`command_from_settings` returns a function whose signature Typer reads: each field becomes
``--field-name`` with the field's description as its help, its bounds (``ge``, ``gt``, ``le``, ``lt``)
as Typer's range, a ``Literal`` as a choice, a ``bool`` as ``--x/--no-x`` and a ``list[str]`` as a
repeatable flag. Every flag defaults to "not given", so a flag beats the environment variable and the
environment beats the field's default.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import annotated_types
import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

__all__ = ["command_from_settings", "flag_error"]


def command_from_settings(
    settings: type[BaseSettings],
    run: Callable[[dict[str, Any]], None],
    *,
    names: Mapping[str, str] = {},
    doc: str = "",
) -> Callable[..., None]:
    """A Typer command function with one flag per field; it calls ``run`` with the flags given.

    Args:
        settings: The settings class.
        run: Called with ``{field: value}`` of the flags given on the command line only.
        names: Flag names that differ from the field's (``{"api_keys": "api-key"}``).
        doc: The command's help.
    """
    prefix = str(settings.model_config.get("env_prefix", ""))
    parameters = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_flag(name, field, names, prefix)
        )
        for name, field in settings.model_fields.items()
    ]

    def command(**values: Any) -> None:
        run(
            {
                name: list(v) if isinstance(v, tuple) else v
                for name, v in values.items()
                if v not in (None, [], ())
            }
        )

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = doc
    return command


def _flag(name: str, field: FieldInfo, names: Mapping[str, str], prefix: str) -> Any:
    flag = names.get(name, name.replace("_", "-"))
    kind = _unwrap_optional(field.annotation)
    default = field.get_default(call_default_factory=True)
    shown = "" if default in (None, [], "") else f" Default: {default}."
    options: dict[str, Any] = {
        "help": f"{field.description or ''}{shown} [env: {prefix}{name.upper()}]",
        "show_default": False,
    }
    if kind is bool:
        return Annotated[bool | None, typer.Option(f"--{flag}/--no-{flag}", metavar="", **options)]
    if typing.get_origin(kind) is list:
        return Annotated[list[str] | None, typer.Option(f"--{flag}", **options)]
    if kind in (int, float):
        options.update(_bounds(field))
    return Annotated[kind | None, typer.Option(f"--{flag}", **options)]


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _bounds(field: FieldInfo) -> dict[str, Any]:
    # Typer's ranges are closed: an open bound (gt, lt) is left to the settings' own validation, whose
    # error names the flag (see `flag_error`).
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            bounds["max"] = rule.le
    return bounds


def flag_error(error: ValidationError, names: Mapping[str, str] = {}) -> str:
    """The settings' validation error as one line that names the flag to fix."""
    problems = []
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else ""
        flag = names.get(field, field.replace("_", "-"))
        problems.append(f"--{flag}: {item['msg']}")
    return "Invalid value: " + "; ".join(problems) + "."
