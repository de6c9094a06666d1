"""`spo`: the command line. Each subcommand builds a config and calls one flow or stage; no logic here.

    spo run [--preset NAME] [--set key=value ...] [--run DIR] [--until N]
    spo stage NAME --run DIR --iteration N [--force]
    spo inspect DIR [--iteration N] [--stage NAME]
    spo demo [--preset tiny]
    spo config            (every field, its default and meaning)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "spo,stages",
}


def _config_from_args(args):
    from spo.config import RunConfig
    from stages.run_dir import load_preset

    cfg = load_preset(args.preset) if args.preset else RunConfig()
    return cfg.with_overrides(args.set or [])


def _run_dir(args, cfg) -> Path:
    from stages.run_dir import RUNS_DIR

    return Path(args.run) if args.run else RUNS_DIR / cfg.name


def cmd_run(args) -> int:
    from flows.spo_run import spo_run
    from stages.run_dir import RunDir, create_run

    existing = args.run and RunDir(Path(args.run)).config_path.is_file() and not (args.preset or args.set)
    cfg = RunDir(Path(args.run)).config() if existing else _config_from_args(args)
    run = create_run(_run_dir(args, cfg), cfg)
    spo_run(str(run.root), until=args.until)
    print(f"run: {run.root}")
    return 0


def cmd_demo(args) -> int:
    from flows.spo_run import spo_run
    from stages.run_dir import create_run, load_preset
    from stages.summary import iteration_summary, plot_run, summary_markdown

    start = time.perf_counter()
    cfg = load_preset(args.preset).with_overrides(args.set or [])
    run = create_run(_run_dir(args, cfg), cfg)
    spo_run(str(run.root))
    rows = iteration_summary(run)
    print(summary_markdown(rows))
    plot = plot_run(run, run.root / "accuracy.png")
    evaluated = [r for r in rows if r["eval_greedy"] is not None]
    first, last = evaluated[0], evaluated[-1]
    print(f"plot: {plot}")
    print(f"run: {run.root}")
    print(f"demo: warm-start accuracy {first['eval_greedy']:.3f} -> final accuracy {last['eval_greedy']:.3f} "
          f"on {cfg.eval.questions} held-out questions in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_stage(args) -> int:
    from stages.registry import STAGES

    if args.name not in STAGES:
        raise SystemExit(f"unknown stage {args.name!r}; choose one of {sorted(STAGES)}")
    function, _ = STAGES[args.name]
    report = function(Path(args.run), args.iteration, force=args.force)
    print(f"{report.stage} {report.iteration:04d}: rows {report.rows}, {report.seconds} s, "
          f"{'cached' if report.cached else 'computed'}, counters {report.counters}")
    return 0


def cmd_inspect(args) -> int:
    from stages.inspect_run import inspect_run

    print(inspect_run(Path(args.dir), args.iteration, args.stage))
    return 0


def cmd_config(args) -> int:
    from spo.config import field_docs

    for name, default, doc in field_docs():
        print(f"{name} = {default}\n    {doc}")
    return 0


def _add_config_options(parser: argparse.ArgumentParser, preset_default: str | None) -> None:
    parser.add_argument("--preset", default=preset_default, help="a file of data/presets/ (without .toml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field, e.g. --set sample.temperature=0.7 (see `spo config`)")
    parser.add_argument("--run", help="run directory (default data/runs/<name>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run or resume the flow of a run")
    _add_config_options(p, None)
    p.add_argument("--until", type=int, help="stop after this many iterations (default: config iterations)")
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("demo", help="the CPU demo: warm start a tiny model, train it with SPO, plot")
    _add_config_options(p, "tiny")
    p.set_defaults(handler=cmd_demo)
    p = sub.add_parser("stage", help="rerun one stage from its stored inputs")
    p.add_argument("name")
    p.add_argument("--run", required=True)
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--force", action="store_true", help="recompute even if finished (the old output is kept "
                                                        "under superseded/)")
    p.set_defaults(handler=cmd_stage)
    p = sub.add_parser("inspect", help="summarise a run or one iteration's artifacts")
    p.add_argument("dir")
    p.add_argument("--iteration", type=int)
    p.add_argument("--stage")
    p.set_defaults(handler=cmd_inspect)
    p = sub.add_parser("config", help="list every config field with its default and meaning")
    p.set_defaults(handler=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
