"""`spo`: the command line. Each subcommand builds a config and calls one flow or stage; no logic here.

    spo run [--preset NAME] [--set key=value ...] [--run DIR] [--until N | --more N] [--from N]
    spo fork DIR NEW --from N [--set key=value ...]
    spo compare NAME|FILE [--seeds 1,2,3] [--parallel N]
    spo stage NAME --run DIR --iteration N [--force]   (says cached or stale; --force recomputes)
    spo eval DIR          (evaluate the newest checkpoint without an evaluation)
    spo gc DIR --keep-last N [--dry-run]
    spo verify DIR        (re-hash every artifact and checkpoint against its manifest)
    spo server [--port 4200] [--host 127.0.0.1]   (another host needs Prefect's basic auth, docs/architecture.md#server)
    spo serve DIR [--run-cron C | --run-interval S] [--more N] [--eval-cron C | --eval-interval S]
    spo inspect DIR [--iteration N] [--stage NAME] [--tree PROMPT_INDEX]
    spo demo [--preset tiny]
    spo rehearse PRESET [--layers N|full] [--engine E] [--full-shape] [--iterations 1|2] [--set key=value ...]
    spo config            (every field, its default and meaning)
    spo plan PRESET --gpu-memory GB [--set key=value ...]   (peak GPU memory of each stage, part by part)

Anywhere on the line: --verbose also shows Prefect's INFO line of every flow and task run (the UI has them
either way), --debug shows the traceback of an error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

from flows.processes import prefect_api

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "spo,stages",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' own load/save bars; the stages draw theirs
    # Prefect's console shows the project's lines, warnings and errors; its per-run INFO lines with --verbose
    "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS": "flows.logs.QuietConsoleHandler",
}


_INTERRUPT: dict = {}
"""What the running subcommand says when interrupted ("describe") and does first ("on_signal")."""


def _config_from_args(args, base=None):
    """The preset (or `base`, an existing run's config) with the --set overrides, checked against this machine."""
    from spo.config import ConfigError, check_read
    from spo.overrides import assigned_fields
    from stages.runtime.preflight import preflight
    from stages.runtime.run_dir import PRESETS_DIR, load_preset

    if args.preset:
        base = load_preset(args.preset)
    if base is None:
        presets = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
        raise ConfigError(f"choose a preset with --preset NAME (one of {presets}), or continue a run with --run DIR")
    cfg = check_read(base.with_overrides(args.set or []), assigned_fields(args.set or []), "--set")
    preflight(cfg)
    return cfg


def _run_dir(args, cfg) -> Path:
    from stages.runtime.run_dir import RUNS_DIR

    return Path(args.run) if args.run else RUNS_DIR / cfg.name


def cmd_run(args) -> int:
    from stages.runtime.registry import trained_iterations
    from stages.runtime.run_dir import RunDir

    existing = args.run and RunDir(Path(args.run)).config_path.is_file()
    if args.more is not None and not existing:
        raise FileNotFoundError(f"--more continues an existing run; {args.run or '--run'}: no run.json there")
    cfg = _config_from_args(args, RunDir(Path(args.run)).config() if existing else None)
    if args.more is not None:  # past the configured end: the run grows (a frontier change, recorded)
        trained = trained_iterations(RunDir(Path(args.run)), cfg)
        cfg = cfg.with_overrides([f"iterations={max(cfg.iterations, trained + args.more)}"])
    root = _run_dir(args, cfg)
    _INTERRUPT["describe"] = lambda: _progress(root)
    from stages.runtime.history import reopen
    from stages.runtime.lock import run_lock

    with run_lock(root, "spo run"):  # a config change is a write too
        run = reopen(root, cfg, args.from_iteration)
    with prefect_api(root, imports=("flows.spo_run",)):  # prefect, torch and transformers load after the checks
        from flows.spo_run import spo_run

        spo_run(str(run.root), until=args.until, more=args.more, from_iteration=args.from_iteration)
    print(f"run: {run.root}")
    return 0


def _progress(root: Path) -> str:
    """What an interrupted run has finished, and the command that resumes it (flows/interrupts.py)."""
    from stages.runtime.registry import trained_iterations
    from stages.runtime.run_dir import RunDir

    run = RunDir(Path(root))
    if not run.config_path.is_file():
        return "nothing finished"
    trained = trained_iterations(run, run.config())
    done = f"{trained} iterations trained" if trained else "no iteration trained yet"
    return f"{done}; finished stages are kept; resume with: spo run --run {root}"


def cmd_fork(args) -> int:
    from stages.runtime.history import fork
    from stages.runtime.run_dir import RunDir

    source = RunDir(Path(args.dir))
    cfg = _config_from_args(args, source.config())
    run, shared = fork(source, Path(args.new), cfg, args.from_iteration)
    print(f"forked {source.root} into {run.root} from iteration {args.from_iteration}: {shared} stages shared by "
          f"hard link; continue with: spo run --run {run.root}")
    return 0


def cmd_compare(args) -> int:
    from stages.runtime.preflight import preflight
    from stages.runtime.run_dir import arm_config, load_comparison

    arms = args.arms.split(",") if args.arms else None
    comparison = load_comparison(args.comparison)  # a bad file or arm fails here, before Prefect starts
    if arms:
        comparison = comparison.with_arms(arms)
    for arm in comparison.arms:
        preflight(arm_config(comparison, arm, comparison.seeds[0]))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.spo_compare import spo_compare

    flow = spo_compare.with_options(task_runner=ThreadPoolTaskRunner(max_workers=args.parallel))
    from flows.spo_compare import stop_children
    from stages.reports.compare import comparison_dir

    _INTERRUPT.update(on_signal=stop_children, describe=lambda: "finished runs and stages are kept; resume with: "
                                                                + shlex.join(["spo", *args.argv]))
    with prefect_api(comparison_dir(comparison, args.root and Path(args.root))):
        print(flow(args.comparison, seeds, threads, args.root, arms))
    return 0


def cmd_eval(args) -> int:
    from stages.runtime.preflight import preflight
    from stages.runtime.run_dir import RunDir

    preflight(RunDir(Path(args.dir)).config())
    with prefect_api(Path(args.dir), imports=("flows.spo_eval",)):
        from flows.spo_eval import spo_eval

        result = spo_eval(str(Path(args.dir)))
    print("every checkpoint has an evaluation" if result is None else f"evaluated: {result}")
    return 0


def cmd_gc(args) -> int:
    from stages.runtime.gc import gc

    report = gc(Path(args.dir), args.keep_last, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} checkpoints {report.removed} and unfinished folders {report.unfinished}, "
          f"{report.freed_bytes / 1e6:.1f} MB")
    for index, reason in report.kept.items():
        print(f"kept {index}: {reason}")
    return 0


