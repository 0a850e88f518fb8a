"""Operator tools (the seed's convenience scripts), from products and the state DB, not from logs."""
