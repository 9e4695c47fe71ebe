"""The web UI: a Gradio app with the chat, the retrieval inspection panel and the Knowledge tab."""
from rag.ui.assets import launch_options
from rag.ui.layout import EXAMPLE_QUESTIONS, build_app

__all__ = ["build_app", "launch_options", "EXAMPLE_QUESTIONS"]
