"""snnasr: Kaldi-style speech recipes for spiking neural networks, without Kaldi."""

__version__ = "0.1.0"
