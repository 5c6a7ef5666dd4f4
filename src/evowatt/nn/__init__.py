"""Everything that touches torch for building and training networks."""
