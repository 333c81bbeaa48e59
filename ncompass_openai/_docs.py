"""Where an error sends the reader: a section of the package's documentation, named in one place.

An installed wheel ships no ``docs/``, so messages never name a file: they name a section of the
documentation (its source is ``docs/`` in the repository; ``make docs`` builds it as a site). A test
checks that every section named here is a heading there.
"""

from __future__ import annotations

__all__ = ["SECTIONS", "see"]

DOCUMENTATION = "the ncompass-openai documentation"

SECTIONS = {
    "cold starts": "Deployment and cold starts",
    "configuration": "Configuration",
    "plain servers": "A server without nCompass's lifecycle API",
}


def see(topic: str) -> str:
    """The sentence that ends a message: ``See "<section>" in the ncompass-openai documentation.``"""
    return f'See "{SECTIONS[topic]}" in {DOCUMENTATION}.'
