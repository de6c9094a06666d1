"""Throughput of the transformers engine: naive vs prefix-shared sampling, on one model in one run.

    python benchmarks/engine.py                       # ~10M Llama (BPE vocab 512), CPU float32
    python benchmarks/engine.py --device cuda --model qwen2.5-0.5b-config   # random Qwen2.5-0.5B, bf16
    python benchmarks/engine.py --engines transformers,vllm --threads 2     # and the vLLM engine, side by side

Cases (prompts are random token ids, temperature 1, top_p 1, no stop tokens, so every sample runs
to its length limit):
  mc     16 boundary prefixes of 200 tokens, K = 8 continuations each, 32 new tokens (SPO's MC values)
  batch  64 prompts of 32 tokens, 1 sample each, 64 new tokens (rollout-style batch sampling)
"naive" reruns the prompt for every sample (`share_prefix=False`), "shared" prefills it once. Both use
the same decoder, seeds and batching. Each time is the median of --repeats runs after one warm-up.
The last line is the MC speedup of shared over naive. Benchmarks never assert on time.

On a shared CPU use --threads 1: with 2 threads, every small op waits for a descheduled OpenMP thread
whenever another process holds a core, and the many small decode ops then take seconds, not milliseconds.
"""

import argparse
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from spo.policy.device import resolve_device
from spo.policy.engine import SampleRequest
from spo.policy.rehearsal import QWEN25_05B  # Qwen2.5-0.5B's architecture (config.json values)
from spo.policy.tiny import build_bpe_tokenizer, build_tiny_model
from spo.policy.transformers_engine import TransformersEngine, resolve_dtype


