"""Fixtures for the agent's unit tests; the simulated cluster lives in ``agentsim``."""

from __future__ import annotations

import pytest

from .agentsim import Sim


@pytest.fixture
def sim() -> Sim:
    return Sim()
