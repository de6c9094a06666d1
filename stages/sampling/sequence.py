"""The one sampling sequence every sampling stage runs (`sample_draws`): fit each draw's request into the
context, derive its seed, shard by question, sample with a progress bar, decode after the draw's head,
count. Generate, resample, the tree levels, evaluate and the warm-start checks differ only in what they
draw from and what they do with the continuations (grade a rollout, average MC rewards, grow a node);
`answer_rows` is the whole of it for graded answers to a task's questions (docs/design.md#seeds)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

from spo.config import PromptConfig
from spo.policy import Engine, SampleRequest
from spo.seeds import derive_seed
from spo.tasks import Example, Task
from stages.runtime.progress import progress_bar
from stages.runtime.resources import prompt_ids
from stages.sampling.shards import Sharding, sharding


@dataclass(frozen=True)
class Continuation:
    """One sampled continuation and the response it completes."""

    token_ids: list[int]
    """The sampled tokens (ending with the stop token when it stopped on one)."""
    text: str
    """The decoded response: the request's head tokens followed by these, special tokens skipped."""
    finish_reason: str
    """"stop" or "length"."""
    logprobs: list[float] | None
    """The engine's sampling log-probs, when it reports them."""

    def grade(self, task: Task, example: Example) -> tuple[float, bool]:
        """(reward, correct) of the whole response (docs/design.md#rewards, #mc-rewards)."""
        return task.grade(self.text, example, finished=self.finish_reason == "stop")

    def reward(self, task: Task, example: Example) -> float:
        """The reward alone (`Task.reward`: no answer comparison where the reward does not need one)."""
        return task.reward(self.text, example, finished=self.finish_reason == "stop")


def fitted_request(prompt_ids, n: int, budget: int, context_size: int, temperature: float, top_p: float,
                   seed: int, eos_id: int) -> SampleRequest:
    """A request for at most `budget` new tokens, lowered so prompt + response fit `context_size`
    (docs/design.md#context-guard); generation stops after EOS."""
    prompt_ids = tuple(prompt_ids)
    return SampleRequest(prompt_ids=prompt_ids, n=n, max_new_tokens=min(budget, context_size - len(prompt_ids)),
                         temperature=temperature, top_p=top_p, seed=seed, stop_token_ids=(eos_id,))


@dataclass(frozen=True)
class Draw:
    """One request of a sampling stage: continuations of `prompt_ids`, whose last `len(head)` tokens are the
    response so far (decoded with each continuation)."""

    prompt_ids: Sequence[int]
    """Everything the continuation follows: the prompt, then the head."""
    head: Sequence[int]
    """The response tokens already in `prompt_ids` (none for a fresh response)."""
    n: int
    """Continuations to sample."""
    seed_key: str
    """What names this request in its stage's seed stream (a question, a prefix, a node)."""
    question_id: str
    """Its question: requests of one question go to one engine when sharded (stages/sampling/shards.py)."""


def sample_draws(engine: Engine, draws: Sequence[Draw], budget: int, context_size: int, temperature: float,
                 top_p: float, seed: int, iteration: int, stream: str, desc: str, prefix: str, ctx=None
                 ) -> tuple[list[SampleRequest], list[list[Continuation]], dict[str, float]]:
    """Sample every draw: at most `budget` new tokens fitted into `context_size`, seeded by
    `derive_seed(seed, iteration, stream, draw.seed_key)`, sharded by question inside a stage (`ctx`; a Dask
    cluster when configured). Returns the requests, result[i][j] the j-th continuation of draws[i], and the
    counters of `sample_continuations`."""
    requests = [fitted_request(d.prompt_ids, d.n, budget, context_size, temperature, top_p,
                               derive_seed(seed, iteration, stream, d.seed_key), engine.tokenizer.eos_token_id)
                for d in draws]
    shards = None if ctx is None else sharding(ctx, [d.question_id for d in draws])
    results, counters = sample_continuations(engine, requests, [d.head for d in draws], desc, prefix, shards)
    return requests, results, counters


def sample_continuations(engine: Engine, requests: Sequence[SampleRequest], heads: Sequence[Sequence[int]],
                         desc: str, prefix: str, shards: Sharding | None = None
                         ) -> tuple[list[list[Continuation]], dict[str, float]]:
    """Sample every request (on a Dask cluster with `shards`, stages/sampling/shards.py), decode each continuation
    after its request's head (the response tokens before it: none for a fresh response, the prefix's for
    an MC continuation or a tree level), and count.

    Returns:
        result[i][j], the j-th continuation of requests[i]; counters `<prefix>/tokens`, `/prefill_tokens`,
        `/shared_prefix_tokens` (0 when sharded: the workers' engines count them) and `/seconds`.
    """
    before = dataclasses.replace(engine.stats)
    start = time.perf_counter()
    extra = {}
    with progress_bar(sum(r.n for r in requests), desc) as bar:
        if shards is None:
            results = engine.sample(requests, progress=bar.update)
        else:
            results, extra = shards.sample(requests, bar.update)
    seconds = time.perf_counter() - start
    decode = engine.tokenizer.decode
    continuations = [
        [Continuation(list(s.token_ids), decode([*head, *s.token_ids], skip_special_tokens=True), s.finish_reason,
                      None if s.logprobs is None else list(s.logprobs)) for s in samples]
        for head, samples in zip(heads, results, strict=True)
    ]
    now = engine.stats  # what this engine prefilled and shared since `before` (docs/design.md#mc-budget)
    counters = {f"{prefix}/tokens": sum(len(c.token_ids) for row in continuations for c in row),
                f"{prefix}/prefill_tokens": now.prefill_tokens - before.prefill_tokens,
                f"{prefix}/shared_prefix_tokens": now.shared_prefix_tokens - before.shared_prefix_tokens,
                f"{prefix}/seconds": round(seconds, 3), **extra}
    return continuations, counters


def answer_rows(engine: Engine, task: Task, prompt: PromptConfig, examples: Sequence[Example], mode: str, n: int,
                temperature: float, max_new_tokens: int, context_size: int, seed: int, desc: str,
                ctx=None) -> list[dict]:
    """Sample `n` answers per example (temperature 0 decodes greedily) and grade them."""
    draws = [Draw(prompt_ids(prompt, task, engine.tokenizer, e), (), n, e.id, e.id) for e in examples]
    # iteration 0 in every seed: each checkpoint is scored on the same draws (common random numbers), so
    # accuracies of two checkpoints differ by their weights, not by the dice
    _, results, _ = sample_draws(engine, draws, max_new_tokens, context_size, temperature, 1.0, seed, 0,
                                 f"evaluate-{mode}", desc, "eval", ctx)
    rows = []
    for example, samples in zip(examples, results):
        for j, sample in enumerate(samples):
            reward, correct = sample.grade(task, example)
            rows.append({"question_id": example.id, "mode": mode, "sample_index": j, "response_text": sample.text,
                         "finish_reason": sample.finish_reason, "reward": reward, "correct": correct,
                         "n_tokens": len(sample.token_ids)})
    return rows
