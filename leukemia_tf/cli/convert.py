"""Convert a C-NMC_Leukemia tree into sharded TFRecords (absl entry point).

  python tools/convert_to_tfrecords.py --data_dir=<C-NMC_Leukemia root> --output_dir=<dir>
  python tools/convert_to_tfrecords.py --output_dir=<dir> --verify
"""
import errno
import sys

from absl import flags

from leukemia_tf.data import cnmc, convert
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.cli import common

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("data_dir", None, "C-NMC_Leukemia root (or the folder above it).")
    d.string("output_dir", None, "Where shards and manifest.json go (local, gs://, ...).")
    d.enum("encoding", "png", ["png", "raw", "bmp", "jpeg"],
           "Stored image encoding: png lossless (default), raw uint8, bmp (original "
           "bytes where possible), jpeg (lossy).")
    d.integer("jpeg_quality", 95, "JPEG quality when --encoding=jpeg.")
    d.integer("png_compression", 1, "zlib level 0-9 for --encoding=png.")
    d.integer("canvas_size", 450, "Square canvas: larger images are centre-cropped, "
              "smaller padded with black; never rescaled.")
    d.integer("image_size", 0, "Store model input at this size, made by "
              "leukemia_tf/data/preprocess.py (canvas + area resize) in the parent "
              "process; 0 = store decoded originals (the pipeline preprocesses them "
              "with the same function and caches the result).")
    d.float("shard_size_mb", 150.0, "Target shard size in MB.")
    d.integer("num_shards", 0, "Exact shards per split/fold group (0 = by size).")
    d.integer("num_workers", 0, "Encoding processes (0 = all cores).")
    d.integer("seed", 0, "Seed for the example order before sharding.")
    d.enum("on_error", "raise", ["raise", "skip"],
           "Bad input: stop naming the file (raise) or record it in the manifest (skip).")
    d.bool("verify", False, "Only verify --output_dir against its manifest.")
    d.bool("progress", True, "Show progress: a bar in a terminal, a plain line every 30 s "
           "otherwise; a summary line at the end.")


def main(argv):
    del argv
    try:
        return _run()
    except (cnmc.CnmcError, convert.ConvertError) as e:
        return _fail(str(e))
    except OSError as e:  # read-only or full disk, missing folder: say which file
        if e.errno not in _EXPECTED_ERRNO:
            raise
        return _fail(f"{e.strerror}, {e.filename or '?'}")
    except Exception as e:  # tf.errors from a URL file system, same kinds as above
        if type(e).__name__ not in _EXPECTED_TF_ERRORS:
            raise
        return _fail(getattr(e, "message", str(e)))


# Failures a user can act on get one line; anything else keeps its traceback.
_EXPECTED_ERRNO = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                   errno.ENOENT, errno.ENOTDIR, errno.EISDIR}
_EXPECTED_TF_ERRORS = {"PermissionDeniedError", "ResourceExhaustedError", "NotFoundError"}


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _run() -> int:
    if not FLAGS.output_dir:
        raise convert.ConvertError("--output_dir is required")
    if FLAGS.verify and not FLAGS.data_dir:
        report = convert.verify(FLAGS.output_dir)
        print(f"verified {report['shards']} shards, {report['examples']} examples: "
              f"{report['by_split']}")
        return 0
    if not FLAGS.data_dir:
        raise convert.ConvertError("--data_dir is required (or --verify alone)")
    cfg = convert.ConvertConfig(
        data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir, encoding=FLAGS.encoding,
        jpeg_quality=FLAGS.jpeg_quality, png_compression=FLAGS.png_compression,
        canvas_size=FLAGS.canvas_size, image_size=FLAGS.image_size,
        shard_size_mb=FLAGS.shard_size_mb, num_shards=FLAGS.num_shards,
        num_workers=FLAGS.num_workers, seed=FLAGS.seed, on_error=FLAGS.on_error,
        progress=FLAGS.progress)
    manifest = convert.convert(cfg)
    print(manifest_lib.summarize(manifest))
    if FLAGS.verify:
        report = convert.verify(FLAGS.output_dir)
        print(f"verified {report['shards']} shards, {report['examples']} examples")
    return 0


def console_main():
    common.run(main, define_flags, __doc__)


if __name__ == "__main__":
    console_main()
