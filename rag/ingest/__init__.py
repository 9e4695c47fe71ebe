"""Ingestion: inputs (files, folders, zips, bytes, texts) -> loaders -> chunks -> vectors -> the store."""
from rag.ingest.ingestor import Chunker, IngestCancelled, Ingestor
from rag.ingest.inputs import BytesInput, FileInput, Input, TextInput
from rag.ingest.report import FileResult, IngestReport

__all__ = ["Ingestor", "Chunker", "IngestCancelled", "Input", "FileInput", "BytesInput", "TextInput", "IngestReport", "FileResult"]
