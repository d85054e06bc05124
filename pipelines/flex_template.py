"""The Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in deploy/Dockerfile).

Flex Template parameter names are letters, digits and underscores (deploy/metadata.json), while
`tipline run` spells its own flags with hyphens (`--geoip-city-db`). The launcher passes each parameter as
`--name=value`; this maps the underscore spelling of every tipline flag back to its hyphenated one and
hands the rest (Beam's own options, already underscored) to `tipline run` unchanged.
"""
import argparse
import sys

from pipelines.options import TiplineOptions


def tipline_flags():
    """{'--geoip_city_db': '--geoip-city-db', ...} for every hyphenated flag of TiplineOptions."""
    parser = argparse.ArgumentParser(add_help=False)
    TiplineOptions._add_argparse_args(parser)
    flags = [flag for action in parser._actions for flag in action.option_strings]
    return {flag.replace("-", "_").replace("__", "--", 1): flag for flag in flags if "-" in flag[2:]}


def launcher_argv(argv):
    """The launcher's arguments with tipline's flags in the spelling `tipline run` parses."""
    flags = tipline_flags()
    translated = []
    for argument in argv:
        name, equals, value = argument.partition("=")
        translated.append(flags.get(name, name) + equals + value)
    return translated


def main(argv=None):
    from pipelines.tipline_pipeline import run

    run(launcher_argv(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
