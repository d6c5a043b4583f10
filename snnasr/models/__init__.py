"""Acoustic models: LSTM, GRU, vanilla LIF SNN and the gated multi-bit SNN (``build``)."""

from snnasr.models.registry import AcousticModel, LayerSpec, ModelOutput, build

__all__ = ["AcousticModel", "LayerSpec", "ModelOutput", "build"]
