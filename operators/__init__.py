"""Pure, engine-free logic of the flows: nothing here imports bytewax.

Each piece takes its inputs (and the clock, as milliseconds) as arguments, so unit tests
call it directly and a port to another stream engine only rewrites dataflows/ and sources/.
"""
