"""Gradio views over the tuning engine: each handler is a short call into tuning/."""
