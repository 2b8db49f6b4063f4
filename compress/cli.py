"""The ``compress`` command: ``compress run recipe.yaml`` and ``compress validate recipe.yaml``.

A thin shell over :mod:`compress.recipe` and :mod:`compress.pipeline`: parse arguments,
validate, run, print. Errors from the project print as one line (they already name the
key path and line, module or file) and exit with status 1; Ctrl-C exits with 130 after
saying how to resume. Every file is written atomically, so an interrupt never leaves
half of one.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

from compress.errors import CompressError

EXIT_ERROR, EXIT_INTERRUPT = 1, 130


def _version() -> str:
    try:
        return importlib.metadata.version("compress")
    except importlib.metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    from compress.recipe import schema_help

    parser = argparse.ArgumentParser(prog="compress", description="Model compression recipes: prune, distill, "
                                     "quantize, export, evaluate.")
    parser.add_argument("--version", action="version", version=f"compress {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe's stages in order", epilog=schema_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    validate = sub.add_parser("validate", help="check a recipe without running it", epilog=schema_help(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    for p in (run, validate):
        p.add_argument("recipe", type=Path, help="the recipe YAML file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value, e.g. --set stages.1.quantize.method=kl (value parsed as YAML)")
    run.add_argument("--out", type=Path, help="output folder (default: the recipe's 'output', else runs/<name>)")
    run.add_argument("--resume", action="store_true", help="continue after the last stage the checkpoint records")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _output_folder(recipe, out: Path | None) -> Path:
    if out is not None:
        return out
    if recipe.output:
        return recipe.base / recipe.output
    return Path("runs") / recipe.name


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from compress.recipe import load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        if args.command == "validate":
            print(f"{args.recipe}: valid ({len(recipe.stages)} stages: {', '.join(s.name for s in recipe.stages)})")
            return 0
        from compress import distributed, pipeline

        out = _output_folder(recipe, args.out)
        if distributed.is_writer():
            pipeline.check_output_folder(out)  # before any work: not after an hour of training
        distributed.init_from_env()
        log = print if distributed.is_writer() else (lambda _msg: None)
        pipeline.run(recipe, out, resume=args.resume, progress=not args.quiet, log=log)
        if distributed.is_writer():
            report = out / "report.md"
            print(report.read_text() if report.is_file() else f"done; outputs in {out}")
    except CompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted; finished stages are checkpointed: rerun with --resume", file=sys.stderr)
        return EXIT_INTERRUPT
    return 0


if __name__ == "__main__":
    sys.exit(main())
