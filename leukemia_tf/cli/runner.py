"""How every entry point runs: quiet TensorFlow start-up, plain logs, one-line errors.

TensorFlow's C++ start-up lines on CPU hosts (`cudart_stub … Could not find cuda
drivers`, `failed call to cuInit … (303)`, the absl::InitializeLog banner) are printed
before Python can configure logging and say nothing a CPU user can act on. Entry points
import TensorFlow and probe the devices once with file descriptor 2 captured, then replay
every captured line that is not such noise. `--verbosity=1`/`-v 1` (or higher) shows all.

An expected failure (`UserError`, a usage error) is one `error:` line and exit status 1;
SIGTERM/SIGINT end with the line saying where the command stopped.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
from typing import Callable, List, Optional

from absl import app, flags
from absl import logging as absl_logging

from leukemia_tf import signals
from leukemia_tf.cli.flag_table import Command, help_text, parse
from leukemia_tf.errors import UserError

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|cudart_stub\.cc"
    r"|cuda_platform\.cc.*cuInit|failed call to cuInit|cuda_(dnn|fft|blas)\.cc.*"
    r"Unable to register|computation_placer\.cc.*already registered"
    r"|TF-TRT Warning: Could not find TensorRT|cpu_feature_guard\.cc"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|port\.cc.*oneDNN custom operations are on")

HELP_ARGS = {"--help", "-h", "-?", "--helpshort"}


def wants_verbose(argv: List[str]) -> bool:
    """--verbosity=N / -v N with N >= 1 (absl's own flag) asks for everything."""
    for i, arg in enumerate(argv):
        m = re.fullmatch(r"(--verbosity|-v)(=(-?\d+))?", arg)
        if m:
            value = m.group(3) if m.group(3) is not None else (
                argv[i + 1] if i + 1 < len(argv) else "0")
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def import_tensorflow_quietly(argv: Optional[List[str]] = None) -> None:
    """Import TensorFlow and list its devices, dropping known C++ start-up noise.

    Listing physical devices does not initialise the runtime, so a
    MultiWorkerMirroredStrategy can still be created afterwards.
    """
    if "tensorflow" in sys.modules:
        return
    if wants_verbose(argv if argv is not None else sys.argv):
        import tensorflow as tf
        tf.config.list_physical_devices()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if line.strip() and not NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


class PlainFormatter(logging.Formatter):
    """`message` for INFO, `WARNING: message` above: no absl date/thread/file prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname}: {text}"


def quiet_logs() -> None:
    """Keep TensorFlow's INFO chatter out of the console, keep this package's INFO lines
    (plain, without absl's prefix) and every warning. An explicit --verbosity wins."""
    if "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present:
        return
    absl_logging.get_absl_handler().setFormatter(PlainFormatter("%(message)s"))
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logging.getLogger("leukemia_tf").setLevel(logging.INFO)


def _register_help(define: Callable[[flags.FlagValues], None], doc: str) -> None:
    fv = flags.FLAGS
    before = set(fv)
    define(fv)
    for name in sorted(set(fv) - before):
        fv.register_key_flag_for_module(sys.argv[0], fv[name])
    main_module = sys.modules.get("__main__")
    if main_module is not None and doc:  # absl prints __main__'s docstring above the flags
        main_module.__doc__ = doc


def _parser(cmd: Optional[Command]):
    """absl's flags_parser: grouped --help, dotted overrides, one-line flag errors."""
    def parse_or_exit(argv):
        fv = flags.FLAGS
        if cmd is not None and set(argv[1:]) & HELP_ARGS:
            print(help_text(fv, cmd))
            sys.exit(0)
        try:
            return parse(fv, argv) if cmd is not None else fv(argv)
        except flags.Error as e:
            script = cmd.script if cmd else os.path.basename(argv[0])
            print(f"error: {str(e).splitlines()[0]} (see {script} --help)", file=sys.stderr)
            sys.exit(1)
    return parse_or_exit


def run(main: Callable[[List[str]], Optional[int]],
        define_flags: Callable[[flags.FlagValues], None], doc: str,
        uses_tensorflow: bool = True, command: Optional[Command] = None) -> None:
    """Define the entry point's flags, then `app.run(main)` with quiet, plain logs and
    one-line errors: a `UserError` or a usage error prints `error: …` and exits 1;
    anything unexpected keeps its traceback.

    With a `command`, main checks its config and imports TensorFlow itself (after the
    checks); without one, TensorFlow is imported before main when `uses_tensorflow`."""
    _register_help(define_flags, doc)
    script = command.script if command else os.path.basename(sys.argv[0])

    def wrapped(argv):
        quiet_logs()
        if uses_tensorflow and command is None:
            import_tensorflow_quietly()
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except app.UsageError as e:
            print(f"error: {e} (see {script} --help)", file=sys.stderr)
            return 1
        except signals.Stopped as e:  # SIGTERM/SIGINT honoured: where it stopped
            return _stopped(str(e), e.code)
        except KeyboardInterrupt:  # Ctrl-C in a command that does not handle it itself
            return _stopped(f"stopped by {signals.name(signal.SIGINT)}",
                            signals.exit_code(signal.SIGINT))

    try:
        app.run(wrapped, flags_parser=_parser(command))
    except SystemExit as e:  # absl exits 1 after printing --help; asking for help is no error
        if e.code == 1 and set(sys.argv[1:]) & (HELP_ARGS | {"--helpfull"}):
            raise SystemExit(0) from None
        raise


def _stopped(message: str, code: int) -> None:
    """One line, then exit at once with `code`: the command saved what it keeps, and
    TensorFlow's shutdown (input threads, a pending tf.data prefetch) can take long."""
    print(f"\n{message}" if _mid_line() else message, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _mid_line() -> bool:
    """True when stderr is a terminal (a progress bar may own the current line)."""
    return sys.stderr.isatty()
