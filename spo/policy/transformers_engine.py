"""The in-process policy engine: a Hugging Face causal LM in torch, with prompt-prefix sharing.

Requests are cut into groups (one prompt, K of its samples) and groups of equal K into batches.
A batch prefills each prompt once and decodes its K samples against that single cache
(`spo.policy.prefix_cache`); `share_prefix=False` makes every sample its own group, i.e. each sample
reruns its prompt (the naive baseline). Each sample's randomness comes from (request seed, j) only
(`spo.policy.sampling`), so results do not depend on batching, batch mates or their order.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spo.policy.device import resolve_device
from spo.policy.engine import (
    BATCH_SIZE,
    DTYPES,
    MAX_BATCH_TOKENS,
    SCORE_LOGITS_BUDGET,
    Engine,
    EngineStats,
    Sample,
    SampleRequest,
    dtype_name,
    train_dtype_name,
)
from spo.policy.logprobs import response_logprobs
from spo.policy.prefix_cache import PrefixCache, SuffixCache, check_supported, decode_step, prefill
from spo.policy.sampling import choose_tokens, sample_seed, sample_uniforms

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
"""`spo.policy.engine.DTYPES` as torch dtypes."""
PAD_ID = 0
"""Filler for right padding; any valid id works because padding never reaches a real token."""


def train_dtype(precision: str, model_dtype: str, device: torch.device) -> torch.dtype:
    """The train stage's compute dtype on `device` (`spo.policy.engine.train_dtype_name`): bfloat16 for "bf16",
    float32 for "fp32", and for "auto" bfloat16 exactly where the sampler's `model.dtype` resolves to it.

    >>> train_dtype("auto", "auto", torch.device("cpu")), train_dtype("bf16", "float32", torch.device("cpu"))
    (torch.float32, torch.bfloat16)
    """
    return TORCH_DTYPES[train_dtype_name(precision, model_dtype, device.type == "cuda")]


def set_activation_checkpointing(model: torch.nn.Module, enabled: bool) -> None:
    """Turn transformers' gradient checkpointing of every decoder layer on or off (`train.activation_checkpointing`).

    On, a layer keeps only its input through the forward and reruns itself in the backward (torch's non-reentrant
    checkpoint, which reruns under the autocast state of the forward), but only while the module is in train mode:
    sampling and scoring, in eval mode, are the plain forward. Under FSDP2 the layer's FSDP hooks run inside the
    checkpoint; in the rerun they find the layer already gathered by its pre-backward hook and do nothing.
    """
    if enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # the hook that makes the embedding's output require grad serves frozen embeddings under the reentrant
        # checkpoint; every weight here trains, and the hook would mark that output in no-grad passes too
        model.disable_input_require_grads()
    else:
        model.gradient_checkpointing_disable()


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """ "auto" -> bfloat16 on GPU, float32 on CPU; else a name in DTYPES (`spo.policy.engine.dtype_name`).

    >>> resolve_dtype("auto", torch.device("cpu")), resolve_dtype("bfloat16", torch.device("cpu"))
    (torch.float32, torch.bfloat16)
    """
    return TORCH_DTYPES[dtype_name(dtype, device.type == "cuda")]


@dataclass(frozen=True)
class _Group:
    """Samples first .. first + size - 1 of request `request`, decoded against one prompt cache."""

    request: int
    first: int
    size: int


class TransformersEngine(Engine):
    """Sample and score with a torch causal LM (Llama or Qwen2 layout).

    The engine uses the model where it is, in its dtype, and never changes it (a trainer may hand in
    the module it is training); `load` places a checkpoint on a device and dtype.

    Args:
        model: the policy. Its train/eval mode is left as is; sampling and scoring run without grad.
        tokenizer: its tokenizer.
        batch_size: most sample rows decoded together (and rows scored together).
        max_batch_tokens: most cached tokens per sampling batch (prompt tokens once per group, plus
            rows x max_new_tokens) and most tokens per scoring batch; a batch holds at least one group.
        share_prefix: prefill each prompt once for its n samples; False reruns it for every sample.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        batch_size: int = BATCH_SIZE,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        share_prefix: bool = True,
    ):
        check_supported(model)
        self.model = model
        self.device = model.device
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.share_prefix = share_prefix
        self.stats = EngineStats()

    @classmethod
    def load(
        cls, path: str | Path, *, device: str = "auto", dtype: str = "auto", **options
    ) -> "TransformersEngine":
        """Load model (eval mode) and tokenizer from a Hugging Face checkpoint directory.

        Args:
            path: the checkpoint directory.
            device: "auto" (cuda if available, else cpu) or a torch device name.
            dtype: "auto" (bfloat16 on GPU, float32 on CPU), "float32", "bfloat16" or "float16".
            **options: `batch_size`, `max_batch_tokens`, `share_prefix`.
        """
        device = resolve_device(device)
        model = (
            AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device)).to(device).eval()
        )
        return cls(model, AutoTokenizer.from_pretrained(path), **options)

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def reload(self, path: str | Path) -> None:
        """Copy the weights of the safetensors files at `path` into the live module (its dtype and device)."""
        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors weights to reload")
        state = {}
        for file in files:
            state.update(load_file(file))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or [])
        if unexpected or set(missing) - tied:
            raise ValueError(f"{path}: weights do not fit the live model (missing {sorted(set(missing) - tied)}, "
                             f"unexpected {sorted(unexpected)})")

    def sample(
        self, requests: Sequence[SampleRequest], progress: Callable[[int], None] | None = None
    ) -> list[list[Sample]]:
        self._check_requests(requests)
        groups = self._groups(requests)
        results: list[list[Sample | None]] = [[None] * r.n for r in requests]
        for batch in self._batches(groups, requests):
            for (request, j), sample in self._sample_batch(batch, requests, progress).items():
                results[request][j] = sample
        self._count(requests, groups, results)
        return results

    def score(
        self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], temperature: float
    ) -> list[np.ndarray]:
        if len(prompt_ids) != len(response_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
        scores: list[np.ndarray | None] = [None] * len(prompt_ids)
        for batch in self._score_batches([len(p) for p in prompt_ids], [len(r) for r in response_ids]):
            with torch.inference_mode():
                logprobs, _ = response_logprobs(
                    self.model,
                    [prompt_ids[b] for b in batch],
                    [response_ids[b] for b in batch],
                    temperature,
                    PAD_ID,
                )
            logprobs = logprobs.cpu().numpy()
            for row, b in enumerate(batch):
                scores[b] = logprobs[row, : len(response_ids[b])].copy()
        return scores

    def _score_batches(self, prompt_lengths: list[int], response_lengths: list[int]) -> list[list[int]]:
        """Indices grouped longest first, within batch_size rows, max_batch_tokens and SCORE_LOGITS_BUDGET."""
        order = sorted(range(len(prompt_lengths)), key=lambda b: -(prompt_lengths[b] + response_lengths[b]))
        vocab, batches = self.model.config.vocab_size, []
        for b in order:
            batch = batches[-1] if batches else []
            rows = len(batch) + 1
            first = batch[0] if batch else b  # sorted longest first
            longest = prompt_lengths[first] + response_lengths[first]
            widest = max([response_lengths[i] for i in batch] + [response_lengths[b]])
            fits = (
                rows <= self.batch_size
                and rows * longest <= self.max_batch_tokens
                and rows * widest * vocab <= SCORE_LOGITS_BUDGET
            )
            if batch and fits:
                batch.append(b)
            else:
                batches.append([b])
        return batches

    def _check_requests(self, requests: Sequence[SampleRequest]) -> None:
        vocab, context = self.model.config.vocab_size, self.model.config.max_position_embeddings
        for i, r in enumerate(requests):
            if len(r.prompt_ids) + r.max_new_tokens > context:
                raise ValueError(
                    f"request {i}: prompt of {len(r.prompt_ids)} tokens + max_new_tokens {r.max_new_tokens} "
                    f"exceeds the model context of {context} tokens"
                )
            if not all(0 <= t < vocab for t in r.prompt_ids):
                raise ValueError(f"request {i}: prompt token ids outside the vocabulary [0, {vocab})")

    def _groups(self, requests: Sequence[SampleRequest]) -> list[_Group]:
        """Cut each request into groups of at most batch_size samples (1 sample each without sharing)."""
        size = self.batch_size if self.share_prefix else 1
        return [
            _Group(i, first, min(size, r.n - first))
            for i, r in enumerate(requests)
            for first in range(0, r.n, size)
        ]

    def _batches(self, groups: list[_Group], requests: Sequence[SampleRequest]) -> list[list[_Group]]:
        """Pack groups of equal size into batches, longest prompts first."""
        groups = sorted(groups, key=lambda g: (g.size, -len(requests[g.request].prompt_ids)))
        batches: list[list[_Group]] = []
        for group in groups:
            batch = batches[-1] if batches else []
            if batch and batch[0].size == group.size and self._fits([*batch, group], requests):
                batch.append(group)
            else:
                batches.append([group])
        return batches

    def _fits(self, batch: list[_Group], requests: Sequence[SampleRequest]) -> bool:
        rows = len(batch) * batch[0].size
        prompt = max(len(requests[g.request].prompt_ids) for g in batch)
        steps = max(requests[g.request].max_new_tokens for g in batch)
        return rows <= self.batch_size and len(batch) * prompt + rows * steps <= self.max_batch_tokens

    def _row_settings(
        self, keys: list[tuple[int, int]], requests: Sequence[SampleRequest]
    ) -> dict[str, torch.Tensor]:
        """Per-row sampling settings of a batch whose row b is sample keys[b] = (request, j)."""
        rows = [requests[i] for i, _ in keys]
        widest = max(len(r.stop_token_ids) for r in rows)
        steps = max(r.max_new_tokens for r in rows)
        seeds = [sample_seed(requests[i].seed, j) for i, j in keys]
        settings = {
            "temperature": torch.tensor([r.temperature for r in rows], dtype=torch.float32),
            "top_p": torch.tensor([r.top_p for r in rows], dtype=torch.float32),
            "max_new": torch.tensor([r.max_new_tokens for r in rows]),
            "stops": torch.tensor(
                [[*r.stop_token_ids, *[-1] * (widest - len(r.stop_token_ids))] for r in rows]
            ),
            "uniforms": sample_uniforms(seeds, steps),  # (B, steps)
        }
        return {name: value.to(self.device) for name, value in settings.items()}

    @torch.inference_mode()
    def _sample_batch(
        self, batch: list[_Group], requests: Sequence[SampleRequest], progress: Callable[[int], None] | None
    ) -> dict[tuple[int, int], Sample]:
        """Decode one batch; return {(request index, sample index): sample}."""
        size = batch[0].size
        keys = [(g.request, g.first + k) for g in batch for k in range(size)]  # row b -> (request, j)
        row = self._row_settings(keys, requests)
        rows, steps = row["uniforms"].shape
        prefix, logits = prefill(self.model, [requests[g.request].prompt_ids for g in batch], PAD_ID)
        logits = logits.repeat_interleave(size, 0)  # (B, V)
        positions = prefix.lengths.repeat_interleave(size)  # (B,)
        suffix = SuffixCache.allocate(self.model, rows, max(steps - 1, 0), like=prefix.keys[0])
        tokens = torch.zeros(rows, steps, dtype=torch.long, device=self.device)  # (B, T)
        logprobs = torch.zeros(rows, steps, dtype=torch.float32, device=self.device)  # (B, T)
        lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)
        stopped = torch.zeros_like(finished)
        live = torch.arange(rows, device=self.device)  # the original row of each row still decoded
        for step in range(steps):
            token, logprob = choose_tokens(
                logits, row["uniforms"][live, step], row["temperature"][live], row["top_p"][live]
            )
            writing = ~finished[live]
            tokens[live[writing], step] = token[writing]
            logprobs[live[writing], step] = logprob[writing]
            lengths[live[writing]] = step + 1
            hit_stop = writing & (token[:, None] == row["stops"][live]).any(-1)
            stopped[live[hit_stop]] = True
            done = writing & (hit_stop | (step + 1 >= row["max_new"][live]))
            finished[live[done]] = True
            if progress is not None and bool(done.any()):
                progress(int(done.sum()))
            if bool(finished.all()):
                break
            prefix, suffix, live, token = _drop_finished_groups(prefix, suffix, live, token, finished, size)
            logits = decode_step(self.model, token, positions[live] + step, prefix, suffix)
        lengths, stopped = lengths.tolist(), stopped.tolist()
        token_lists, logprob_lists = tokens.tolist(), logprobs.tolist()
        return {
            key: Sample(
                tuple(token_lists[b][: lengths[b]]),
                "stop" if stopped[b] else "length",
                tuple(logprob_lists[b][: lengths[b]]),
            )
            for b, key in enumerate(keys)
        }

    def _count(
        self, requests: Sequence[SampleRequest], groups: list[_Group], results: list[list[Sample]]
    ) -> None:
        self.stats.requests += len(requests)
        self.stats.samples += sum(r.n for r in requests)
        self.stats.prompt_tokens += sum(len(r.prompt_ids) * r.n for r in requests)
        self.stats.prefill_tokens += sum(len(requests[g.request].prompt_ids) for g in groups)
        self.stats.shared_prefix_tokens += sum(
            len(requests[g.request].prompt_ids) * (g.size - 1) for g in groups
        )
        self.stats.sampled_tokens += sum(len(s.token_ids) for samples in results for s in samples)


def _drop_finished_groups(
    prefix: PrefixCache,
    suffix: SuffixCache,
    live: torch.Tensor,
    token: torch.Tensor,
    finished: torch.Tensor,
    size: int,
) -> tuple[PrefixCache, SuffixCache, torch.Tensor, torch.Tensor]:
    """Remove groups whose samples all finished, once they are a quarter of the batch.

    Compaction copies the caches, so it waits until it pays for itself.
    """
    group_done = finished[live].view(-1, size).all(1)  # (G,)
    if int(group_done.sum()) * 4 < group_done.numel():
        return prefix, suffix, live, token
    keep_groups = (~group_done).nonzero().squeeze(1)
    keep_rows = (keep_groups[:, None] * size + torch.arange(size, device=live.device)).flatten()
    return prefix.select(keep_groups), suffix.select(keep_rows), live[keep_rows], token[keep_rows]
