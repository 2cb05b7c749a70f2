"""Kantele's fine-tuning engine (never imports gradio)."""
