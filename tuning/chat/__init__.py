"""Stage 3, chat and scorecard: the base and tuned model side by side from one model in memory."""
