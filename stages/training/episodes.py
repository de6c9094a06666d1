"""The one episode builder: a row of episodes.parquet, what the train stage trains on, from a response (a chain
rollout, or a tree edge's segment), its advantages and its sampling log-probs.

The loss mask is `spo.advantages.loss_mask` (the probability mask and the stop-token rule) and advantages are
0 outside it, for chain and tree alike. Where the two differ, they follow the reference, and
docs/design.md#episodes states each difference once: which zero-advantage samples are kept, what `reward`
holds, what the iteration's accuracy counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spo.advantages import loss_mask
from spo.config import RunConfig


@dataclass(frozen=True)
class MaskRule:
    """Which response tokens count in the loss (`advantage.prob_mask`, `partition.tau`, `advantage.train_on_eos`)."""

    tau: float
    prob_mask: bool
    train_on_eos: bool
    eos_id: int | None

    @classmethod
    def of(cls, cfg: RunConfig, eos_id: int | None) -> MaskRule:
        return cls(cfg.partition.tau, cfg.advantage.prob_mask, cfg.advantage.train_on_eos, eos_id)


def episode_row(rule: MaskRule, source_id: str, question_id: str, iteration: int, kind: str,
                prompt_ids: Sequence[int], response_ids: Sequence[int], advantages: float | Sequence[float],
                old_logp: Sequence[float], reward: float) -> dict:
    """One episode (without its `episode_id`): `advantages` per token or one for every token (a tree edge),
    kept only inside the loss mask.

    >>> import math
    >>> row = episode_row(MaskRule(0.9, True, False, 2), "3", "q", 0, "rollout", [1], [7, 8, 2], 0.5,
    ...                   [math.log(0.5), math.log(0.95), math.log(0.2)], 1.0)
    >>> row["mask"], row["advantages"]
    ([True, False, False], [0.5, 0.0, 0.0])
    """
    mask = np.array(loss_mask(old_logp, response_ids, rule.tau, rule.prob_mask, rule.train_on_eos, rule.eos_id),
                    dtype=bool)
    values = np.where(mask, np.asarray(advantages, dtype=np.float64), 0.0)
    return {"source_id": source_id, "question_id": question_id, "iteration": iteration, "kind": kind,
            "prompt_ids": list(prompt_ids), "response_ids": list(response_ids), "advantages": values.tolist(),
            "mask": mask.tolist(), "old_logp": list(old_logp), "reward": reward}
