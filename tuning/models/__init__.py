"""The base model: naming it, loading it (4-bit or dense, on the device at hand), sizing its memory."""
