"""encoders (see README 'Layout')."""
