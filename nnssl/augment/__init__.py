"""augment (see README 'Layout')."""