def synthetic_corpus(count: int, seed: int) -> list[str]:
    """Chain-of-thought addition lines, enough to train a 512-token BPE."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        a, b, c = (rng.randint(10, 99) for _ in range(3))
        lines.append(f"Q: {a}+{b}+{c}= A: {a}+{b}={a + b}; {a + b}+{c}={a + b + c}. #### {a + b + c}\n")
    return lines


def build_model(name: str, device: torch.device, dtype: torch.dtype):
    """Return (model, tokenizer, description)."""
    if name == "tiny-10m":
        tokenizer = build_bpe_tokenizer(synthetic_corpus(4000, seed=0), vocab_size=512)
        model = build_tiny_model(
            tokenizer, hidden_size=256, num_layers=8, num_heads=8, intermediate_size=1280
        )
        return model, tokenizer, "Llama, BPE vocab 512, hidden 256, 8 layers, 8 heads, MLP 1280"
    if name == "qwen2.5-0.5b-config":
        torch.manual_seed(0)  # the weights are random; the script, not spo/, owns this seed
        config = Qwen2Config(**QWEN25_05B)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        return model, None, "Qwen2 with Qwen2.5-0.5B's config, random weights, no tokenizer (ids only)"
    raise ValueError(f"unknown model {name!r}; choose one of ['qwen2.5-0.5b-config', 'tiny-10m']")


def cases(vocab: int) -> dict[str, list[SampleRequest]]:
    generator = torch.Generator().manual_seed(1)

    def prompt(length):
        return tuple(torch.randint(4, vocab, (length,), generator=generator).tolist())

    mc = [SampleRequest(prompt(200), n=8, max_new_tokens=32, temperature=1.0, seed=i) for i in range(16)]
    batch = [SampleRequest(prompt(32), n=1, max_new_tokens=64, temperature=1.0, seed=i) for i in range(64)]
    return {"mc": mc, "batch": batch}


def timed(engine, requests: list[SampleRequest], repeats: int) -> tuple[float, int]:
    """Median seconds of `repeats` runs after a warm-up, and sampled tokens per run."""
    engine.sample(requests)
    seconds = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        samples = engine.sample(requests)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), sum(len(s.token_ids) for row in samples for s in row)


def vllm_engine(model, tokenizer, dtype: torch.dtype, folder: Path):
    """The project's vLLM engine over a copy of `model` saved to `folder` (vLLM loads from disk); returns
    (engine, load seconds). A model without a tokenizer gets a BPE one for the scorer."""
    from spo.policy.vllm_engine import VLLMEngine

    model.save_pretrained(folder)
    (tokenizer or build_bpe_tokenizer(synthetic_corpus(2000, seed=0), vocab_size=512)).save_pretrained(folder)
    start = time.perf_counter()
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    engine = VLLMEngine.load(folder, dtype=name, max_model_len=512)
    return engine, time.perf_counter() - start


def hf_generate_seconds(model, requests: list[SampleRequest]) -> float:
    """One timed `generate` (after a warm-up) with every prompt repeated n times, full-vocabulary sampling."""
    ids = torch.tensor([r.prompt_ids for r in requests for _ in range(r.n)], device=model.device)
    steps = requests[0].max_new_tokens
    options = {
        "max_new_tokens": steps,
        "min_new_tokens": steps,
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "temperature": 1.0,
    }
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=0, **options)
        start = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=0, **options)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-10m", choices=["tiny-10m", "qwen2.5-0.5b-config"])
    parser.add_argument("--device", default="auto", help='"auto", "cpu", "cuda", ...')
    parser.add_argument(
        "--dtype", default="auto", help='"auto" (bf16 on GPU, fp32 on CPU), float32, bfloat16'
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case and mode (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--smoke", action="store_true", help="only build the model and sample 2 x 4 tokens")
    parser.add_argument(
        "--hf-reference", action="store_true", help="also time transformers generate() on the naive MC case"
    )
    parser.add_argument("--engines", default="transformers",
                        help="comma-separated: transformers (naive and shared prefix), vllm (needs an extra)")
    parser.add_argument("--no-naive", action="store_true",
                        help="time the transformers engine with prefix sharing only (the naive mode reruns every "
                             "prompt and takes minutes per pass at 0.5B on a CPU)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer, description = build_model(args.model, device, dtype)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"model: {args.model}: {description}; {params:.2f}M params; {device}, {dtype}, "
        f"{torch.get_num_threads()} torch threads"
    )
    if args.smoke:
        request = SampleRequest((1, 2, 3), n=2, max_new_tokens=4, temperature=1.0)
        engine = TransformersEngine(model, tokenizer)
        print("smoke:", [s.token_ids for s in engine.sample([request])[0]])
        return
    chosen = args.engines.split(",")
    unknown = set(chosen) - {"transformers", "vllm"}
    if unknown:
        raise SystemExit(f"--engines: unknown {sorted(unknown)}; choose from transformers, vllm")
    engines = {
        mode: TransformersEngine(model, tokenizer, share_prefix=mode == "shared")
        for mode in (("shared",) if args.no_naive else ("naive", "shared"))
    } if "transformers" in chosen else {}
    if "vllm" in chosen:
        import tempfile

        engines["vllm"], load = vllm_engine(model, tokenizer, dtype, Path(tempfile.mkdtemp()))
        print(f"vllm: engine loaded in {load:.1f} s")
    print(
        f"{'case':<6} {'mode':<7} {'seconds':>8} {'sampled tok/s':>14} {'prefill tok':>12} {'shared tok':>11}"
    )
    medians = {}
    vocab = model.config.vocab_size
    for case, requests in cases(vocab).items():
        for mode, engine in engines.items():
            before = engine.stats.prefill_tokens, engine.stats.shared_prefix_tokens
            seconds, sampled = timed(engine, requests, args.repeats)
            runs = args.repeats + 1
            prefill = (engine.stats.prefill_tokens - before[0]) // runs
            shared = (engine.stats.shared_prefix_tokens - before[1]) // runs
            medians[case, mode] = seconds
            print(
                f"{case:<6} {mode:<7} {seconds:>8.3f} {sampled / seconds:>14.0f} {prefill:>12} {shared:>11}"
            )
    if args.hf_reference:
        print(
            f"reference: transformers generate(), naive MC: {hf_generate_seconds(model, cases(vocab)['mc']):.3f} s"
        )
    if "transformers" in chosen and not args.no_naive:
        print(f"prefix-sharing speedup: {medians['mc', 'naive'] / medians['mc', 'shared']:.2f}x")
    if {"transformers", "vllm"} <= set(chosen):
        for case, label in (("mc", "MC case"), ("batch", "batch case")):
            print(f"vllm/transformers throughput ratio: {medians[case, 'shared'] / medians[case, 'vllm']:.2f}x "
                  f"({label}, {args.model})")


if __name__ == "__main__":
    main()
