"""Mending a Milvus Lite 3 database that a process left right after a flush's commit, before it is opened.

Milvus Lite flushes by writing the rows to Parquet, committing the manifest (which moves `active_wal_number`
past the flushed write-ahead log), and only then deleting that log. A process killed between the commit and
the delete leaves a log whose rows are already in the data files, and Milvus Lite's recovery replays every log
it finds: the rows come back a second time with the same sequence numbers, which its de-duplication (keep the
highest) can't tell apart, so searches and listings show each chunk twice, for good once the next flush
writes the replay out. (Milvus Lite 3.2.2; reproduced in tests/store/test_lite_wal.py.)

A log numbered below the manifest's `active_wal_number` is one whose flush committed: deleting it is what the
interrupted flush was about to do. Logs from the active number on hold writes not yet flushed and are kept.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WAL_FOLDER = "wal"


def drop_flushed_logs(database: Path) -> int:
    """Delete the write-ahead logs of flushes that committed, in every collection of the Milvus Lite database
    folder `database` (which no process may have open). Returns how many collections had such logs."""
    try:  # Milvus Lite's own rules for reading the manifest and naming and deleting its logs
        from milvus_lite.storage.manifest import Manifest
        from milvus_lite.storage.wal import WAL, _cleanup_old_wals
    except ImportError:  # another Milvus Lite layout: its recovery is its own business
        log.debug("Milvus Lite's WAL internals not found; not checking for flushed logs", exc_info=True)
        return 0
    mended = 0
    for manifest_path in sorted(Path(database).rglob(MANIFEST)):
        collection = manifest_path.parent
        wal = collection / WAL_FOLDER
        if not wal.is_dir():
            continue  # a snapshot's copy of a manifest, not a live collection
        try:
            active = Manifest.load(str(collection)).active_wal_number
        except Exception:  # an unreadable manifest: Milvus Lite reports it when it opens the collection
            log.debug("could not read %s", manifest_path, exc_info=True)
            continue
        flushed = [n for n in WAL.find_wal_files(str(wal)) if active is not None and n < active]
        if not flushed:
            continue
        log.warning("Milvus Lite collection %s: the last run stopped right after a flush, leaving its already "
                    "written log %s behind; deleting it so its rows are not read in twice", collection.name,
                    ", ".join(map(str, flushed)))
        _cleanup_old_wals(str(wal), max(flushed))
        mended += 1
    return mended
