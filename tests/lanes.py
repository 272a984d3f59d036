"""Flows for end-to-end test modules: started on fresh recovery folders, always stopped."""

from __future__ import annotations


def run_lanes(env: dict, tmp_path_factory, lanes: tuple[str, ...], tag: str):
    """For a module fixture (``yield from``): the lanes started on fresh recovery folders,
    then stopped, last first, however the module's tests end."""
    from stack.services import start_flow

    started = []
    try:
        for lane in lanes:
            started += start_flow(lane, env, recovery_dir=tmp_path_factory.mktemp(f"{tag}-{lane}"))
        yield started
    finally:
        for s in reversed(started):
            s.stop()
