"""What can be ingested, as one type: a file, folder or zip on disk, an in-memory file, or plain text.

`expand` turns folders into their supported files (recursively, hidden files skipped) with display names;
zips are expanded later, by the ingestor, once their bytes are read under the size limits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence, Union

from rag.errors import InputError
from rag.ingest.loaders import is_supported


@dataclass(frozen=True)
class FileInput:
    """A file, folder (recursive) or .zip on disk. `name` is how users see it (default: the file name)."""
    path: Path
    name: str | None = None


@dataclass(frozen=True)
class BytesInput:
    """An in-memory file; the name's suffix picks the loader."""
    name: str
    data: bytes


@dataclass(frozen=True)
class TextInput:
    """Texts that need no loader, stored as one document called `name`; each text is chunked on its own."""
    name: str
    texts: tuple[str, ...]


Input = Union[FileInput, BytesInput, TextInput]

# Bidirectional controls (LRE..RLO, LRI..PDI, LRM/RLM/ALM) and other C0/C1 controls: in a file name they only
# serve to disguise it — "invoice\u202Efdp.md" shows as "invoicedm.pdf" — so stored names never hold them.
NAME_CONTROLS = re.compile("[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_name(name: str) -> str:
    """A display name without bidi or control characters (the text a user sees is the text stored)."""
    return NAME_CONTROLS.sub("", name)


def file_inputs(paths: Iterable, names: Sequence[str | None] | None = None) -> list[FileInput]:
    """Paths (or `(path, display_name)` tuples) with optional display names, one per path."""
    paths = list(paths)
    names = list(names) if names is not None else [None] * len(paths)
    if len(names) != len(paths):
        raise InputError(f"{len(paths)} paths but {len(names)} names: give one name (or None) per path.")
    inputs = []
    for item, name in zip(paths, names):
        if isinstance(item, tuple):
            item, name = item[0], name or item[1]
        inputs.append(FileInput(Path(item), name))
    return inputs


def expand(inputs: Iterable[Input]) -> list[Input]:
    """Folders become their supported files, named by their path inside the folder; others stay as they are.
    Every name is cleaned of bidi and control characters (`clean_name`)."""
    expanded: list[Input] = []
    for item in inputs:
        if isinstance(item, FileInput) and item.path.is_dir():
            expanded.extend(_folder(item.path))
        elif isinstance(item, FileInput):
            expanded.append(FileInput(item.path, item.name or item.path.name))
        else:
            expanded.append(item)
    return [replace(item, name=clean_name(display_name(item))) for item in expanded]


def display_name(item: Input) -> str:
    return item.name or (item.path.name if isinstance(item, FileInput) else "")


def _folder(folder: Path) -> list[FileInput]:
    found = []
    for f in sorted(folder.rglob("*")):
        relative = f.relative_to(folder)
        if f.is_file() and is_supported(f.name) and not any(p.startswith(".") for p in relative.parts):
            found.append(FileInput(f, relative.as_posix()))
    return found
