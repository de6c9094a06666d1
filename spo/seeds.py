"""Per-request seeds (docs/design.md#seeds).

Every sampling request gets its own seed, derived from (run seed, iteration, stage, request key), so a
rerun of a stage reproduces its output and two requests with the same prefix still get different samples.
"""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, iteration: int, stage: str, key: str | int) -> int:
    """Return a 63-bit seed that depends on every argument and on nothing else.

    Args:
        run_seed: the run's seed.
        iteration: the policy iteration (or checkpoint index for evaluation).
        stage: the stage name, so stages never share random streams.
        key: what makes the request unique inside the stage (a question id and sample index, a prefix id).

    >>> derive_seed(42, 0, "generate", "q1") == derive_seed(42, 0, "generate", "q1")
    True
    >>> derive_seed(42, 0, "generate", "q1") != derive_seed(42, 1, "generate", "q1")
    True
    """
    text = f"{run_seed}\x1f{iteration}\x1f{stage}\x1f{key}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1
