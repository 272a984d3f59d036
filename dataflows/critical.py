"""The critical lane: notify.critical, its own process(es), never behind bulk work.

Run: python -m bytewax.run dataflows.critical:flow
"""

from dataflows.lane import build_flow

flow = build_flow("critical")
