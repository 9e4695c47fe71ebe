"""Answers: streamed, cited generation through any OpenAI-compatible endpoint, and a no-key mode."""
from rag.answer.answerer import NO_LLM_LABEL, Answerer, AnswerUpdate, strip_thinking
from rag.answer.citations import Citation, cited_numbers, parse_citations
from rag.answer.history import approx_tokens, bound_history, heuristic_condense
from rag.answer.prompt import SYSTEM_PROMPT, USER_PROMPT, build_messages, neutralise

__all__ = ["Answerer", "AnswerUpdate", "Citation", "parse_citations", "cited_numbers", "build_messages",
           "bound_history", "heuristic_condense", "approx_tokens", "neutralise", "strip_thinking",
           "SYSTEM_PROMPT", "USER_PROMPT", "NO_LLM_LABEL"]
