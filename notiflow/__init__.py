"""Cross-cutting pieces shared by flows, sinks, loader and the local stack: config and topics."""
