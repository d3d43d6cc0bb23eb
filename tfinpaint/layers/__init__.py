"""Custom Keras 3 layers shared by the tfinpaint models (one layer family per file)."""
from tfinpaint.layers.attention_transfer import AttentionTransfer, aggregate_residual
from tfinpaint.layers.contextual_attention import ContextualAttention
from tfinpaint.layers.gated_conv import GatedConv2D, GatedUpsample2D
from tfinpaint.layers.partial_conv import PConv2D
from tfinpaint.layers.spectral_norm import SpectralNorm

__all__ = ["AttentionTransfer", "ContextualAttention", "GatedConv2D", "GatedUpsample2D", "PConv2D", "SpectralNorm",
           "aggregate_residual"]
