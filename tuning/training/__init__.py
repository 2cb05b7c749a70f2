"""Stage 2, training: the QLoRA fine-tune, its callbacks and loss, multi-GPU, the pre-flight estimate, the curves."""
