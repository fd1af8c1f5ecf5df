"""losses (see README 'Layout')."""
