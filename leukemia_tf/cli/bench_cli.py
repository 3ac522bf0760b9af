"""Throughput benchmarks of the input pipeline, its peers, training and conversion.

    python tools/benchmark.py input   --json_out=bench_out/input.json
    python tools/benchmark.py peers   --data_dir=<tree> [--records_dir=<dir>] --json_out=F
    python tools/benchmark.py train   --models=seed_cnn --precisions=float32 --json_out=F
    python tools/benchmark.py convert --data_dir=<tree> --json_out=F
    python tools/benchmark.py all     --num_images=3000 --json_out=bench_out/all.json

Without --data_dir and --records_dir a synthetic tree (--num_images, --full) is generated
in --work_dir and converted there; both are reused by later runs.
"""
from __future__ import annotations

from absl import app, flags

from leukemia_tf import bench

_D = bench.BenchConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "C-NMC tree (C-NMC_Leukemia or the folder above it); "
                    "empty: a synthetic tree in --work_dir.")
flags.DEFINE_string("records_dir", "", "Converted records of the tree; empty: convert the "
                    "tree into --work_dir (once; reused).")
flags.DEFINE_string("work_dir", _D.work_dir, "Synthetic trees, records and conversions.")
flags.DEFINE_string("json_out", "", "Write the results JSON here.")
flags.DEFINE_integer("num_images", _D.num_images, "Synthetic tree size, all splits "
                     "(0: the default 510-image tree).")
flags.DEFINE_bool("full", _D.full, "Synthetic tree with the real counts (~15,000 images, 9 GB).")
flags.DEFINE_integer("synthetic_seed", _D.synthetic_seed, "Seed of the synthetic tree.")
flags.DEFINE_enum("encoding", _D.encoding, ["png", "raw", "bmp", "jpeg"],
                  "Stored encoding when converting the tree for the records.")
flags.DEFINE_integer("image_size", _D.image_size, "Output size of every pipeline compared.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Batch of the input measurements.")
flags.DEFINE_float("min_seconds", _D.min_seconds, "Time each rate at least this long.")
flags.DEFINE_integer("min_batches", _D.min_batches, "... and over at least this many batches.")
flags.DEFINE_bool("isolate", _D.isolate, "Each measurement in its own process, so peak RSS "
                  "is per measurement (~5 s of TensorFlow import each).")
flags.DEFINE_integer("repeats", _D.repeats, "Runs of each rate, interleaved with the others; "
                     "the fastest counts (other load only slows runs down).")
flags.DEFINE_list("cpu_work", list(_D.cpu_work), "input: per-example CPU augmentation "
                  f"variants of the steady state ({', '.join(bench.CPU_WORK)}; empty: none).")
flags.DEFINE_list("ceiling_encodings", list(_D.ceiling_encodings), "peers: extra in-memory "
                  "decode ceilings, `enc` or `enc@stored_size`, re-encoded from the records.")
flags.DEFINE_integer("ceiling_sample", _D.ceiling_sample, "Images re-encoded for those.")
flags.DEFINE_integer("seed_numpy_limit", _D.seed_numpy_limit, "peers: at most this many "
                     "images for the seed approach (its RAM grows ~1.3 GB per 1,000; 0: all).")
flags.DEFINE_list("models", list(_D.models), "train: models to time.")
flags.DEFINE_list("precisions", list(_D.precisions), "train: mixed precision policies.")
flags.DEFINE_integer("train_batch_size", _D.train_batch_size, "train: global batch.")
flags.DEFINE_integer("train_steps", _D.train_steps, "train: timed steps per input.")
flags.DEFINE_integer("train_rounds", _D.train_rounds, "train: alternating blocks per input.")
flags.DEFINE_bool("train_augment", _D.train_augment, "train: augmentation in the model.")
flags.DEFINE_list("encodings", list(_D.encodings), "convert: encodings to time.")
flags.DEFINE_integer("convert_workers", _D.convert_workers, "Converter processes (0: all cores).")


def config_from_flags() -> bench.BenchConfig:
    return bench.BenchConfig(
        work_dir=FLAGS.work_dir, data_dir=FLAGS.data_dir, records_dir=FLAGS.records_dir,
        num_images=FLAGS.num_images, full=FLAGS.full, synthetic_seed=FLAGS.synthetic_seed,
        encoding=FLAGS.encoding, image_size=FLAGS.image_size, batch_size=FLAGS.batch_size,
        min_seconds=FLAGS.min_seconds, min_batches=FLAGS.min_batches, isolate=FLAGS.isolate,
        repeats=FLAGS.repeats,
        cpu_work=tuple(FLAGS.cpu_work), ceiling_encodings=tuple(FLAGS.ceiling_encodings),
        ceiling_sample=FLAGS.ceiling_sample, seed_numpy_limit=FLAGS.seed_numpy_limit,
        models=tuple(FLAGS.models), precisions=tuple(FLAGS.precisions),
        train_batch_size=FLAGS.train_batch_size, train_steps=FLAGS.train_steps,
        train_rounds=FLAGS.train_rounds, train_augment=FLAGS.train_augment,
        encodings=tuple(FLAGS.encodings), convert_workers=FLAGS.convert_workers)


def main(argv):
    commands = bench.COMMANDS + ("all",)
    if len(argv) != 2 or argv[1] not in commands:
        raise app.UsageError(f"usage: benchmark.py <{'|'.join(commands)}> [--flags]; "
                             f"got {argv[1:]}")
    result = bench.run(argv[1], config_from_flags())
    print(bench.format_table(result))
    if FLAGS.json_out:
        bench.save(result, FLAGS.json_out)
        print(f"wrote {FLAGS.json_out}")
    return 0


def console_main():
    app.run(main)


if __name__ == "__main__":
    console_main()
