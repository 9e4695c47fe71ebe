"""The collection's field names, BM25 analyzers and stamp properties, shared by the store and its migration."""

TEXT_MAX = 65535
FIELDS = ["id", "text", "source", "doc_id", "chunk_index", "heading", "content_hash", "owner"]
SPARSE = "sparse"  # BM25 term weights, computed by Milvus from `text` (a function output: never written by us)
# Both Milvus Lite and a Milvus server know these two (Lite has no stemming filters): words split on non-word
# characters and lowercased, or Chinese split into words by jieba (which needs the jieba package).
ANALYZERS = {"standard": {"tokenizer": "standard"}, "jieba": {"tokenizer": "jieba"}}
MODEL_PROPERTY = "rag.embedding_model"  # collection properties: which vector space the collection holds
DIM_PROPERTY = "rag.embedding_dim"
ANALYZER_PROPERTY = "rag.bm25_analyzer"
