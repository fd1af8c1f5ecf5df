"""decoders (see README 'Layout')."""
