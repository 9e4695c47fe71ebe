"""What the app keeps on disk, and for how long: uploaded files go once ingested, files uploaded but never
ingested within `UPLOAD_CACHE`, per-session trace files with their session, the rest when the process exits.

(Chunks in the store: `rag.ui.sessions` — a session's uploads go when it ends, orphans at start-up.)
"""
from __future__ import annotations

import atexit
import logging
import shutil
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

# Gradio's `Blocks(delete_cache=(every, age))`: every 5 minutes, delete uploaded files older than 15 minutes.
# An upload that is ingested loses its file at once (`remove_uploaded`); this catches files sent to
# /gradio_api/upload and never submitted, and the rest go when the server stops.
UPLOAD_CACHE = (300, 900)


def upload_folder() -> Path:
    """Gradio's cache of uploaded files (GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def remove_uploaded(paths: Iterable[str | Path]) -> int:
    """Delete the raw uploaded files once their text is in the store, with the folder Gradio made for each
    (so its /gradio_api/file= URL stops serving it). Only files inside Gradio's cache are touched: a caller
    that passes its own files keeps them. Returns how many were deleted."""
    cache, removed = upload_folder(), 0
    for path in paths:
        path = Path(path).resolve()
        if not path.is_relative_to(cache) or path == cache or not path.is_file():
            continue
        try:
            path.unlink()
            removed += 1
            if path.parent != cache and not any(path.parent.iterdir()):
                path.parent.rmdir()
        except OSError:  # already gone, or another request's file shares the folder: nothing to keep safe
            log.debug("could not remove uploaded file %s", path, exc_info=True)
    return removed


def remove_at_exit(folder: Path) -> Path:
    """Delete `folder` (a per-process work folder) when the process exits normally."""
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
