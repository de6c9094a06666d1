"""spo/config.py: overrides, round trips, every field's check, cross-field checks, presets."""

import pytest

from spo.config import ConfigError, RunConfig, added_fields, check_read, field_docs, unread_fields
from spo.overrides import assigned_fields
from stages.runtime.run_dir import COMPARISONS_DIR, PRESETS_DIR, arm_config, load_comparison, load_preset

BAD_VALUES = {
    "model.tiny.tokenizer": '"word"', "model.tiny.bpe_vocab_size": "10", "model.tiny.hidden_size": "0",
    "model.tiny.num_layers": "0", "model.tiny.num_heads": "3", "model.tiny.intermediate_size": "0",
    "model.tiny.max_position_embeddings": "1", "model.engine": "jax", "model.dtype": "int8", "model.device": "gpu",
    "model.vllm_options": "[1]", "task.name": "algebra", "task.options": '{"digitz": 3}',
    "sample.questions_per_iteration": "0", "sample.samples_per_question": "0", "sample.temperature": "-1",
    "sample.top_p": "0", "sample.max_new_tokens": "0", "sample.context_size": "1",
    "partition.method": "random", "partition.tau": "0", "partition.interval": "0", "partition.n_segments": "0",
    "partition.segment_tokens": "0", "partition.max_boundaries": "-1", "resample.k": "0",
    "advantage.method": "ppo", "advantage.prob_mask": "maybe", "advantage.train_on_eos": "maybe",
    "advantage.gamma": "1.5", "advantage.lam": "-0.1", "critic.lr": "0", "critic.value_clip": "0",
    "partition.step_marker": "", "partition.prompt_boundary": "maybe", "resample.max_estimated": "-1",
    "tree.branching": "[]", "tree.replay_max_age": "0", "tree.replay_per_question": "0",
    "train.lr": "0", "train.warmup_ratio": "1", "train.weight_decay": "-0.1", "train.adam_betas": "[0.9]",
    "train.grad_clip": "0", "train.epochs": "0", "train.episodes_per_iteration": "-1", "train.batch_size": "0",
    "train.micro_batch_size": "0", "train.clip": "0", "train.kl_coef": "-1", "train.whiten": "layer",
    "train.lr_schedule": '"cosine"', "train.precision": '"fp16"', "train.loss_agg": "seq_sum",
    "train.clip_high": "-0.1", "train.ratio": "segment", "train.activation_checkpointing": "maybe",
    "advantage.group_std": "maybe",
    "sample.dynamic_sampling": "maybe",
    "sample.dynamic_max_draws": "-1", "sample.overlong_buffer": "-1", "sample.overlong_penalty": "0",
    "eval.every": "0", "eval.questions": "-1", "eval.samples_per_question": "-1", "eval.temperature": "0",
    "eval.greedy": "sometimes", "warmstart.enabled": "maybe", "warmstart.max_steps": "0",
    "warmstart.batch_size": "0", "warmstart.lr": "0", "warmstart.eval_every": "0", "warmstart.eval_questions": "0",
    "warmstart.eval_every_near": "-1", "warmstart.lr_near": "-1",
    "warmstart.band": "[0.5, 0.2]", "retention.optimizer_states": "-1", "retention.checkpoints": "-1", "retention.optimizer_every": "0",
    "train.world_size": "0", "train.sharding": "zero3", "launch.torchrun_args": "5", "launch.dask_workers": "-1",
    "launch.dask_threads": "0", "launch.dask_scheduler": "localhost:8786",
    "log.tensorboard": "maybe", "log.wandb": "sometimes", "log.wandb_project": " ", "log.samples_every": "-1",
    "log.samples": "0", "prompt.chat_template": "maybe", "prompt.system": '"Be brief."',
    "name": " ", "seed": "-1", "algorithm": "spo-forest", "iterations": "0",
}
"""One value per field that the config must refuse."""
CHECKED_AT_RUN_START = {"model.path", "task.data"}
"""Fields whose bad values are files that do not exist: checked when a run starts (stages/runtime/preflight.py)."""


def test_every_field_has_a_bad_value_here():
    assert {name for name, _, _ in field_docs()} == set(BAD_VALUES) | CHECKED_AT_RUN_START


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_of_any_field_is_refused_naming_the_field(name):
    with pytest.raises(ValueError) as error:
        load_preset("tiny").with_overrides([f"{name}={BAD_VALUES[name]}"])
    message = str(error.value)
    assert name in message, message
    assert BAD_VALUES[name].strip('"') in message or "expected" in message, message


