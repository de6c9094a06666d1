"""The LaTeX answer checkers side by side: this project's (`sympy`) and math-verify, on the same answers.

    python benchmarks/checkers.py [--data DIR]   (default: the data folder beside the checkout)

Two measurements, each checker under the same time limit (5 s a pair):
  MATH-500 references  every reference solution's extracted answer against the row's `answer` field
                       (all equal), and every answer against the next row's (unequal but for a repeated
                       answer, labelled by string equality after normalisation; pairs with an equation
                       are left out, since `x=5` against `5` is equal by the graders' rule)
  labelled pairs       `data/grading/answer_pairs.jsonl`: equivalent and non-equivalent answers by kind
                       (thousands separators, percentages, units, intervals, matrices, degrees, \\text{}
                       answers, mixed numbers, ...), each with the verdict a MATH grader should give
Printed: each checker's share right per kind and overall, the pairs the checkers disagree on (with the
label), the pairs both get wrong, and the seconds each took. The task default (`checker` of
`Math500Task`) is the checker right more often. Benchmarks never assert.
"""

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from spo.grading import MATH_CHECKERS, math_answer
from spo.math_normalize import normalize_answer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
PAIRS = REPO / "data" / "grading" / "answer_pairs.jsonl"


def read_pairs(path: Path = PAIRS) -> list[dict]:
    """The labelled pairs: pred, gold, equal (the right verdict), kind, source."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verdicts(pairs: list[dict]) -> dict[str, tuple[list[bool], float]]:
    """Each checker's verdict on every pair, and the seconds it took."""
    out = {}
    for name, check in MATH_CHECKERS.items():
        start = time.perf_counter()
        out[name] = ([bool(check(p["pred"], p["gold"])) for p in pairs], time.perf_counter() - start)
    return out


def report(title: str, pairs: list[dict]) -> None:
    results = verdicts(pairs)
    names = list(results)
    print(f"\n## {title}: {len(pairs)} pairs ({sum(p['equal'] for p in pairs)} equivalent)\n")
    kinds = sorted({p["kind"] for p in pairs})
    print("| kind | pairs | " + " | ".join(f"{n} right" for n in names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for kind in [*kinds, "all"]:
        chosen = [i for i, p in enumerate(pairs) if kind in (p["kind"], "all")]
        rights = [sum(results[n][0][i] == pairs[i]["equal"] for i in chosen) for n in names]
        print(f"| {kind} | {len(chosen)} | " + " | ".join(f"{r} ({r / len(chosen):.1%})" for r in rights) + " |")
    print("\nseconds: " + ", ".join(f"{n} {results[n][1]:.1f}" for n in names))
    by_outcome = defaultdict(list)
    for i, p in enumerate(pairs):
        right = tuple(results[n][0][i] == p["equal"] for n in names)
        if not all(right):
            by_outcome[right].append(p)
    for right, chosen in sorted(by_outcome.items()):
        who = ", ".join(n for n, r in zip(names, right) if r) or "neither"
        print(f"\nright only by {who} ({len(chosen)}):" if who != "neither" else f"\nboth wrong ({len(chosen)}):")
        for p in chosen:
            print(f"  [{p['kind']}] {p['pred']!r} vs {p['gold']!r}: should be {'equal' if p['equal'] else 'unequal'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding math500/")
    data = parser.parse_args().data
    rows = [json.loads(line) for line in (data / "math500" / "test.jsonl").read_text().splitlines()]
    references = [{"pred": math_answer(r["solution"]), "gold": r["answer"], "equal": True,
                   "kind": "reference"} for r in rows]
    shifted = [{"pred": a["answer"], "gold": b["answer"], "kind": "next row's answer",
                "equal": normalize_answer(a["answer"]) == normalize_answer(b["answer"])}
               for a, b in zip(rows, rows[1:] + rows[:1]) if "=" not in a["answer"] + b["answer"]]
    report("MATH-500 reference answers", references + shifted)
    report(f"labelled pairs ({PAIRS.relative_to(REPO)})", read_pairs())


if __name__ == "__main__":
    main()
