"""Convert a C-NMC_Leukemia tree into sharded TFRecords (absl entry point).

  python tools/convert_to_tfrecords.py --data_dir=<C-NMC_Leukemia root> --output_dir=<dir>
  python tools/convert_to_tfrecords.py --output_dir=<dir> --verify
"""
import sys

from absl import app, flags, logging

from leukemia_tf.data import cnmc, convert

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "C-NMC_Leukemia root (or the folder above it).")
flags.DEFINE_string("output_dir", None, "Where shards and manifest.json go (local, gs://, ...).")
flags.DEFINE_enum("encoding", "png", ["png", "raw", "bmp", "jpeg"],
                  "Stored image encoding: png lossless (default), raw uint8, bmp (original "
                  "bytes where possible), jpeg (lossy).")
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality when --encoding=jpeg.")
flags.DEFINE_integer("png_compression", 1, "zlib level 0-9 for --encoding=png.")
flags.DEFINE_integer("canvas_size", 450, "Square canvas: larger images are centre-cropped, "
                     "smaller padded with black; never rescaled.")
flags.DEFINE_integer("image_size", 0, "Store model input at this size, made by "
                     "leukemia_tf/data/preprocess.py (canvas + area resize) in the parent "
                     "process; 0 = store decoded originals (the pipeline preprocesses them "
                     "with the same function and caches the result).")
flags.DEFINE_float("shard_size_mb", 150.0, "Target shard size in MB.")
flags.DEFINE_integer("num_shards", 0, "Exact shards per split/fold group (0 = by size).")
flags.DEFINE_integer("num_workers", 0, "Encoding processes (0 = all cores).")
flags.DEFINE_integer("seed", 0, "Seed for the example order before sharding.")
flags.DEFINE_enum("on_error", "raise", ["raise", "skip"],
                  "Bad input: stop naming the file (raise) or record it in the manifest (skip).")
flags.DEFINE_bool("verify", False, "Only verify --output_dir against its manifest.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    del argv
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    try:
        if FLAGS.verify and not FLAGS.data_dir:
            report = convert.verify(FLAGS.output_dir)
            print(f"verified {report['shards']} shards, {report['examples']} examples: "
                  f"{report['by_split']}")
            return 0
        if not FLAGS.data_dir:
            raise app.UsageError("--data_dir is required (or --verify alone)")
        cfg = convert.ConvertConfig(
            data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir, encoding=FLAGS.encoding,
            jpeg_quality=FLAGS.jpeg_quality, png_compression=FLAGS.png_compression,
            canvas_size=FLAGS.canvas_size, image_size=FLAGS.image_size,
            shard_size_mb=FLAGS.shard_size_mb, num_shards=FLAGS.num_shards,
            num_workers=FLAGS.num_workers, seed=FLAGS.seed, on_error=FLAGS.on_error,
            progress=FLAGS.progress)
        manifest = convert.convert(cfg)
        print(convert.summarize(manifest))
        if FLAGS.verify:
            report = convert.verify(FLAGS.output_dir)
            print(f"verified {report['shards']} shards, {report['examples']} examples")
    except (cnmc.CnmcError, convert.ConvertError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def console_main():
    app.run(main)


if __name__ == "__main__":
    console_main()
