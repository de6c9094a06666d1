"""A comparison: arms (a preset plus overrides each) run on the same seeds and compared seed by seed
(`spo compare`, docs/design.md#comparisons)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spo.config import build_table


@dataclass(frozen=True)
class ArmConfig:
    """One arm of a comparison: a preset plus overrides (docs/design.md#comparisons)."""

    label: str
    """Short name, unique in the comparison; the arm's runs are `<comparison>/<label>-s<seed>`."""
    preset: str
    """A preset of data/presets/ (without .toml)."""
    set: tuple[str, ...] = ()
    """`section.field=value` overrides, applied after the comparison's own `set`."""


@dataclass(frozen=True)
class ComparisonConfig:
    """Arms run on the same seeds and compared seed by seed (`spo compare`)."""

    name: str
    """Comparison name; its runs live under `data/runs/<name>/`."""
    description: str = ""
    """What the comparison asks, for the table's title."""
    seeds: tuple[int, ...] = (1, 2, 3)
    """Run seeds; every arm runs every seed, and arms of one seed share their warm start."""
    set: tuple[str, ...] = ()
    """Overrides applied to every arm (e.g. the iteration count), before the arm's own."""
    arms: tuple[ArmConfig, ...] = ()
    """The arms; the first is the reference the others are compared with."""

    def __post_init__(self) -> None:
        labels = [a.label for a in self.arms]
        if not labels:
            raise ValueError(f"comparison {self.name!r}: arms is empty, expected at least one [[arms]] table")
        if len(set(labels)) != len(labels):
            raise ValueError(f"comparison {self.name!r}: arm labels must be unique, got {labels}")
        bad = [label for label in labels if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", label)]
        if bad:
            raise ValueError(f"comparison {self.name!r}: arm labels {bad} must be letters, digits and _.+- "
                             f"(they name folders)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"comparison {self.name!r}: seeds {list(self.seeds)} must be distinct ints >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "comparison") -> ComparisonConfig:
        """Build from a parsed TOML table; unknown keys are errors naming `where`."""
        return build_table(cls, data, where)

    def with_arms(self, labels: Sequence[str]) -> ComparisonConfig:
        """The comparison restricted to the arms labelled `labels`, in that order (the first is the reference).

        >>> c = ComparisonConfig("c", arms=(ArmConfig("a", "tiny"), ArmConfig("b", "tiny"), ArmConfig("c", "tiny")))
        >>> [a.label for a in c.with_arms(["c", "a"]).arms]
        ['c', 'a']
        """
        by_label = {a.label: a for a in self.arms}
        unknown = [label for label in labels if label not in by_label]
        if unknown:
            raise ValueError(f"comparison {self.name!r} has no arm {unknown[0]!r}; its arms: {list(by_label)}")
        return dataclasses.replace(self, arms=tuple(by_label[label] for label in labels))
