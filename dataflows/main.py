"""The bulk lane: notify.requests.  Run: python -m bytewax.run dataflows.main:flow"""

from dataflows.lane import build_flow

flow = build_flow("requests")
