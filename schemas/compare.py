"""`compare.parquet`: a comparison's runs, one row per (arm, seed, checkpoint) (`spo compare`)."""

import pyarrow as pa

from schemas.contract import artifact_schema, column

COMPARE = artifact_schema("compare", 2, "every run of a comparison, one row per (arm, seed, checkpoint); "
                                        "costs are cumulative over the iterations that made the checkpoint", [
    column("arm", pa.string(), "the arm's label"),
    column("seed", pa.int64(), "the run seed"),
    column("iteration", pa.int32(), "checkpoint index i: the policy after i iterations (0 = warm start)"),
    column("accuracy", pa.float32(), "held-out greedy accuracy of checkpoint i; null when not evaluated",
           nullable=True),
    column("accuracy_sample", pa.float32(), "held-out mean-over-samples accuracy of checkpoint i; null when "
                                            "not evaluated", nullable=True),
    column("questions", pa.int64(), "questions sampled by iterations 0..i-1 (more than questions_per_iteration "
                                    "each under dynamic sampling: the dropped groups' questions count)"),
    column("sampled_tokens", pa.int64(), "tokens sampled by iterations 0..i-1 (rollouts, MC continuations, "
                                         "tree levels)"),
    column("trained_tokens", pa.int64(), "tokens in the loss of iterations 0..i-1, counted once per epoch"),
    column("seconds", pa.float64(), "stage seconds of iterations 0..i-1 (warm start and evaluations excluded)"),
    column("rollout_accuracy", pa.float32(), "accuracy of iteration i's rollouts (null after the last)",
           nullable=True),
    column("credit_first_wrong", pa.float32(), "iteration i's share of negative advantage mass on the first "
                                               "wrong token (stages/credit.py); null without the probe",
           nullable=True),
    column("credit_correct", pa.float32(), "its share on correct tokens before it", nullable=True),
    column("credit_correct_advantage", pa.float32(), "mean advantage of the trained correct tokens before it",
           nullable=True),
    column("credit_first_wrong_trained", pa.float32(), "share of first wrong tokens inside the loss mask",
           nullable=True),
])