def cmd_verify(args) -> int:
    from stages.runtime.verify import verify_run

    checked, problems = verify_run(Path(args.dir))
    for problem in problems:
        print(problem)
    print(f"verified {checked} artifacts under {args.dir}: {len(problems)} differ from their manifests")
    return 1 if problems else 0


def cmd_server(args) -> NoReturn:
    from flows.server import start_server  # light: a refused --host answers before Prefect's server imports

    start_server(args.port, args.host)


def cmd_serve(args) -> int:
    from flows.serve import Schedule, serve

    schedules = []
    if args.run_cron is not None or args.run_interval is not None:
        schedules.append(Schedule("run", cron=args.run_cron, interval=args.run_interval, more=args.more))
    elif args.more is not None:
        raise ValueError("--more needs a training schedule: --run-cron or --run-interval")
    if args.eval_cron is not None or args.eval_interval is not None:
        schedules.append(Schedule("eval", cron=args.eval_cron, interval=args.eval_interval))
    _INTERRUPT["describe"] = lambda: f"stopped serving {args.dir}; a scheduled run that was running resumes " \
                                     f"with: spo run --run {args.dir}"
    serve(Path(args.dir), schedules)
    return 0


def cmd_demo(args) -> int:
    start = time.perf_counter()
    cfg = _config_from_args(args)
    from stages.reports.summary import summary_markdown
    from stages.runtime.history import reopen

    _INTERRUPT["describe"] = lambda: _progress(_run_dir(args, cfg))
    run = reopen(_run_dir(args, cfg), cfg)
    with prefect_api(run.root, imports=("flows.spo_run",)):  # prefect, torch and transformers load after the checks
        from flows.spo_run import spo_run

        rows = spo_run(str(run.root))
    print(summary_markdown(rows))
    plot = run.root / "accuracy.png"  # the flow plots every run it finishes
    evaluated = [r for r in rows if r["eval_greedy"] is not None]
    first, last = evaluated[0], evaluated[-1]
    print(f"plot: {plot}")
    print(f"run: {run.root}")
    print(f"demo: warm-start accuracy {first['eval_greedy']:.3f} -> final accuracy {last['eval_greedy']:.3f} "
          f"on {cfg.eval.questions} held-out questions in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_rehearse(args) -> int:
    from stages.runtime.rehearsal import plan_rehearsal

    rehearsal = plan_rehearsal(args.preset, args.layers, args.engine, args.full_shape, args.iterations,
                               args.set or [])
    root = _run_dir(args, rehearsal.cfg)
    _INTERRUPT["describe"] = lambda: _progress(root)
    from flows.rehearse import rehearse  # prefect, torch and transformers load after the checks

    start = time.perf_counter()
    run = rehearse(rehearsal, root)
    print(f"run: {run.root}")
    print(f"rehearse: {args.preset} ran in {time.perf_counter() - start:.0f} s")
    return 0


def _layers(text: str) -> int | None:
    """`--layers`: a positive number of decoder layers, or "full" (None: the published depth)."""
    if text == "full":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of layers >= 1 or 'full', got {text!r}")
    return int(text)


def cmd_stage(args) -> int:
    from stages.runtime.history import CACHED, UNFINISHED, stage_status
    from stages.runtime.registry import find_stage
    from stages.runtime.run_dir import RunDir

    run = RunDir(Path(args.run))
    function, spec = find_stage(args.name, run.config())
    status = UNFINISHED if args.force else stage_status(spec, run, args.iteration)
    report = function(run.root, args.iteration, force=args.force)
    if status == UNFINISHED:
        status = "cached" if report.cached else "computed"
    elif status != CACHED:
        status += "; kept as it is (--force recomputes it)"
    print(f"{report.stage} {report.iteration:04d}: {status}; rows {report.rows}, {report.seconds} s, "
          f"counters {report.counters}")
    return 0


def cmd_inspect(args) -> int:
    from stages.reports.inspect_run import inspect_run, tree_text
    from stages.runtime.history import history_text
    from stages.runtime.run_dir import RunDir

    if args.tree is not None:
        print(tree_text(Path(args.dir), args.iteration or 0, args.tree))
    else:
        print(inspect_run(Path(args.dir), args.iteration, args.stage))
        if args.iteration is None and args.stage is None:  # the whole run: what made it
            print("\nhistory (stages/runtime/history.py):\n" + history_text(RunDir(Path(args.dir))))
    return 0


def cmd_config(args) -> int:
    from spo.config import field_docs

    for name, default, doc in field_docs():
        print(f"{name} = {default}\n    {doc}")
    return 0


def cmd_plan(args) -> int:
    from spo.config import check_read
    from spo.memory import GiB
    from spo.overrides import assigned_fields
    from stages.runtime.memory_plan import check_memory_plan
    from stages.runtime.run_dir import load_preset

    if not args.gpu_memory > 0:
        raise ValueError(f"--gpu-memory {args.gpu_memory}: expected the GPU's memory in GiB, a positive number")
    overrides = args.set or []
    cfg = check_read(load_preset(args.preset).with_overrides(overrides), assigned_fields(overrides), "--set")
    print(check_memory_plan(cfg, int(args.gpu_memory * GiB)).text())
    return 0


def _add_config_options(parser: argparse.ArgumentParser, preset_default: str | None) -> None:
    parser.add_argument("--preset", default=preset_default, help="a file of data/presets/ (without .toml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field, e.g. --set sample.temperature=0.7 (see `spo config`)")
    parser.add_argument("--run", help="run directory (default data/runs/<name>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    parser.add_argument("--verbose", action="store_true", help="also show Prefect's INFO lines of every flow and "
                                                               "task run (anywhere on the line; the UI has them "
                                                               "either way)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run or resume the flow of a run")
    _add_config_options(p, None)
    span = p.add_mutually_exclusive_group()
    span.add_argument("--until", type=int, help="stop after this many iterations (default: config iterations)")
    span.add_argument("--more", type=int, help="continue an existing run: train N iterations after the trained "
                                               "ones (past the config's iterations, the run grows)")
    p.add_argument("--from", dest="from_iteration", type=int, metavar="N",
                   help="recompute every stale stage from iteration N on (after a config change that finished "
                        "stages read, or a code change); older outputs go to superseded/")
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("fork", help="a new run that shares a run's iterations before N by hard links and "
                                    "continues with a changed config; the source run is never modified")
    p.add_argument("dir")
    p.add_argument("new")
    p.add_argument("--from", dest="from_iteration", type=int, required=True, metavar="N",
                   help="share the warm start and iterations 0..N-1 (and checkpoint N's evaluation)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a config field (see `spo config`)")
    p.set_defaults(handler=cmd_fork, preset=None)
    p = sub.add_parser("demo", help="the CPU demo: warm start a tiny model, train it with SPO, plot")
    _add_config_options(p, "tiny")
    p.set_defaults(handler=cmd_demo)
    p = sub.add_parser("rehearse", help="run a GPU preset end to end on a random-weight checkpoint of its model "
                                        "(real architecture and tokenizer), shrunk to the CI shape")
    p.add_argument("preset", help="a GPU preset of data/presets/ (without .toml)")
    p.add_argument("--layers", type=_layers, default=2, metavar="N|full",
                   help="decoder layers of the checkpoint (default 2; full: the published depth)")
    p.add_argument("--engine", metavar="transformers|vllm", help="sampling engine (default: the preset's)")
    p.add_argument("--full-shape", action="store_true", help="keep the preset's own budgets (questions, samples, "
                                                             "K, tokens, tree, evaluation): a benchmark on a GPU")
    p.add_argument("--iterations", type=int, choices=[1, 2], default=1, help="policy iterations (default 1)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field last, e.g. --set task.data=DIR (see `spo config`)")
    p.add_argument("--run", help="run directory (default data/runs/rehearse-<preset>; an existing rehearsal "
                                 "there resumes as `spo run` does)")
    p.set_defaults(handler=cmd_rehearse)
    p = sub.add_parser("compare", help="run every arm of a comparison on every seed; table, Parquet, plots")
    p.add_argument("comparison", help="a file of data/comparisons/ (without .toml), or the path of a .toml file")
    p.add_argument("--seeds", help="comma-separated seeds instead of the comparison's, e.g. 1,2,3")
    p.add_argument("--arms", help="comma-separated arm labels: run and report only these, the first as the "
                                  "reference (default: every arm)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once, each its own process (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: CPU cores / parallel)")
    p.add_argument("--root", help="folder that holds the comparison's folder (default data/runs)")
    p.set_defaults(handler=cmd_compare)
    p = sub.add_parser("stage", help="rerun one stage from its stored inputs")
    p.add_argument("name")
    p.add_argument("--run", required=True)
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--force", action="store_true", help="recompute even if finished (the old output moves to "
                                                        "superseded/ once the new one has landed)")
    p.set_defaults(handler=cmd_stage)
    p = sub.add_parser("inspect", help="summarise a run or one iteration's artifacts")
    p.add_argument("dir")
    p.add_argument("--iteration", type=int)
    p.add_argument("--stage")
    p.add_argument("--tree", type=int, metavar="PROMPT_INDEX", help="draw one prompt's SPO-tree (spo-tree runs)")
    p.set_defaults(handler=cmd_inspect)
    p = sub.add_parser("eval", help="evaluate the newest checkpoint that has no evaluation yet")
    p.add_argument("dir")
    p.set_defaults(handler=cmd_eval)
    p = sub.add_parser("gc", help="remove old checkpoints (never 0, the newest, or evaluated ones)")
    p.add_argument("dir")
    p.add_argument("--keep-last", type=int, required=True, help="also keep the newest N checkpoints")
    p.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    p.set_defaults(handler=cmd_gc)
    p = sub.add_parser("verify", help="re-hash every artifact and checkpoint of a run against its manifest")
    p.add_argument("dir")
    p.set_defaults(handler=cmd_verify)
    p = sub.add_parser("server", help="start the local Prefect server (SQLite database, scheduler, UI)")
    p.add_argument("--port", type=int, default=4200)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback); another one "
                                                       "needs PREFECT_SERVER_API_AUTH_STRING (Prefect's basic auth)")
    p.set_defaults(handler=cmd_server)
    p = sub.add_parser("serve", help="serve the run and eval flows of DIR on schedules (needs `spo server` and "
                                     "PREFECT_API_URL)")
    p.add_argument("dir")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--run-cron", help="continue training on this cron schedule, e.g. '0 */4 * * *'")
    when.add_argument("--run-interval", type=float, help="continue training every this many seconds")
    p.add_argument("--more", type=int, help="iterations each scheduled training run adds (default: up to the "
                                            "config's iterations)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--eval-cron", help="evaluate the newest unevaluated checkpoint on this cron schedule")
    when.add_argument("--eval-interval", type=float, help="evaluate every this many seconds")
    p.set_defaults(handler=cmd_serve)
    p = sub.add_parser("config", help="list every config field with its default and meaning")
    p.set_defaults(handler=cmd_config)
    p = sub.add_parser("plan", help="the expected peak GPU memory of each stage of a preset's flow, part by part; "
                                    "one that cannot fit is refused in one line naming settings that would")
    p.add_argument("preset", help="a file of data/presets/ (without .toml)")
    p.add_argument("--gpu-memory", type=float, required=True, metavar="GB",
                   help="the GPU's memory in GiB (2^30 bytes, as torch.cuda reports it: an 80 GB card has 79-80)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (see `spo config`)")
    p.set_defaults(handler=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; a user error (bad config, missing file, locked run) is one `spo: error:` line and
    exit status 2, with the traceback only under --debug."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # anywhere on the line, before or after the subcommand
    if "--verbose" in argv:  # anywhere too; the processes this one starts inherit it (flows/logs.py)
        os.environ["SPO_VERBOSE"] = "1"
    if "prefect" in sys.modules:  # configured before the variables above were set (a test, an embedding program)
        from flows.logs import quiet_console

        quiet_console()
    args = build_parser().parse_args([a for a in argv if a not in ("--debug", "--verbose")])
    args.argv = argv
    from flows.interrupts import Interrupted, interruptible
    from stages.runtime.lock import RunLockedError
    from stages.runtime.run_dir import ArtifactError

    _INTERRUPT.clear()
    try:
        with interruptible(lambda: _INTERRUPT.get("describe", lambda: "stopped")(),
                           lambda: _INTERRUPT.get("on_signal", lambda: None)()):
            return args.handler(args)
    except Interrupted as stop:
        return stop.status
    except (ValueError, FileNotFoundError, FileExistsError, RunLockedError, ArtifactError) as error:
        if debug:
            raise
        print(f"spo: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
