"""Throughput of the PPO train step (`spo.ppo.ppo_step`) at a GPU preset's architecture, with random weights.

    python benchmarks/train_step.py                                   # CPU smoke: 2 layers, short rows
    PYTHONPATH=. python benchmarks/train_step.py --device cuda --layers full --micro-batch 2 --length 2048

Runs from the repository alone on a machine with only torch and transformers (no other package, no
network): the model is the family's published architecture (spo/policy/rehearsal.py's configs) with
random weights and float32 master weights, the rows are random token ids, every token is in the loss.
Each optimizer step is one batch of --batch rows in micro-batches of --micro-batch, under bfloat16
autocast with --precision bf16, AdamW as the train stage uses it. Printed: the median seconds per step
after --warmup steps, trained tokens/s, the peak accelerator memory, and the model FLOPs utilisation,
MFU = (6 N + 12 L d s) tokens / seconds / peak (N parameters, L layers, d hidden size, s row length;
the PaLM appendix's count, attention included) against --peak-tflops (default from the GPU's name).
Benchmarks never assert.
"""

import argparse
import random
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from spo.policy.rehearsal import FAMILIES, rehearsal_config
from spo.ppo import Episode, PPOSettings, ppo_step

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
"""Dense bfloat16 peak per GPU name fragment (vendor datasheets, without sparsity)."""


def peak_tflops(device: torch.device, given: float) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def rows(vocab: int, count: int, prompt: int, length: int, seed: int) -> list[Episode]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        response = [rng.randrange(vocab) for _ in range(length - prompt)]
        old = [-2.0] * len(response)  # ratio exp(logp + 2): far from 1, so clipping and its masks are exercised
        out.append(Episode([rng.randrange(vocab) for _ in range(prompt)], response,
                           [rng.uniform(-1, 1) for _ in response], [True] * len(response), old, old))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="qwen2.5-instruct", choices=sorted(FAMILIES))
    parser.add_argument("--layers", default="2", help='decoder layers, or "full" for the published depth')
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16" if torch.cuda.is_available() else "fp32", choices=["bf16", "fp32"],
                        help="bf16 by default on a GPU; fp32 on a CPU, where bfloat16 matmuls without AVX512-BF16 "
                             "or AMX run at a small fraction of float32's speed")
    parser.add_argument("--batch", type=int, default=8, help="rows per optimizer step")
    parser.add_argument("--micro-batch", type=int, default=2, help="rows per forward/backward")
    parser.add_argument("--length", type=int, default=128, help="tokens per row (prompt + response)")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per row (not in the loss)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="accelerator peak (default: by GPU name)")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = rehearsal_config(args.family, None if args.layers == "full" else int(args.layers))
    torch.manual_seed(0)  # the weights are random; the script owns this seed
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-8)
    settings = PPOSettings(micro_batch_size=args.micro_batch, temperature=1.0, pad_id=0, clip=0.2, kl_coef=1e-4,
                           whiten="micro_batch", grad_clip=1.0)
    print(f"{args.family}: {config.num_hidden_layers} layers, {n_params / 1e6:.1f}M parameters (float32 master), "
          f"{device}, {args.precision}; batch {args.batch} x {args.length} tokens, micro-batch {args.micro_batch}")
    seconds = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.warmup + args.steps):
        batch = rows(config.vocab_size, args.batch, args.prompt, args.length, seed=step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            ppo_step(model, optimizer, batch, settings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
    step_seconds = statistics.median(seconds)
    tokens = args.batch * args.length
    flops = (6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * args.length) * tokens
    peak = peak_tflops(device, args.peak_tflops)
    memory = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
    mfu = f", MFU {flops / step_seconds / (peak * 1e12):.1%} of {peak:.0f} TFLOPS" if peak else ""
    print(f"step {step_seconds:.3f} s (median of {args.steps}), {tokens / step_seconds:.0f} trained tokens/s, "
          f"{flops / step_seconds / 1e12:.2f} TFLOPS{mfu}{memory}")


if __name__ == "__main__":
    main()
