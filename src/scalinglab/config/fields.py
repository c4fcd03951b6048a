"""How a config key declares itself: the `metadata` of its dataclass field, written once.

Each field of a config dataclass states its type (the annotation), its default and, in its
`metadata`, its documentation and its bounds. `scalinglab.config.study.from_dict` checks a config
against them, `scalinglab.config.schema` renders the JSON schema from them, and
`scalinglab.config.reference` the README's key table from that schema, so none of the three
can drift from the others. The keys:

- ``doc``: what the key means (the schema's ``description``, the README's "what" column).
- ``min``, with ``exclusive: True`` for a strict bound; ``max``, with ``exclusive_max: True``:
  bounds of a number, or of every entry of a list.
- ``choices``: the values allowed (for every entry of a list); an optional key may be null too.
- ``min_len``: the fewest entries a list may have.
- ``why``: said after the message of a broken ``min`` bound.
- ``unique``: no entry of a list twice; ``pattern``: a regular expression a string must match.
  The section's own ``__post_init__`` checks both, in words of its own.
- ``own_check``: the section's own code (its ``__post_init__``, or ``validate_corpus``) checks
  this key's bounds and choices, in words of its own; ``from_dict`` checks only its type.
"""

from __future__ import annotations

import dataclasses

from scalinglab.errors import UserError


def positive(doc: str, **more) -> dict:
    """The metadata of a key that must be > 0 (for a list: every entry)."""
    return {"doc": doc, "min": 0, "exclusive": True, **more}


def fraction(doc: str, **more) -> dict:
    """The metadata of a share of a whole: > 0 and <= 1 (``exclusive_max=True``: < 1)."""
    return positive(doc, max=1, **more)


def check_unique(values, key: str) -> None:
    if len(set(values)) != len(values):
        raise UserError(f"{key}: the same value is listed twice")


def check_unique_fields(section, name: str) -> None:
    """`check_unique` on every list field of `section` whose metadata says ``unique``, in field
    order; `name` is the section's key in the study config."""
    for f in dataclasses.fields(section):
        if f.metadata.get("unique"):
            check_unique(getattr(section, f.name), f"{name}.{f.name}")


def check_heads(sizes, key: str) -> None:
    """Each size's n_head divides its n_embd (a ladder in a phase's own section)."""
    for i, size in enumerate(sizes):
        if size.n_embd % size.n_head:
            raise UserError(f"{key}[{i}]: n_head={size.n_head} does not divide "
                            f"n_embd={size.n_embd}")
