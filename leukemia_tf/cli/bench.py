"""Throughput benchmarks of the input pipeline, its peers, training and conversion.

    python tools/benchmark.py input   --json_out=bench_out/input.json
    python tools/benchmark.py peers   --data_dir=<tree> [--records_dir=<dir>] --json_out=F
    python tools/benchmark.py train   --models=seed_cnn --precisions=float32 --json_out=F
    python tools/benchmark.py train   --models=resnet_small --image_size=128 --sweep
        [--sweep_threads=0:0,1:2,2:1] [--profile_dir=bench_out/trace] --json_out=F
    python tools/benchmark.py convert --data_dir=<tree> --json_out=F
    python tools/benchmark.py all     --num_images=3000 --json_out=bench_out/all.json

Without --data_dir and --records_dir a synthetic tree (--num_images, --full) is generated
in --work_dir and converted there; both are reused by later runs.
"""
from __future__ import annotations

from absl import app, flags

from leukemia_tf.cli import common

common.import_tensorflow_quietly()  # bench imports TensorFlow: filter its start-up noise
from leukemia_tf.bench import plan as bench  # noqa: E402

_D = bench.BenchConfig()
FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("data_dir", "", "C-NMC tree (C-NMC_Leukemia or the folder above it); "
             "empty: a synthetic tree in --work_dir.")
    d.string("records_dir", "", "Converted records of the tree; empty: convert the "
             "tree into --work_dir (once; reused).")
    d.string("work_dir", _D.work_dir, "Synthetic trees, records and conversions.")
    d.string("json_out", "", "Write the results JSON here.")
    d.integer("num_images", _D.num_images, "Synthetic tree size, all splits "
              "(0: the default 510-image tree).")
    d.bool("full", _D.full, "Synthetic tree with the real counts (~15,000 images, 9 GB).")
    d.integer("synthetic_seed", _D.synthetic_seed, "Seed of the synthetic tree.")
    d.enum("encoding", _D.encoding, ["png", "raw", "bmp", "jpeg"],
           "Stored encoding when converting the tree for the records.")
    d.integer("image_size", _D.image_size, "Output size of every pipeline compared.")
    d.integer("batch_size", _D.batch_size, "Batch of the input measurements.")
    d.float("min_seconds", _D.min_seconds, "Time each rate at least this long.")
    d.integer("min_batches", _D.min_batches, "... and over at least this many batches.")
    d.bool("isolate", _D.isolate, "Each measurement in its own process, so peak RSS "
           "is per measurement (~5 s of TensorFlow import each).")
    d.integer("repeats", _D.repeats, "Runs of each rate, interleaved with the others; "
              "the fastest counts (other load only slows runs down).")
    d.list("cpu_work", list(_D.cpu_work), "input: per-example CPU augmentation "
           f"variants of the steady state ({', '.join(bench.CPU_WORK)}; empty: none).")
    d.list("ceiling_encodings", list(_D.ceiling_encodings), "peers: extra in-memory "
           "decode ceilings, enc[level][@size|@out] (png0/png1/png6: zlib level; @out: "
           "pre-resized to --image_size), re-encoded from the records.")
    d.integer("ceiling_sample", _D.ceiling_sample, "Images re-encoded for those.")
    d.integer("seed_numpy_limit", _D.seed_numpy_limit, "peers: at most this many "
              "images for the seed approach (its RAM grows ~1.3 GB per 1,000; 0: all).")
    d.list("models", list(_D.models), "train: models to time (any registered name).")
    d.list("precisions", list(_D.precisions), "train: mixed precision policies.")
    d.integer("train_batch_size", _D.train_batch_size, "train: global batch.")
    d.integer("train_steps", _D.train_steps, "train: timed steps per input.")
    d.integer("train_rounds", _D.train_rounds, "train: alternating blocks per input.")
    d.bool("train_augment", _D.train_augment, "train: augmentation in the model.")
    d.enum("jit_compile", _D.jit_compile, ["auto", "on", "off"], "train: XLA in the default rows.")  # noqa: E501
    d.integer("steps_per_execution", _D.steps_per_execution, "train: steps per call in the default rows.")  # noqa: E501
    d.float("flops_seconds", _D.flops_seconds, "train: time each dense FLOP/s probe this long.")  # noqa: E501
    d.bool("sweep", _D.sweep, "train: also the step-settings table (synthetic input).")
    d.list("sweep_jit", list(_D.sweep_jit), "train --sweep: jit_compile values.")
    d.list("sweep_steps_per_execution", [str(v) for v in _D.sweep_steps_per_execution], "train --sweep: steps_per_execution values.")  # noqa: E501
    d.list("sweep_precisions", list(_D.sweep_precisions), "train --sweep: precisions (bfloat16 only where native).")  # noqa: E501
    d.list("sweep_threads", list(_D.sweep_threads), "train --sweep: inter:intra op threads (0 = TF's choice).")  # noqa: E501
    d.string("profile_dir", _D.profile_dir, "train: write a tf.profiler trace of 5 steps per row here.")  # noqa: E501
    d.list("first_pass_encodings", list(_D.first_pass_encodings), "convert: first epoch per stored encoding, enc[level][@size|@out] (empty: none).")  # noqa: E501
    d.list("encodings", list(_D.encodings), "convert: encodings to time.")
    d.integer("convert_workers", _D.convert_workers, "Converter processes (0: all cores).")


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
        jit_compile=FLAGS.jit_compile, steps_per_execution=FLAGS.steps_per_execution,
        flops_seconds=FLAGS.flops_seconds, sweep=FLAGS.sweep, sweep_jit=tuple(FLAGS.sweep_jit),
        sweep_steps_per_execution=tuple(int(v) for v in FLAGS.sweep_steps_per_execution),
        sweep_precisions=tuple(FLAGS.sweep_precisions),
        sweep_threads=tuple(FLAGS.sweep_threads), profile_dir=FLAGS.profile_dir,
        first_pass_encodings=tuple(FLAGS.first_pass_encodings),
        encodings=tuple(FLAGS.encodings), convert_workers=FLAGS.convert_workers)


def main(argv):
    commands = bench.COMMANDS + ("all",)
    if len(argv) != 2 or argv[1] not in commands:
        raise app.UsageError(f"usage: leukemia-bench <{'|'.join(commands)}> [--flags]; "
                             f"got {argv[1:]}")
    result = bench.run(argv[1], config_from_flags())
    print(bench.format_table(result))
    if FLAGS.json_out:
        bench.save(result, FLAGS.json_out)
        print(f"wrote {FLAGS.json_out}")
    return 0


def console_main():
    common.run(main, define_flags, __doc__)


if __name__ == "__main__":
    console_main()
