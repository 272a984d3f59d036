"""Bytewax Dataflow definitions: wiring only.  Logic lives in operators/."""
