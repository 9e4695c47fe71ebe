"""Zip archives of supported documents, read in memory with limits on entries, sizes and compression ratio.

Nothing is extracted to disk; members with absolute or '..' paths are refused all the same, as a sign of a
hostile archive. Folders, hidden files and unsupported members are passed over silently.
"""
from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass
from typing import Iterator

from rag.ingest.loaders.errors import (
    CorruptDocumentError,
    LimitExceededError,
    LoaderError,
    UnsafeArchiveError,
)
from rag.ingest.loaders.limits import IngestLimits, human_size, over_limit


@dataclass
class ArchiveMember:
    name: str  # path inside the archive, '/' separated
    data: bytes = b""
    error: LoaderError | None = None


def iter_zip(data: bytes, name: str, limits: IngestLimits, wanted) -> Iterator[ArchiveMember]:
    """Members whose name `wanted(member_name)` accepts, each with its bytes or the reason it was refused.
    Problems with the archive as a whole raise before the first member."""
    archive = _open(data, name)
    infos = [i for i in archive.infolist() if not i.is_dir() and not _ignored(i.filename)]
    _check_archive(infos, name, limits)
    read_total = 0
    for info in infos:
        member = info.filename.replace("\\", "/")
        if _unsafe(member):
            yield ArchiveMember(member, error=UnsafeArchiveError(
                f"{name}: refused member {member!r}: absolute or '..' paths are not allowed in archives. "
                "Re-create the zip from inside the folder you want to upload."))
            continue
        if not wanted(member):
            continue
        try:
            content = _read(archive, info, name, limits)
        except LoaderError as exc:
            yield ArchiveMember(member, error=exc)
            continue
        read_total += len(content)
        if read_total > limits.max_zip_bytes:
            raise LimitExceededError(f"{name} expands to more than {human_size(limits.max_zip_bytes)}; "
                                     "split it into smaller archives or raise RAG_MAX_ZIP_MB.")
        yield ArchiveMember(member, content)


def _open(data: bytes, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CorruptDocumentError(f"{name} is not a readable zip archive ({exc}). Re-create it and upload "
                                   "it again.") from exc


def _check_archive(infos: list[zipfile.ZipInfo], name: str, limits: IngestLimits) -> None:
    if len(infos) > limits.max_zip_entries:
        raise LimitExceededError(f"{name} holds {len(infos)} files; the limit is {limits.max_zip_entries}. "
                                 "Split it into smaller archives or raise RAG_MAX_ZIP_ENTRIES.")
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_zip_bytes:
        shown, limit = over_limit(declared, limits.max_zip_bytes)
        raise LimitExceededError(f"{name} expands to {shown}; the limit is {limit}. Split it or raise "
                                 "RAG_MAX_ZIP_MB.")


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limits: IngestLimits) -> bytes:
    member = info.filename
    if info.file_size > limits.max_file_bytes:
        shown, limit = over_limit(info.file_size, limits.max_file_bytes)
        raise LimitExceededError(f"{name}: {member} is {shown} uncompressed; the limit is {limit} per file "
                                 "(RAG_MAX_FILE_MB).")
    ratio = info.file_size / max(1, info.compress_size)
    if ratio > limits.max_zip_ratio:
        raise LimitExceededError(f"{name}: {member} expands {ratio:.0f}x (limit {limits.max_zip_ratio:.0f}x), "
                                 "which looks like a zip bomb. Upload the file itself, not zipped.")
    try:
        with archive.open(info) as stream:
            content = stream.read(info.file_size + 1)  # never trust the header beyond its declared size
    except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, NotImplementedError) as exc:
        raise CorruptDocumentError(f"{name}: can't read {member} ({exc}); encrypted or damaged members "
                                   "are not supported.") from exc
    if len(content) > info.file_size:
        raise CorruptDocumentError(f"{name}: {member} is larger than its header says; refusing it.")
    return content


def _unsafe(member: str) -> bool:
    if member.startswith("/") or (len(member) > 1 and member[1] == ":"):
        return True
    return ".." in posixpath.normpath(member).split("/") or ".." in member.split("/")


def _ignored(member: str) -> bool:
    parts = member.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")
