"""The `tipline` command: `tipline run` and the tools around the pipeline."""
import argparse
import sys

from pipelines import bank_tools, demo, explain, notices_cli, publish, trends_cli

SUBCOMMAND_MODULES = (bank_tools, explain, trends_cli, notices_cli, publish, demo)


def build_parser():
    parser = argparse.ArgumentParser(prog="tipline", description="Streaming pipeline for child-protection tip lines.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("run", help="run the pipeline (tipline run --help for its options)", add_help=False)
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        from pipelines.tipline_pipeline import run

        run(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
