"""Learning-rate schedules: the multiplier of the peak rate per optimizer step (`train.lr_schedule`,
docs/design.md#optimizer). Plain Python, so that the config can check names against `LR_SCHEDULES` without
importing torch, and so that no stage's code fingerprint depends on the loss through the config."""


def warmup_linear_decay(step: int, total_steps: int, warmup_steps: int) -> float:
    """Return the LR multiplier at optimizer ``step``: linear warm-up, then linear decay to 0.

    Warm-up rises linearly from ``1 / warmup_steps`` (step 0) to 1 (step ``warmup_steps``); the
    multiplier then falls linearly to 0 at ``total_steps`` and stays 0. The reference uses
    DeepSpeed ``WarmupDecayLR`` whose default warm-up is log-shaped
    (``log(step + 1) / log(warmup_steps)``, docs/design.md#optimizer); we use a linear one. Use as
    ``torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_linear_decay(s, total, warmup))``.

    Args:
        step: optimizer steps taken so far, >= 0.
        total_steps: step at which the multiplier reaches 0.
        warmup_steps: warm-up length, 0 <= warmup_steps < total_steps (reference: ceil(0.03 * total)).

    >>> [round(warmup_linear_decay(s, total_steps=6, warmup_steps=2), 2) for s in range(8)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    if not 0 <= warmup_steps < total_steps or step < 0:
        raise ValueError(
            "expected step >= 0 and 0 <= warmup_steps < total_steps, got "
            f"step={step}, warmup_steps={warmup_steps}, total_steps={total_steps} (spo/losses.py)"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def warmup_constant(step: int, total_steps: int, warmup_steps: int) -> float:
    """Return the LR multiplier at optimizer ``step``: the linear warm-up of ``warmup_linear_decay``, then 1.

    >>> [round(warmup_constant(s, total_steps=6, warmup_steps=2), 2) for s in range(8)]
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    return warmup_linear_decay(min(step, warmup_steps), total_steps, warmup_steps)


LR_SCHEDULES = {"linear": warmup_linear_decay, "constant": warmup_constant}
"""`train.lr_schedule`: the multiplier of the peak learning rate per optimizer step (docs/design.md#optimizer)."""
