"""Plans and run configurations: frozen, versioned dataclasses that round-trip through editable JSON."""
