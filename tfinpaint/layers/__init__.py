"""Custom Keras 3 layers shared by the tfinpaint models (one layer family per file)."""
