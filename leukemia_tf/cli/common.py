"""What every absl entry point shares: flag definition, --help, quiet start-up, errors.

Flags are defined inside each entry point's `define_flags(fv)`, called only when that
entry point runs (as the TF Model Garden does), so any set of entry-point modules can be
imported together (tests, notebooks) without a DuplicateFlagError.

`--help` lists the entry point's own flags however it was started (`python -m`, a
`tools/` script or a console script): absl's help shows the key flags of `sys.argv[0]`,
so the flags just defined are registered as key flags of that module.

TensorFlow's C++ start-up lines on CPU hosts (`cudart_stub … Could not find cuda
drivers`, `failed call to cuInit … (303)`, the absl::InitializeLog banner) are printed
before Python can configure logging and say nothing a CPU user can act on. Entry points
import TensorFlow and probe the devices once with file descriptor 2 captured, then replay
every captured line that is not such noise. `--verbosity=1`/`-v 1` (or higher) shows all.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Callable, List, Optional

from absl import app, flags

from leukemia_tf.errors import UserError

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|cudart_stub\.cc"
    r"|cuda_platform\.cc.*cuInit|failed call to cuInit|cuda_(dnn|fft|blas)\.cc.*"
    r"Unable to register|computation_placer\.cc.*already registered"
    r"|TF-TRT Warning: Could not find TensorRT|cpu_feature_guard\.cc"
    r"|rebuild TensorFlow with the appropriate compiler flags")


HELP_ARGS = {"--help", "-h", "-?", "--helpshort", "--helpfull"}


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


def quiet_logs() -> None:
    """Keep TensorFlow's INFO chatter out of the console, keep this package's INFO lines
    and every warning. An explicit --verbosity flag wins."""
    import logging

    from absl import logging as absl_logging
    if "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present:
        return
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logging.getLogger("leukemia_tf").setLevel(logging.INFO)


def _register_help(define_flags: Callable[[flags.FlagValues], None], doc: str) -> None:
    fv = flags.FLAGS
    before = set(fv)
    define_flags(fv)
    for name in sorted(set(fv) - before):
        fv.register_key_flag_for_module(sys.argv[0], fv[name])
    main_module = sys.modules.get("__main__")
    if main_module is not None and doc:  # absl prints __main__'s docstring above the flags
        main_module.__doc__ = doc


def run(main: Callable[[List[str]], Optional[int]],
        define_flags: Callable[[flags.FlagValues], None], doc: str,
        uses_tensorflow: bool = True) -> None:
    """Define the entry point's flags, then `app.run(main)` with quiet logs and one-line
    errors: a `UserError` (or the exception types main lists) prints `error: …` and exits
    1; anything unexpected keeps its traceback."""
    _register_help(define_flags, doc)

    def wrapped(argv):
        quiet_logs()
        if uses_tensorflow:
            import_tensorflow_quietly()
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    try:
        app.run(wrapped)
    except SystemExit as e:  # absl exits 1 after printing --help; asking for help is no error
        if e.code == 1 and set(sys.argv[1:]) & HELP_ARGS:
            raise SystemExit(0) from None
        raise


class definer:
    """`d = definer(fv); d.string("name", default, "help")`: absl's DEFINE_* into `fv`."""

    def __init__(self, fv: flags.FlagValues):
        self._fv = fv

    def __getattr__(self, kind: str):
        import functools
        return functools.partial(getattr(flags, "DEFINE_" + kind), flag_values=self._fv)
