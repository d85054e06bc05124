"""One-line errors for every `tipline` subcommand.

A misconfiguration or bad input (a flag, a file) is a `UsageError`: one line naming it and what to do,
exit 2. Any other failure is one line, exit 1. `--debug` (anywhere on the command line) also prints the
traceback and leaves Beam's own logging as it is. Output piped into `head` ends quietly.
"""
import argparse
import contextlib
import logging
import os
import sys
import threading
import traceback

USAGE_EXIT = 2
FAILURE_EXIT = 1
DEBUG_FLAG = "--debug"


class UsageError(Exception):
    """A misconfiguration the user can fix: the message names the flag or file and what to do."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a `UsageError` (one line) instead of the usage text and SystemExit."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def input_errors():
    """Exception types that mean a bad input file or flag value rather than a failure of tipline."""
    from transforms.demo.packaged import PackagedDataError
    from transforms.matching.banks import BankFileError

    return UsageError, BankFileError, PackagedDataError, FileNotFoundError, IsADirectoryError, NotADirectoryError


def is_usage_error(error):
    """A bad input, or a ValueError whose message starts with the flag it is about (`--geoip-city-db: ...`)."""
    return isinstance(error, input_errors()) or (isinstance(error, ValueError) and str(error).startswith("--"))


def first_line(error):
    """The first non-empty line of an error's message (Beam appends the step and a remote traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def one_line(command, error):
    if is_usage_error(error):
        return f"{command}: error: {first_line(error)}"
    return f"{command}: failed: {type(error).__name__}: {first_line(error)} (--debug shows the traceback)"


@contextlib.contextmanager
def quiet_runtime_noise():
    """Without --debug: Beam's and the Google clients' own error logs and thread tracebacks are not shown
    (the failure is reported once, by `run_command`); tipline's own warnings still are."""
    loggers = [logging.getLogger(name) for name in ("apache_beam", "google", "grpc", "urllib3")]
    levels, excepthook = [logger.level for logger in loggers], threading.excepthook
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    threading.excepthook = lambda args: None
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        threading.excepthook = excepthook


def end_quietly_on_broken_pipe():
    """`tipline ... | head`: the reader has gone; point stdout at /dev/null so the exit flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run_command(command, func, argv):
    """Runs `func(argv)` (argv without --debug) and returns its exit code, turning any error into one line."""
    debug = DEBUG_FLAG in argv
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        with contextlib.nullcontext() if debug else quiet_runtime_noise():
            code = func(argv) or 0
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not at exit
        return code
    except BrokenPipeError:
        end_quietly_on_broken_pipe()
        return 0
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every failure ends as one line; --debug adds the traceback
        if debug:
            traceback.print_exc()
        print(one_line(command, error), file=sys.stderr, flush=True)
        return USAGE_EXIT if is_usage_error(error) else FAILURE_EXIT
