"""Console scripts: one thin module per ``nnssl_<verb>``."""
