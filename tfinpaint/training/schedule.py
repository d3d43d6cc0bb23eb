"""The training schedule: how long each phase of a recipe runs, which learning rates are in force, and how
many batches the steps so far drew from the data stream (to resume it exactly)."""
from __future__ import annotations

import math


def phase_lengths(phases, max_steps: int) -> list:
    """Steps of each phase for a run of ``max_steps`` steps.

    Phases with a nominal length keep it when the run is long enough; open phases (``steps=None``) share the
    rest, and without an open phase the last phase runs until ``max_steps``. A shorter run scales every phase
    proportionally (an open phase counts as long as the average fixed phase). Every phase gets at least one
    step, so a run never has fewer steps than phases.
    """
    if not phases:
        raise ValueError("the recipe has no phases")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    fixed = [phase.steps for phase in phases if phase.steps is not None]
    if any(steps < 1 for steps in fixed):
        raise ValueError(f"phase lengths must be >= 1, got {fixed}")
    open_count = len(phases) - len(fixed)
    fixed_total = sum(fixed)
    if fixed_total + open_count <= max_steps:
        if open_count == 0:
            lengths = [phase.steps for phase in phases]
            lengths[-1] += max_steps - fixed_total
            return lengths
        share, extra = divmod(max_steps - fixed_total, open_count)
        lengths, seen = [], 0
        for phase in phases:
            if phase.steps is None:
                lengths.append(share + (1 if seen < extra else 0))
                seen += 1
            else:
                lengths.append(phase.steps)
        return lengths
    open_weight = fixed_total / len(fixed) if fixed else 1.0
    weights = [float(phase.steps) if phase.steps is not None else open_weight for phase in phases]
    scale = max_steps / sum(weights)
    raw = [weight * scale for weight in weights]
    lengths = [max(1, math.floor(value)) for value in raw]
    # Largest remainders first until the lengths add up (the minimum of one step may overshoot instead).
    order = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    for index in order:
        if sum(lengths) >= max_steps:
            break
        lengths[index] += 1
    while sum(lengths) > max(max_steps, len(phases)):
        largest = max(range(len(lengths)), key=lambda i: lengths[i])
        lengths[largest] -= 1
    return lengths


def base_learning_rate(optimizer_config: dict) -> float:
    return float(optimizer_config.get("learning_rate", 1e-3))


class Schedule:
    """The phases of a recipe laid out over a run of ``max_steps`` steps.

    learning_rate: the user's base learning rate (None: the recipe's); every rate of the recipe is scaled by
    its ratio to the recipe's base rate.
    """

    def __init__(self, recipe, max_steps: int, learning_rate: float | None = None):
        self.recipe = recipe
        self.phases = list(recipe.phases)
        self.lengths = phase_lengths(self.phases, max_steps)
        self.total_steps = sum(self.lengths)
        self.learning_rate = learning_rate

    def bounds(self) -> list:
        """(first step, end step) of every phase."""
        bounds, begin = [], 0
        for length in self.lengths:
            bounds.append((begin, begin + length))
            begin += length
        return bounds

    @staticmethod
    def batches_per_step(phase) -> int:
        return (phase.critic_steps if phase.train_discriminator else 0) + (1 if phase.train_generator else 0)

    def batches_consumed(self, step: int) -> int:
        """Global batches the first ``step`` steps drew from the data stream."""
        total = 0
        for phase, (begin, end) in zip(self.phases, self.bounds()):
            total += max(0, min(step, end) - begin) * self.batches_per_step(phase)
        return total

    def learning_rates(self, index: int) -> tuple:
        """(generator, discriminator) learning rates in force in phase ``index``: the latest phase override so
        far, else the base rate, all scaled by the user's learning rate relative to the recipe's base rate."""
        rates = []
        for attribute, optimizer_config in (("g_learning_rate", self.recipe.g_optimizer),
                                            ("d_learning_rate", self.recipe.d_optimizer)):
            if optimizer_config is None:
                rates.append(None)
                continue
            base = base_learning_rate(optimizer_config)
            rate = base
            for phase in self.phases[: index + 1]:
                if getattr(phase, attribute) is not None:
                    rate = float(getattr(phase, attribute))
            scale = self.learning_rate / base if self.learning_rate else 1.0
            rates.append(rate * scale)
        return tuple(rates)
