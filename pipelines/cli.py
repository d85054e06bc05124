"""The `tipline` command: `tipline run` and the tools around the pipeline."""
import sys

from pipelines import bank_tools, check, demo, explain, notices_cli, publish, reports_cli, serve, trends_cli
from pipelines.errors import DEBUG_FLAG, OneLineArgumentParser, run_command

SUBCOMMAND_MODULES = (bank_tools, explain, trends_cli, notices_cli, publish, demo, check, reports_cli, serve)


def build_parser():
    parser = OneLineArgumentParser(prog="tipline", description="Streaming pipeline for child-protection tip lines.",
                                   epilog=f"{DEBUG_FLAG} (any subcommand): show the traceback of a failure")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("run", help="run the pipeline (tipline run --help for its options)", add_help=False)
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def dispatch(argv):
    if argv[:1] == ["run"]:
        from pipelines.tipline_pipeline import run_and_report

        return run_and_report(argv[1:])
    if argv[:1] == ["check"]:
        return check.check(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv=None):
    """Every subcommand through `run_command`: one-line errors, exit 2 for usage, 1 for failures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["tipline"] + [arg for arg in argv[:1] if not arg.startswith("-")])
    return run_command(command, dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
