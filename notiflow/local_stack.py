"""Where a running local stack leaves its variables for tools started later.

``make run`` (stack/) writes ``var/stack.env``; command-line tools of every package (``make
api-key``, ``make user-token``, ``make stats``) read it.  It lives here, below all of them,
so that reading it never imports the stack runner: the gateway must not depend on stack/.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = "stack.env"  # in the stack's workdir: var/stack.env for `make run`


def read_env_file(root: Path = ROOT) -> dict[str, str]:
    """A running stack's variables from ``<root>/var/stack.env`` (empty if none runs)."""
    path = Path(root) / "var" / ENV_FILE
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip():
            out[k.strip()] = v.strip()
    return out
