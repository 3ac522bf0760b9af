"""Convert a C-NMC_Leukemia tree into sharded TFRecords (absl entry point).

  leukemia-convert --data_dir=<C-NMC_Leukemia root> --output_dir=<dir>
  leukemia-convert --output_dir=<dir> --verify
  (or python -m leukemia_tf.cli.convert with the same flags)
"""
import dataclasses
import sys

from absl import flags

from leukemia_tf import errors
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.cli import flag_table, runner
from leukemia_tf.errors import UserError
from leukemia_tf.data import cnmc, convert

FLAGS = flags.FLAGS
A = flag_table.Alias


@dataclasses.dataclass(frozen=True)
class ConvertRun:
    """The command's root: the conversion, and whether to verify it (or only verify)."""
    conversion: convert.ConvertConfig = dataclasses.field(
        default_factory=lambda: convert.ConvertConfig(data_dir="", output_dir=""))
    verify: bool = False


ALIASES = {
    "data_dir": A("conversion.data_dir", "C-NMC_Leukemia root (or the folder above it).",
                  "data"),
    "canvas_size": A("conversion.canvas_size", "Square canvas: larger images are "
                     "centre-cropped, smaller padded with black; never rescaled.", "data"),
    "image_size": A("conversion.image_size", "Store model input at this size, made by "
                    "leukemia_tf/data/preprocess.py (canvas + area resize) in the parent "
                    "process; 0 = store decoded originals (the pipeline preprocesses them "
                    "with the same function and caches the result).", "data"),
    "on_error": A("conversion.on_error", "Bad input: stop naming the file (raise) or record "
                  "it in the manifest (skip).", "data"),
    "seed": A("conversion.seed", "Seed for the example order before sharding.", "data"),
    "output_dir": A("conversion.output_dir", "Where shards and manifest.json go (local, "
                    "gs://, ...).", "output"),
    "encoding": A("conversion.encoding", "Stored image encoding: png lossless (default), raw "
                  "uint8, bmp (original bytes where possible), jpeg (lossy).", "output"),
    "jpeg_quality": A("conversion.jpeg_quality", "JPEG quality when --encoding=jpeg.",
                      "output"),
    "png_compression": A("conversion.png_compression", "zlib level 0-9 for --encoding=png.",
                         "output"),
    "shard_size_mb": A("conversion.shard_size_mb", "Target shard size in MB.", "output"),
    "num_shards": A("conversion.num_shards", "Exact shards per split/fold group (0 = by size).",
                    "output"),
    "verify": A("verify", "Only verify --output_dir against its manifest (or, with "
                "--data_dir, verify after converting).", "output"),
    "progress": A("conversion.progress", "Show progress: a bar in a terminal, a plain line "
                  "every 30 s otherwise; a summary line at the end.", "output"),
    "num_workers": A("conversion.num_workers", "Encoding processes (0 = all cores).",
                     "distribution"),
}

COMMAND = flag_table.Command(
    script="leukemia-convert", doc=__doc__, base=ConvertRun, aliases=ALIASES,
    usage="--data_dir=DIR --output_dir=DIR [flags]   |   --output_dir=DIR --verify")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    flag_table.define_flags(fv, COMMAND)


def config_from_flags(fv: flags.FlagValues) -> ConvertRun:
    """ConvertRun from the flags given (short or dotted)."""
    return flag_table.config_from_flags(fv, COMMAND)


def check_inputs(run: ConvertRun) -> None:
    """What can be checked without TensorFlow: the flags a run needs, a local --data_dir
    that exists and is a C-NMC tree."""
    cfg = run.conversion
    if not cfg.output_dir:
        raise convert.ConvertError("--output_dir is required")
    if not cfg.data_dir and not run.verify:
        raise convert.ConvertError("--data_dir is required (or --verify alone)")
    if cfg.data_dir and "://" not in cfg.data_dir:
        try:
            cnmc.find_root(cfg.data_dir)
        except cnmc.CnmcError as e:
            raise cnmc.CnmcError(f"--data_dir: {e}") from None


def main(argv):
    flag_table.no_arguments(argv, COMMAND)
    try:
        run = config_from_flags(FLAGS)
        check_inputs(run)
        runner.import_tensorflow_quietly()  # the records writer's; its start-up noise dropped
        return _run(run)
    except (cnmc.CnmcError, convert.ConvertError, UserError) as e:
        return _fail(str(e))
    except Exception as e:  # a full, read-only or missing disk path (local or gs://)
        message = errors.file_error(e, paths=True)
        if message is None:
            raise
        return _fail(message)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _run(run: ConvertRun) -> int:
    cfg = run.conversion
    if not cfg.output_dir:
        raise convert.ConvertError("--output_dir is required")
    if run.verify and not cfg.data_dir:
        report = convert.verify(cfg.output_dir)
        counts = ", ".join(f"{k} {v}" for k, v in report["by_split"].items())
        print(f"verified {report['shards']} shards, {report['examples']} examples "
              f"({counts or 'none'})")
        return 0
    if not cfg.data_dir:
        raise convert.ConvertError("--data_dir is required (or --verify alone)")
    manifest = convert.convert(cfg)
    print(manifest_lib.summarize(manifest))
    if run.verify:
        report = convert.verify(cfg.output_dir)
        print(f"verified {report['shards']} shards, {report['examples']} examples")
    return 0


def console_main():
    runner.run(main, define_flags, __doc__, command=COMMAND)


if __name__ == "__main__":
    console_main()
