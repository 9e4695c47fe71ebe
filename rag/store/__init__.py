"""The vector store: one Milvus collection (Milvus Lite, a server or Zilliz Cloud) behind `Store`."""
from rag.store.connection import is_remote, lite_database_path, make_client
from rag.store.milvus import CollectionMismatchError, Store

__all__ = ["Store", "CollectionMismatchError", "make_client", "is_remote", "lite_database_path"]
