"""Fixtures for the agent's unit tests; the simulated cluster lives in ``agentsim``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Import this worktree's package, not whichever copy an editable install points at.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from agentsim import Sim  # noqa: E402


@pytest.fixture
def sim() -> Sim:
    return Sim()
