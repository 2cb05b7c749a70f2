"""Stage 4, the Hugging Face Hub: pushing an adapter, sign-in and tokens, the model card, deploying a Space."""
