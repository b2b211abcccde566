"""Corpora and maps: the Corpus, its loaders (bundled digits, uploads), FAISS indexes, 2-D projections, browsing."""
