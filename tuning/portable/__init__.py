"""Runs that leave or enter the app: merged export, GGUF, cluster bundles, adapter import, archives."""
