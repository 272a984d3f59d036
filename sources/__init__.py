"""Bytewax inputs.  Kept apart from dataflows/ (wiring only) and operators/ (engine-free)."""
