"""models (see README 'Layout')."""
