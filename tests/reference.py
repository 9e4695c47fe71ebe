"""The official Qwen3 reference code (model cards) and the Milvus tutorial's helpers, kept verbatim in
substance: the yardstick for parity tests and the baseline in benchmarks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RERANK_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
                 "the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n"
                 "<|im_start|>user\n")
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


# --- Qwen3-Embedding model card (transformers usage) ---------------------------------------------------
def last_token_pool(last_hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
    left_padding = (attention_mask[:, -1].sum() == attention_mask.shape[0])
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths]


def get_detailed_instruct(task_description: str, query: str) -> str:
    return f"Instruct: {task_description}\nQuery:{query}"


class ReferenceEmbedder:
    def __init__(self, path, max_length: int = 8192):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        self.max_length = max_length

    @torch.no_grad()
    def embed(self, input_texts: list[str]) -> Tensor:
        batch_dict = self.tokenizer(input_texts, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt")
        outputs = self.model(**batch_dict)
        embeddings = last_token_pool(outputs.last_hidden_state, batch_dict["attention_mask"])
        return F.normalize(embeddings, p=2, dim=1)


# --- Qwen3-Reranker model card (transformers usage) -------------------------------------------------
class ReferenceReranker:
    def __init__(self, path, max_length: int = 8192, model=None, tokenizer=None, dtype=torch.float32,
                 device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = model or AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.max_length = max_length
        self.prefix_tokens = self.tokenizer.encode(RERANK_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(RERANK_SUFFIX, add_special_tokens=False)

    @staticmethod
    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = DEFAULT_TASK
        return "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(
            instruction=instruction, query=query, doc=doc)

    def process_inputs(self, pairs):
        inputs = self.tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                                max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)
        for key in inputs:
            inputs[key] = inputs[key].to(self.model.device)
        return inputs

    @torch.no_grad()
    def compute_logits(self, inputs):
        batch_scores = self.model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, self.token_true_id]
        false_vector = batch_scores[:, self.token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    def score(self, query: str, documents: list[str], instruction: str | None = None) -> list[float]:
        pairs = [self.format_instruction(instruction, query, d) for d in documents]
        return self.compute_logits(self.process_inputs(pairs))


# --- the Milvus + Qwen3 RAG tutorial's helpers ------------------------------------------------------------
def tutorial_emb_text(embedding_model, text: str, is_query: bool = False):
    """The tutorial embeds one text per call."""
    if is_query:
        embeddings = embedding_model.encode([text], prompt_name="query")
    else:
        embeddings = embedding_model.encode([text])
    return embeddings[0].tolist()


def tutorial_rerank_documents(reference: ReferenceReranker, query: str, documents: list[str],
                              task_instruction: str | None = None) -> list[tuple[str, float]]:
    """The tutorial scores all candidates in one padded batch with full-vocabulary logits, then sorts."""
    scores = reference.score(query, documents, task_instruction)
    return sorted(zip(documents, scores), key=lambda x: x[1], reverse=True)
