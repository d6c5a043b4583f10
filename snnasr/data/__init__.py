"""Corpus preparation: one module per corpus, all writing Kaldi data dirs (see datadir)."""
