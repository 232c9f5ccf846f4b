"""Cinder's functional stack over real shelf nodes (see stack.py). The nodes' harness
is tests/appliance.py, shared with the driver tests."""

import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (tests/cinder_functional.rs on a hang) unwinds like Ctrl-C, so the class
    cleanups and the atexit net (appliance.py) still stop the nodes."""
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _interrupt)
