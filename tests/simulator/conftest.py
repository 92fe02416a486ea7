from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.simulator.helpers import Merchant, NotifyReceiver, fast_config, running_merchant


@pytest.fixture
def receiver() -> NotifyReceiver:
    return NotifyReceiver()


@pytest.fixture
async def merchant(receiver: NotifyReceiver) -> AsyncIterator[Merchant]:
    """An in-process simulator (notify retries at 1/10 000 speed) and a client for it."""
    async with running_merchant(receiver, fast_config()) as merchant:
        yield merchant