def test_round_trip_through_dict():
    cfg = load_preset("tiny").with_overrides(["tree.branching=[3,3,3]", "task.options={\"digits\": 3}", "seed=7"])
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.tree.branching == (3, 3, 3) and cfg.task.options == {"digits": 3} and cfg.seed == 7


@pytest.mark.parametrize("assignment, message", [
    ("sample.tempx=1", "no field 'tempx'"),
    ("samples.temperature=1", "no section 'samples'"),
    ("sample.temperature=hot", "cannot parse 'hot'"),
    ("advantage.prob_mask=yes", "expected true or false"),
    ("temperature", "is not key=value"),
    ("sample.temperature=-1", r"--set: sample.temperature = -1.0: expected > 0"),
])
def test_bad_overrides_name_the_field(assignment, message):
    with pytest.raises(ValueError, match=message):
        RunConfig().with_overrides([assignment])


@pytest.mark.parametrize("assignments, message", [
    (["train.micro_batch_size=48"], "train.batch_size = 64: expected a multiple of train.micro_batch_size = 48"),
    (["partition.method=none"], "advantage.method = 'segment' needs boundary values, but partition.method = 'none'"),
    (["advantage.method=grpo"], "set partition.method = 'none'"),
    (["advantage.method=tree"], "works on spo-tree samples, but algorithm = 'spo-chain'"),
    (["algorithm=spo-tree", "advantage.method=tree"], "partition.method must be 'fixed_length'"),
    (["sample.context_size=200"], "exceeds the tiny model's model.tiny.max_position_embeddings = 128"),
    (["eval.greedy=false", "eval.samples_per_question=0"], "nothing to decode"),
    (["train.world_size=3"], "train.world_size = 3: expected to divide the 1 micro-batches"),
    (["train.world_size=2", "train.micro_batch_size=32", "train.episodes_per_iteration=0"],
     "needs train.episodes_per_iteration"),
    (["train.world_size=2", "train.micro_batch_size=32", "retention.optimizer_every=10"],
     "retention.optimizer_every = 10 needs train.world_size = 1"),
    (["train.loss_agg=token_mean"], (r"train.whiten = 'micro_batch': expected one of \['batch', 'none'\] with "
                                     r"train.loss_agg = 'token_mean'")),
    (["advantage.group_std=false"], ("advantage.group_std = False: expected true with advantage.method = 'segment', "
                                     "which divides by no group std")),
    (["partition.method=none", "advantage.method=rloo", "advantage.group_std=false"],
     "advantage.group_std = False: expected true with advantage.method = 'rloo'"),
    (["sample.dynamic_max_draws=3"], "sample.dynamic_max_draws = 3: has no effect with sample.dynamic_sampling"),
    (["sample.overlong_penalty=0.5"], "sample.overlong_penalty = 0.5: has no effect with sample.overlong_buffer = 0"),
    (["sample.overlong_buffer=49"], "sample.overlong_buffer = 49: expected at most sample.max_new_tokens = 48"),
    (["algorithm=spo-tree", "advantage.method=tree", "partition.method=fixed_length", "sample.dynamic_sampling=true"],
     "sample.dynamic_sampling = True: expected false with algorithm = 'spo-tree'"),
    (["algorithm=spo-tree", "advantage.method=tree", "partition.method=fixed_length", "sample.overlong_buffer=8"],
     "sample.overlong_buffer = 8: expected 0 with algorithm = 'spo-tree'"),
])
def test_combinations_that_make_no_sense_are_refused(assignments, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_preset("tiny").with_overrides(assignments)
    assert "\n" not in str(error.value)


def test_unknown_keys_in_a_file_are_errors():
    with pytest.raises(ValueError, match=r"preset.toml.sample: unknown field\(s\) \['temp'\]"):
        RunConfig.from_dict({"sample": {"temp": 1.0}}, where="preset.toml")


def test_every_field_is_documented():
    undocumented = [name for name, _, doc in field_docs() if not doc]
    assert undocumented == []


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
def test_presets_load(name):
    assert isinstance(load_preset(name), RunConfig)


@pytest.mark.parametrize("name", sorted(p.stem for p in COMPARISONS_DIR.glob("*.toml")))
def test_comparisons_load_and_every_arm_builds(name):
    comparison = load_comparison(name)
    seed = comparison.seeds[0]
    for arm in comparison.arms:
        assert arm_config(comparison, arm, seed).name == f"{name}/{arm.label}-s{seed}"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of .*'tiny'"):
        load_preset("nope")


def test_a_loop_of_base_presets_is_named(tmp_path, monkeypatch):
    import stages.runtime.run_dir

    (tmp_path / "a.toml").write_text('base = "b"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('base = "a"\nname = "b"\n')
    monkeypatch.setattr(stages.runtime.run_dir, "PRESETS_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"b.toml: base = 'a' makes a loop \(a -> b -> a\)"):
        load_preset("a")


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        RunConfig().with_overrides(["sample.temperature=-1", "train.clip=0", "train.whiten=sometimes"])
    message = str(error.value)
    assert "sample.temperature = -1.0: expected > 0" in message and "train.clip = 0.0: expected > 0" in message
    assert "train.whiten = 'sometimes': expected one of ['batch', 'micro_batch', 'none']" in message
    assert "\n" not in message


@pytest.mark.parametrize("field, value", [("algorithm", "spo-forest"), ("train.sharding", "zero3"),
                                          ("model.tiny.tokenizer", "word"), ("train.whiten", "token")])
def test_every_string_choice_is_checked_against_its_registry_when_the_config_loads(field, value):
    with pytest.raises(ConfigError, match=f"{field} = '{value}': expected one of"):
        RunConfig().with_overrides([f"{field}={value}"])


def test_an_added_field_at_its_default_leaves_stage_keys_as_they_were():
    """`ADDED` fields (spo/config.py): a run made before the field existed keeps its keys after an upgrade.
    The hashes are those of the `train` section before `train.lr_schedule` was added (commit 0d8f400)."""
    assert "train.lr_schedule" in added_fields()
    assert RunConfig().section_hash("train") == "87721c1822568a5a"
    assert RunConfig().with_overrides(["train.lr_schedule=constant"]).section_hash("train") != "87721c1822568a5a"


def test_added_fields_named_alone_by_a_stage_leave_its_key_as_it_was():
    """The prompts stage names `sample.dynamic_sampling` and `sample.dynamic_max_draws` (stages/prompts.py); at
    their defaults its key is the one from before they existed (commit 2382780), set they change it."""
    from stages.prompts import SPEC

    assert RunConfig().section_hash(*SPEC.config) == "35160658701138f0"
    assert RunConfig().section_hash(*SPEC.config) == RunConfig().section_hash(*SPEC.config[:-2])
    dynamic = RunConfig().with_overrides(["sample.dynamic_sampling=true"])
    assert dynamic.section_hash(*SPEC.config) != "35160658701138f0"


def test_activation_checkpointing_is_off_by_default_and_in_no_stage_key():
    """`train.activation_checkpointing` changes how the train stages compute, not what (bitwise-equal weights,
    tests/test_ppo.py): like `train.world_size` it is a frontier field, so turning it on in a run that ran out
    of memory never re-keys a finished stage. The hash is the `train` section's before the field existed."""
    from spo.config import is_frontier

    assert RunConfig().train.activation_checkpointing is False and is_frontier("train.activation_checkpointing")
    on = RunConfig().with_overrides(["train.activation_checkpointing=true"])
    assert on.train.activation_checkpointing is True
    assert on.section_hash("train") == RunConfig().section_hash("train") == "87721c1822568a5a"
    with pytest.raises(ConfigError, match="train.activation_checkpointing: expected true or false, got 1"):
        RunConfig.from_dict({"train": {"activation_checkpointing": 1}})


@pytest.mark.parametrize("assignments, message", [
    (["task.data=/nope.jsonl"],
     "task.data = '/nope.jsonl' is set, but task.name = 'arith' never reads it (only task.name in ['gsm8k', 'math500']"),
    (["tree.branching=[2,2]"],
     "tree.branching = [2, 2] is set, but algorithm = 'spo-chain' never reads it (only algorithm in ['spo-tree'] does)"),
    (["critic.lr=0.001"], "critic.lr = 0.001 is set, but advantage.method = 'segment' never reads it"),
    (["advantage.method=grpo", "partition.method=none", "resample.k=16"],
     "resample.k = 16 is set, but advantage.method = 'grpo' never reads it (only advantage.method in ['segment'] does)"),
    (["advantage.method=rloo", "partition.method=none", "advantage.group_std=true"],
     "advantage.group_std = True is set, but advantage.method = 'rloo' never reads it"),
    (["advantage.lam=0.95"],
     "advantage.lam = 0.95 is set, but advantage.method = 'segment' never reads it (only advantage.method in ['gae']"),
    (["partition.n_segments=8"],
     ("partition.n_segments = 8 is set, but partition.method = 'cutpoint' never reads it (only partition.method in "
      "['fixed_count'] does)")),
])
def test_a_field_set_for_a_choice_that_never_reads_it_is_refused(assignments, message):
    cfg = load_preset("tiny").with_overrides(assignments)  # building the config refuses nothing: defaults are all set
    with pytest.raises(ConfigError) as error:
        check_read(cfg, assigned_fields(assignments), "--set")
    assert str(error.value).startswith("--set: ") and message in str(error.value) and "\n" not in str(error.value)


def test_a_field_the_choices_read_passes_and_so_do_defaults():
    sets = ["partition.interval=1", "resample.k=16", "task.options={\"digits\": 3}", "sample.temperature=0.7"]
    cfg = load_preset("tiny").with_overrides(sets)
    assert check_read(cfg, assigned_fields(sets), "--set") == cfg
    grpo = load_preset("tiny-grpo")  # tiny's own partition.interval and resample.k are inherited, not set here
    assert unread_fields(grpo, []) == {} and grpo.partition.interval == 3
    tree = RunConfig().with_overrides(["algorithm=spo-tree", "advantage.method=tree", "partition.method=fixed_length"])
    assert unread_fields(tree, ["tree", "partition.segment_tokens", "partition.tau"]) == {}
    gsm8k = RunConfig().with_overrides(["task.data=/rows/{split}.jsonl"])
    assert unread_fields(gsm8k, ["task.data"]) == {}


def test_a_preset_file_is_checked_against_its_own_choices(tmp_path, monkeypatch):
    import shutil

    import stages.runtime.run_dir

    for name in ("tiny", "tiny-grpo"):
        shutil.copy(PRESETS_DIR / f"{name}.toml", tmp_path)
    (tmp_path / "chain-data.toml").write_text('base = "tiny"\nname = "x"\n[task]\ndata = "/rows.jsonl"\n')
    (tmp_path / "grpo-k.toml").write_text('base = "tiny-grpo"\nname = "y"\n[resample]\nk = 16\n')
    (tmp_path / "grpo-own.toml").write_text('base = "tiny"\nname = "z"\n[partition]\nmethod = "none"\n'
                                            '[advantage]\nmethod = "rloo"\nprob_mask = false\n')
    monkeypatch.setattr(stages.runtime.run_dir, "PRESETS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"chain-data.toml: task.data = '/rows.jsonl' is set, but task.name = "
                                          r"'arith' never reads it"):
        load_preset("chain-data")
    with pytest.raises(ConfigError, match=r"grpo-k.toml: resample.k = 16 is set, but advantage.method = 'grpo'"):
        load_preset("grpo-k")
    assert load_preset("grpo-own").partition.interval == 3  # tiny.toml set it, for tiny's cutpoints: inherited


def test_a_comparison_refuses_an_arm_field_its_arm_never_reads_and_a_common_one_no_arm_reads(tmp_path):
    def comparison(common: str, arms: str) -> str:
        path = tmp_path / "c.toml"
        path.write_text(f'name = "c"\nseeds = [1]\nset = [{common}]\n{arms}')
        return str(path)

    chain = '[[arms]]\nlabel = "chain"\npreset = "tiny"\n'
    grpo = '[[arms]]\nlabel = "grpo"\npreset = "tiny-grpo"\n'
    assert load_comparison(comparison('"resample.k=2"', chain + grpo))  # the chain arm reads it
    with pytest.raises(ConfigError, match=r"c.toml: set: task.data = '/x.jsonl' is set, but task.name = 'arith' "
                                          r"never reads it .*\(in every arm\)"):
        load_comparison(comparison('"task.data=/x.jsonl"', chain + grpo))
    with pytest.raises(ConfigError, match=r"comparison 'c' arm 'grpo': resample.k = 16 is set, but "
                                          r"advantage.method = 'grpo' never reads it"):
        load_comparison(comparison("", chain + grpo + 'set = ["resample.k=16"]\n'))
