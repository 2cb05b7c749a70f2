"""Stage 1b, QA generation: source documents, prompts, backends (local model or an OpenAI-compatible server),
parsing, judging, validation and review of generated pairs."""
