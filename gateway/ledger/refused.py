"""How requests refused for want of a valid key (401) are recorded: capped, so that a flood of bad keys
cannot fill the disk faster than served requests do.

The first `limits.refused_rows_per_s` refusals each second get their usage row and access line, as
every request does; past that they are counted, and one `refused_requests_not_recorded` warning a
second says how many were not recorded.
"""

from __future__ import annotations

import time

import structlog

log = structlog.get_logger("gateway.usage")


class RefusedCap:
    __slots__ = ("_second", "_seen", "_skipped", "skipped_total")

    def __init__(self) -> None:
        self._second = -1
        self._seen = 0
        self._skipped = 0
        self.skipped_total = 0

    def allow(self, per_second: int) -> bool:
        """Whether this refusal gets its row and access line."""
        second = int(time.monotonic())
        if second != self._second:
            self.report()
            self._second, self._seen = second, 0
        self._seen += 1
        if self._seen <= per_second:
            return True
        self._skipped += 1
        self.skipped_total += 1
        return False

    def report(self) -> None:
        """Log how many refusals went unrecorded since the last report (at each new second, and at exit)."""
        if self._skipped:
            log.warning("refused_requests_not_recorded", count=self._skipped, total=self.skipped_total)
            self._skipped = 0
