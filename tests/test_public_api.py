"""The public surface: ``__all__`` sorted (ruff's order) and every name in it importable."""

from __future__ import annotations

import importlib

import pytest

import ncompass_openai


def _ruff_order(name: str) -> tuple[int, str]:
    # RUF022's "isort-style" order: SCREAMING_CASE constants, then CamelCase classes, then the rest.
    if name.isupper() or (name.upper() == name and "_" in name):
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted_and_unique() -> None:
    names = list(ncompass_openai.__all__)
    assert names == sorted(names, key=_ruff_order)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ncompass_openai.__all__)
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module("ncompass_openai")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from ncompass_openai import {name}", namespace)
    assert namespace[name] is getattr(module, name)


def test_clients_are_openai_clients() -> None:
    import openai

    from ncompass_openai import AsyncNCompass, NCompass

    assert issubclass(NCompass, openai.OpenAI)
    assert issubclass(AsyncNCompass, openai.AsyncOpenAI)


def test_resources_package_exports() -> None:
    from ncompass_openai import resources

    for name in resources.__all__:
        assert getattr(resources, name) is not None
    assert resources.__all__ == sorted(resources.__all__, key=_ruff_order)


def test_every_docs_section_an_error_names_exists() -> None:
    import re
    from pathlib import Path

    from ncompass_openai._docs import SECTIONS, see

    docs = Path(__file__).resolve().parents[1] / "docs"
    headings = {
        line.lstrip("#").strip()
        for page in docs.glob("*.md")
        for line in page.read_text().splitlines()
        if re.match(r"#{1,6} ", line)
    }
    missing = [section for section in SECTIONS.values() if section not in headings]
    assert not missing, f"errors name sections that docs/ lacks: {missing}"
    assert see("cold starts") == 'See "Deployment and cold starts" in the ncompass-openai documentation.'


def test_tracebacks_name_errors_by_their_public_module() -> None:
    import traceback

    import ncompass_openai as nc

    errors = [getattr(nc, name) for name in nc.__all__ if name.endswith("Error")]
    assert len(errors) >= 10
    for error in errors:
        assert error.__module__ == "ncompass_openai", error
    shown = traceback.format_exception_only(nc.ModelNotRunningError("stopped"))[-1]
    assert shown.startswith("ncompass_openai.ModelNotRunningError: The model is not running")
