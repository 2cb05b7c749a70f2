"""Stage 1, data: loading question-answer files of every shape, the chat template, a visitor's workspace."""
