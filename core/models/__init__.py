"""Models: the base models training starts from, and the GGUF files chat runs."""
