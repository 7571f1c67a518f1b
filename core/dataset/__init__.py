"""Datasets: Q&A pairs from the library, and train / validation files built from them."""
