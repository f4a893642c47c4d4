"""``longmab`` command line.

Subcommands are registered in :data:`SUBCOMMANDS` (name -> :class:`Subcommand`); to add one, write
an ``add_arguments(parser)`` and a ``run(args) -> int`` function and call :func:`register` (or add an
entry to the dict) before :func:`main` builds the parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int]) -> None:
    SUBCOMMANDS[name] = Subcommand(help, add_arguments, run)


# --- validate ---------------------------------------------------------------------------------------


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="raw training JSONL file(s)")
    p.add_argument("--benchmark", choices=["longbench", "infinitebench"], default=None,
                   help="check evaluation files of this format instead of raw training files")
    p.add_argument("--max-errors", type=int, default=20,
                   help="stop reporting a file after this many problems (0: report all; default 20)")


def _validate_run(args: argparse.Namespace) -> int:
    from .validate import scan_file

    status = 0
    for path in args.paths:
        try:
            errors, samples = scan_file(path, args.max_errors if args.max_errors > 0 else None, args.benchmark)
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        if errors:
            for message in errors:
                print(message, file=sys.stderr)
            status = 1
        else:
            print(f"{path}: OK ({len(samples)} {'items' if args.benchmark else 'samples'})")
    return status


# --- synth ------------------------------------------------------------------------------------------


def _pair(text: str) -> tuple[int, int]:
    parts = text.replace(",", " ").split()
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (or one number), got {text!r}")
    lo, hi = (int(x) for x in parts)
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 < MIN <= MAX, got {text!r}")
    return lo, hi


def _synth_args(p: argparse.ArgumentParser) -> None:
    from . import synth as S

    def pair_text(t: tuple[int, int]) -> str:
        return f"{t[0]},{t[1]}"

    p.add_argument("--out-dir", required=True, help="writes OUT_DIR/train.jsonl and OUT_DIR/test/*.jsonl")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--n-train", type=int, default=S.N_TRAIN, help=f"training samples (default {S.N_TRAIN})")
    p.add_argument("--n-test", type=int, default=S.N_TEST, help=f"samples per benchmark set (default {S.N_TEST})")
    p.add_argument("--passages", type=_pair, default=S.PASSAGES, metavar="MIN,MAX",
                   help=f"passages per context (default {pair_text(S.PASSAGES)})")
    p.add_argument("--long-passages", type=_pair, default=S.LONG_PASSAGES, metavar="MIN,MAX",
                   help=f"passages per context of synth_longbook_qa_eng (default {pair_text(S.LONG_PASSAGES)})")
    p.add_argument("--words", type=_pair, default=S.WORDS, metavar="MIN,MAX",
                   help=f"target words per passage (default {pair_text(S.WORDS)})")
    p.add_argument("--two-hop-fraction", type=float, default=S.TWO_HOP_FRACTION,
                   help=f"share of compositional 2-hop questions in the training set (default {S.TWO_HOP_FRACTION})")
    p.add_argument("--comparison-fraction", type=float, default=S.COMPARISON_FRACTION,
                   help=f"share of comparison questions in the training set (default {S.COMPARISON_FRACTION})")
    p.add_argument("--related-fraction", type=float, default=S.RELATED_FRACTION,
                   help="share of the distractors drawn from look-alike and linked entities "
                        f"(default {S.RELATED_FRACTION})")
    p.add_argument("--paraphrase", type=float, default=0.0,
                   help="probability that a fact is worded unlike the question (default 0.0)")


def _synth_run(args: argparse.Namespace) -> int:
    from .synth import write_dataset

    try:
        paths = write_dataset(args.out_dir, seed=args.seed, n_train=args.n_train,
                              n_test_per_set=args.n_test, passages_per_context=args.passages,
                              words_per_passage=args.words,
                              long_passages_per_context=args.long_passages,
                              two_hop_fraction=args.two_hop_fraction, paraphrase=args.paraphrase,
                              comparison_fraction=args.comparison_fraction,
                              related_fraction=args.related_fraction)
    except ValueError as exc:
        print(f"longmab synth: error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


# --- convert ----------------------------------------------------------------------------------------


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a MuSiQue or HotpotQA file (JSON list or JSONL)")
    p.add_argument("output", help="raw training JSONL to write ({id, input, answer, context, evidence})")
    p.add_argument("--format", required=True, choices=["musique", "hotpotqa"])
    p.add_argument("--limit", type=int, default=0, help="keep the first N samples (0: all)")


def _convert_run(args: argparse.Namespace) -> int:
    from .convert import convert_file
    from .io import write_jsonl

    try:
        samples = convert_file(args.input, args.format, args.limit)
    except (OSError, ValueError) as exc:
        print(f"longmab convert: error: {exc}", file=sys.stderr)
        return 2
    write_jsonl(args.output, samples)
    print(f"{args.output}: {len(samples)} samples")
    return 0


# --- runctl -----------------------------------------------------------------------------------------


def _runctl_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check", "stop"],
                   help="check: exit 0 only if resuming here is safe (no Snakemake process or job of one "
                        "still works in the directory, no unfinished run of another host), and forget the "
                        "records of dead runs; stop: send SIGTERM to the Snakemake run of the directory "
                        "(running jobs finish, nothing new starts)")
    p.add_argument("--dir", default=".", help="the workflow's working directory (default: .)")
    p.add_argument("--force", action="store_true",
                   help="check: accept an unfinished run recorded by another host (you know it is dead)")


def _runctl_run(args: argparse.Namespace) -> int:
    from .runctl import check_resume, request_stop

    if args.action == "check":
        result = check_resume(args.dir, force=args.force)
        print(result.message(args.dir), file=sys.stdout if result.ok else sys.stderr)
        if result.ok:
            for path in result.stale:
                path.unlink(missing_ok=True)
            from .engines.server import cleanup

            n = cleanup(args.dir)  # engine servers of the dead run (engine.mode server)
            if n:
                print(f"stopped {n} engine server(s) left by the run that is gone")
        return 0 if result.ok else 1
    stopped = request_stop(args.dir)
    if not stopped:  # nothing to do is not a failure (`make stop` twice, or after the run ended)
        print(f"nothing to stop: no Snakemake run is working in {args.dir}")
        return 0
    for p in stopped:
        print(f"asked Snakemake (pid {p.pid}) to stop: its running jobs finish, no new job starts; it then "
              "reports what finished and exits with status 143. Resume later with: make resume")
    return 0


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["show"])
    p.add_argument("--configfile", nargs="*", default=[], metavar="FILE",
                   help="the --configfile files of the run, in order (merged over config.yaml)")
    p.add_argument("--replace-workflow-config", action="store_true", dest="replace",
                   help="as Snakemake's flag: the files alone, without config.yaml")
    p.add_argument("--base", default=None, help="the workflow's config.yaml (default: this checkout's)")


def _config_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, check_runs, show_config

    try:
        print(show_config(args.configfile, args.replace, args.base), end="")
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    from .config import effective_config

    problems = check_runs(effective_config(args.configfile, args.replace, args.base)[0])
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="the --configfile files, in order")
    p.add_argument("--replace-workflow-config", action="store_true", default=None, dest="replace",
                   help="the files alone (default: when the first file has a paper preset)")
    p.add_argument("--profile", default=None, help="a Snakemake profile, e.g. profiles/slurm (needs conda)")
    p.add_argument("--workflow", default=None, help="the workflow folder (default: this checkout)")


def _plan_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .plan import format_plan, plan

    repo = Path(args.workflow) if args.workflow else Path(__file__).resolve().parents[2]
    try:
        counts, resources, _ = plan(args.configs, repo, args.replace, args.profile)
    except RuntimeError as exc:
        print(f"the config was refused:\n{exc}", file=sys.stderr)
        return 1
    print(format_plan(counts, resources), end="")
    return 0


register("validate", "check raw training JSONL files (exit 1 on problems)", _validate_args, _validate_run)
register("plan", "the jobs a config plans (counts and resources per rule), without its data", _plan_args,
         _plan_run)
register("config", "show the effective config of a run: every value and the file it came from (or the "
         "schema default), then every problem", _config_args, _config_run)
register("convert", "convert MuSiQue / HotpotQA files into raw training JSONL", _convert_args, _convert_run)
register("synth", "write the seeded synthetic train/test data", _synth_args, _synth_run)
register("runctl", "run control: is it safe to resume here (check), stop the run here (stop)", _runctl_args,
         _runctl_run)


# --- entry point ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longmab", description="LongMab-PO pipeline tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, cmd in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
