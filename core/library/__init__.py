"""The library: documents, their pages and chunks, and search over them."""
