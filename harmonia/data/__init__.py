"""Datasets: formats read as distributed (one registered reader each), audio, synthesis and the data check."""
