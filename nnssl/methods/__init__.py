"""methods (see README 'Layout')."""
