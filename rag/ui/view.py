"""Typed views: what one handler step changes on the page.

A view is a frozen dataclass whose fields are named like the components (`ui.<name>`) they go to, so the
output order is written down once, by the field order: `bind` gives an event both its `outputs` (the
components) and its `fn` (the handler, its views turned into values in that same order). A field left at
`KEEP` leaves its component as it is (gr.skip()); None is a value (it clears a plot or a state).
"""
from __future__ import annotations

import enum
import functools
import inspect
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import gradio as gr


class Keep(enum.Enum):
    """The type of KEEP: an enum member, so it stays one object through copy and pickle (gr.State copies)."""
    KEEP = "keep"

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class View:
    """Base of the views; subclasses only declare fields (all defaulting to KEEP)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def values(self, names: Sequence[str] | None = None) -> list:
        """The values for the components `names` (all fields by default), KEEP as gr.skip(). A field set
        outside `names` would be lost silently, so it is an error."""
        names = self.names() if names is None else tuple(names)
        lost = [n for n in self.names() if n not in names and getattr(self, n) is not KEEP]
        if lost:
            raise ValueError(f"{type(self).__name__} sets {lost}, which this event does not output")
        return [gr.skip() if getattr(self, n) is KEEP else getattr(self, n) for n in names]


def bind(view: type[View], ui: Any, handler: Callable, names: Sequence[str] | None = None) -> dict:
    """`fn` and `outputs` of an event whose handler returns (or yields) `view`s: the components `ui.<name>`
    for `names` (all of the view's fields by default) and the handler, mapped to values in that order.

    The wrapper keeps the handler's signature (functools.wraps), which Gradio reads to pass gr.Request and
    gr.Progress; and it is a generator function exactly when the handler is one, so Gradio still streams."""
    names = view.names() if names is None else tuple(names)
    unknown = set(names) - set(view.names())
    if unknown:
        raise ValueError(f"{view.__name__} has no fields {sorted(unknown)}")

    def mapped(result: View):
        values = result.values(names)
        return values[0] if len(values) == 1 else values  # Gradio takes a single output's value bare

    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def fn(*args, **kwargs):
            for result in handler(*args, **kwargs):
                yield mapped(result)
    else:
        @functools.wraps(handler)
        def fn(*args, **kwargs):
            return mapped(handler(*args, **kwargs))
    return dict(fn=fn, outputs=[getattr(ui, n) for n in names])
