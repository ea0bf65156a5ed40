"""Gradio web UI mounted on the FastAPI app at ``/ui`` (arrives with the web UI issue)."""
