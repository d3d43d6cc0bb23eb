"""One training loop driven by per-model recipes."""
