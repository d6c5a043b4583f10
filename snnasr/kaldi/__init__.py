"""Kaldi file formats without Kaldi binaries."""
