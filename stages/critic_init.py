"""Stage `critic-init`: PPO's initial critic (`advantage.method = "gae"`, docs/design.md#baselines), checkpoint 0's
decoder with a seeded value head, `checkpoints/0000-critic/`."""

from __future__ import annotations

from pathlib import Path

from spo.policy.critic import create_critic
from spo.seeds import derive_seed
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import write_folder_atomic
from stages.runtime.run_dir import RunDir

SPEC = StageSpec(
    name="critic-init",
    module=__name__,
    reads=lambda run, i: [run.checkpoint(0)],
    writes=lambda run, i: [run.critic(0)],
    config=(),
)


def critic_init(run: Path, iteration: int = 0, force: bool = False) -> StageReport:
    """The initial critic: checkpoint 0 with a seeded value head."""
    return execute(SPEC, RunDir(Path(run)), 0, _init, force)


def _init(ctx: StageContext):
    model = create_critic(ctx.run.checkpoint(0), seed=derive_seed(ctx.cfg.seed, 0, "critic-init", "head") % 2**31)
    write_folder_atomic(ctx.output("0000-critic"), model.save_pretrained, staged=ctx.staged)
    return {}, {"critic/parameters": sum(p.numel() for p in model.parameters())}
