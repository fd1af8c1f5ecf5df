"""training (see README 'Layout')."""
