"""``--timeout S`` is the whole command's budget, as Ray Tune's ``time_budget_s`` is the whole
experiment's (Optuna's own ``timeout`` covers ``optimize`` alone): the search, the baseline
and the confirmation all fit inside S seconds, from the moment the search is called.

The split: the search runs until ``1 - CONFIRM_SHARE`` of the budget has passed (all of it
with ``--confirm 0``): it starts no trial after that, and a trial still training then is
ended as PRUNED ("out of time") at its next evaluation, so the confirmation's share is its. Confirmation gets what is left, sized
from the search's own measured speed (trial-epochs per second, stacking included) to the top
trials and seeds that fit; it stops starting runs at the end of the budget, and seeds that
not every candidate finished are left out of the comparison, so it stays paired.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

CONFIRM_SHARE = 0.25  # of the budget kept for confirmation, when the command confirms
MIN_SEEDS = 2  # fewer confirmation seeds than this cannot tell a gain from noise


@dataclass
class Budget:
    """The command's clock: ``seconds`` from ``started`` (time.monotonic), None for no budget."""

    seconds: float | None
    confirms: bool
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)  # to tell this process's trials
    search_ended: float | None = None  # when the search's trials were done
    trial_epochs: int = 0  # what the search trained in this process, for the confirmation's size

    @classmethod
    def starting(cls, seconds: float | None, confirms: bool, started: float | None) -> Budget:
        """The budget of a command that began at ``started`` (time.monotonic; None: now)."""
        if started is None:
            return cls(seconds, confirms)
        return cls(seconds, confirms, started, time.time() - (time.monotonic() - started))

    @property
    def search_deadline(self) -> float | None:
        """When the search stops starting trials."""
        if self.seconds is None:
            return None
        share = 1 - CONFIRM_SHARE if self.confirms else 1.0
        return self.started + share * self.seconds

    @property
    def deadline(self) -> float | None:
        """When the command's budget is spent: running work ends at its next evaluation."""
        return None if self.seconds is None else self.started + self.seconds

    def search_seconds_left(self) -> float | None:
        """Optuna's timeout for the search: what is left of its share (at least a moment)."""
        deadline = self.search_deadline
        return None if deadline is None else max(0.001, deadline - time.monotonic())

    def out_of_time(self) -> bool:
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline

    def split_line(self) -> str | None:
        """The line that says how the budget is split, said before the search starts."""
        if self.seconds is None:
            return None
        if not self.confirms:
            return (
                f"Budget: --timeout {self.seconds:g} s for the whole command, all of it the "
                "search's (--confirm 0); a trial still training at the end is pruned there."
            )
        search = (1 - CONFIRM_SHARE) * self.seconds
        return (
            f"Budget: --timeout {self.seconds:g} s for the whole command: the search has "
            f"{search:g} s (a trial still training then is pruned), confirmation the last "
            f"{self.seconds - search:g} s (as many of the top trials and seeds as fit at the "
            "search's speed)."
        )

    def searched(self, trial_epochs: int) -> None:
        """The search is over: it trained ``trial_epochs`` in this process."""
        self.search_ended = time.monotonic()
        self.trial_epochs = trial_epochs

    def confirmation_size(self, top: int, seeds: int, epochs: int) -> tuple[int, int] | str:
        """(top trials, seeds) that fit in what is left, at the search's measured speed; or
        the sentence saying why none fit. ``top`` and ``seeds`` are what was asked."""
        if self.seconds is None:
            return top, seeds
        assert self.search_ended is not None, "searched() comes first"
        left = (self.deadline or 0) - time.monotonic()
        spent = max(1e-3, self.search_ended - self.started)
        rate = self.trial_epochs / spent  # trial-epochs a second, stacking included
        runs = math.floor(left * rate / max(1, epochs)) if rate > 0 else 0
        while seeds >= MIN_SEEDS:
            fit = min(top, runs // seeds - 1)  # the baseline takes a place too
            if fit >= 1:
                return fit, seeds
            seeds -= 1
        if rate <= 0:
            return (
                "Confirmation: skipped, the search finished no trial-epoch inside the budget; "
                "run the same command with --n-trials 0 later to confirm."
            )
        needed = MIN_SEEDS * 2 * epochs / rate
        return (
            f"Confirmation: skipped, {max(0.0, left):.0f} s of the budget are left and the top "
            f"trial and the baseline under {MIN_SEEDS} seeds need about {needed:.0f} s at the "
            f"search's speed; --timeout {math.ceil((self.seconds or 0) + needed - left)} "
            "would confirm, or run the same command with --n-trials 0 later."
        )
