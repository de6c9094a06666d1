"""`spo rehearse` of one preset of each model family but Qwen2.5-Instruct's (tests/test_rehearse.py has that
one), through the real run flow on a random-weight checkpoint, sampled with transformers: `gsm8k-rho1b-chain`
(the Llama architecture) and `math500-r1distill-tree` (SPO-tree). A module of its own so that the two test
workers (`--dist loadscope`) can take these rehearsals and Qwen's at the same time.
"""

import shutil

import pytest

from stages.runtime.artifacts import read_table
from stages.runtime.registry import unfinished_stages
from stages.runtime.rehearsal import math500_rows
from stages.runtime.run_dir import RunDir
from tests.helpers import run_spo

R1_PROMPT = ("<\uff5cbegin\u2581of\u2581sentence\uff5c><\uff5cUser\uff5c>Solve the following math problem",
             "<\uff5cAssistant\uff5c><think>\n")
FAMILY_REHEARSALS = {  # preset: (tokenizer ids, what a prompt starts and ends with, the stages that sample)
    "gsm8k-rho1b-chain": (32000, ("[MATH_TASK] Problem:\n", "\n\nSolution:"), ("generate", "resample")),
    "math500-r1distill-tree": (151665, R1_PROMPT, ("tree-1", "tree-2")),
}
"""One preset of each model family but Qwen2.5-Instruct's, sampled with transformers."""


@pytest.fixture(scope="module", params=sorted(FAMILY_REHEARSALS))
def family_rehearsal(request, rehearsal_cache, tmp_path_factory, shared_data):
    """`spo rehearse PRESET --engine transformers` on real rows: (preset, stdout, the run). MATH-500 has no train
    split, so the MATH preset rehearses on its test rows (linked into a folder of the test's own)."""
    preset, extra = request.param, []
    if preset.startswith("math500"):
        extra = ["--set", f"task.data={math500_rows(tmp_path_factory.mktemp('math500'))}"]
    run = tmp_path_factory.mktemp("runs") / preset
    status, out, err = run_spo("rehearse", preset, "--engine", "transformers", "--run", str(run), *extra)
    assert status == 0, err[-3000:]
    yield preset, out, RunDir(run)
    shutil.rmtree(run / "checkpoints")


@pytest.mark.slow  # a rehearsal of each family through the flow: about a minute and a half each
def test_each_other_family_rehearses_its_preset_through_every_stage(family_rehearsal):
    preset, out, run = family_rehearsal
    ids, (start, end), sampling = FAMILY_REHEARSALS[preset]
    assert unfinished_stages(run) == [] and (run.checkpoint(1) / "model.safetensors").is_file()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.tokenizer())
    assert len(tokenizer) == ids  # Rho: the 32,000 ids of its stand-in vocabulary; R1: Qwen's 151,665
    for prompt in read_table(run.artifact(0, "prompts")).to_pylist():
        text = tokenizer.decode(prompt["prompt_ids"])
        assert text.startswith(start) and text.endswith(end), text
    table = out[out.index("stage costs (peak RSS: "):]
    for stage in ("warmstart", "evaluate", "prompts", *sampling, "train"):
        assert f"\n{stage} " in table, table
    assert out.rstrip().splitlines()[-1].startswith(f"rehearse: {preset} ran in ")
    print(out)  # the tables, with -s or -rA
