"""Placeholder replaced below."""
from __future__ import annotations

from .base import Dispatcher


class ProcessPoolDispatcher(Dispatcher):  # temporary until the real one lands
    def __init__(self, workers: int = 2) -> None:
        super().__init__()
        self.workers = workers

    def schedule(self, actor, tick):  # type: ignore[no-untyped-def]
        raise NotImplementedError
