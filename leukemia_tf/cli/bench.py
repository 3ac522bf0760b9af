"""Throughput benchmarks of the input pipeline, its peers, training and conversion.

  leukemia-bench input   --json_out=bench_out/input.json
  leukemia-bench peers   --data_dir=<tree> [--records_dir=<dir>] --json_out=F
  leukemia-bench train   --models=seed_cnn --precisions=float32 --json_out=F
  leukemia-bench train   --models=resnet_small --image_size=128 --sweep
      [--sweep_threads=0:0,1:2,2:1] [--profile_dir=bench_out/trace] --json_out=F
  leukemia-bench convert --data_dir=<tree> --json_out=F
  leukemia-bench all     --num_images=3000 --json_out=bench_out/all.json

The measurement (input, peers, train, convert or all) is required. Without --data_dir
and --records_dir a synthetic tree (--num_images, --full) is generated in --work_dir and
converted there; both are reused by later runs. (`python -m leukemia_tf.cli.bench`
takes the same arguments.)
"""
from __future__ import annotations

from absl import app, flags

from leukemia_tf.bench import settings
from leukemia_tf.cli import flag_table, runner

FLAGS = flags.FLAGS
A = flag_table.Alias

# The short flags: flag -> BenchConfig field. Types and defaults come from the field.
ALIASES = {
    # data
    "work_dir": A("work_dir", "Synthetic trees, records and conversions.", "data"),
    "data_dir": A("data_dir", "C-NMC tree (C-NMC_Leukemia or the folder above it); "
                  "empty: a synthetic tree in --work_dir.", "data"),
    "records_dir": A("records_dir", "Converted records of the tree; empty: convert the "
                     "tree into --work_dir (once; reused).", "data"),
    "num_images": A("num_images", "Synthetic tree size, all splits (0: the default "
                    "510-image tree).", "data"),
    "full": A("full", "Synthetic tree with the real counts (~15,000 images, 9 GB).",
              "data"),
    "synthetic_seed": A("synthetic_seed", "Seed of the synthetic tree.", "data"),
    "encoding": A("encoding", "Stored encoding when converting the tree for the records.",
                  "data"),
    # measure: how every rate is timed
    "image_size": A("image_size", "Output size of every pipeline compared.", "measure"),
    "batch_size": A("batch_size", "Batch of the input measurements.", "measure"),
    "min_seconds": A("min_seconds", "Time each rate at least this long.", "measure"),
    "min_batches": A("min_batches", "... and over at least this many batches.", "measure"),
    "isolate": A("isolate", "Each measurement in its own process, so peak RSS is per "
                 "measurement (~5 s of TensorFlow import each).", "measure"),
    "repeats": A("repeats", "Runs of each rate, interleaved with the others; the fastest "
                 "counts (other load only slows runs down).", "measure"),
    "cpu_work": A("cpu_work", "input: per-example CPU augmentation variants of the steady "
                  f"state ({', '.join(settings.CPU_WORK)}; empty: none).", "measure"),
    "ceiling_encodings": A("ceiling_encodings", "peers: extra in-memory decode ceilings, "
                           "enc[level][@size|@out] (png0/png1/png6: zlib level; @out: "
                           "pre-resized to --image_size), re-encoded from the records.",
                           "measure"),
    "ceiling_sample": A("ceiling_sample", "peers: images re-encoded for those.", "measure"),
    "seed_numpy_limit": A("seed_numpy_limit", "peers: at most this many images for the "
                          "seed approach (its RAM grows ~1.3 GB per 1,000; 0: all).",
                          "measure"),
    # train
    "models": A("models", "Models to time (any registered name).", "train"),
    "precisions": A("precisions", "Mixed precision policies.", "train"),
    "train_batch_size": A("train_batch_size", "Global batch.", "train"),
    "train_steps": A("train_steps", "Timed steps per input.", "train"),
    "train_rounds": A("train_rounds", "Alternating blocks per input.", "train"),
    "train_augment": A("train_augment", "Augmentation in the model.", "train"),
    "jit_compile": A("jit_compile", "XLA in the default rows.", "train"),
    "steps_per_execution": A("steps_per_execution", "Steps per call in the default rows.",
                             "train"),
    "flops_seconds": A("flops_seconds", "Time each dense FLOP/s probe this long.", "train"),
    "sweep": A("sweep", "Also the step-settings table (synthetic input).", "train"),
    "sweep_jit": A("sweep_jit", "--sweep: jit_compile values.", "train"),
    "sweep_steps_per_execution": A("sweep_steps_per_execution",
                                   "--sweep: steps_per_execution values.", "train"),
    "sweep_precisions": A("sweep_precisions", "--sweep: precisions (bfloat16 only where "
                          "native).", "train"),
    "sweep_threads": A("sweep_threads", "--sweep: inter:intra op threads (0 = TF's "
                       "choice).", "train"),
    # convert
    "first_pass_encodings": A("first_pass_encodings", "First epoch per stored encoding, "
                              "enc[level][@size|@out] (empty: none).", "convert"),
    "encodings": A("encodings", "Encodings to time.", "convert"),
    "convert_workers": A("convert_workers", "Converter processes (0: all cores).",
                         "convert"),
    # output
    "json_out": A("json_out", "Write the results JSON here.", "output"),
    "profile_dir": A("profile_dir", "train: write a tf.profiler trace of 5 steps per row "
                     "here.", "output"),
}
_MEASUREMENTS = settings.COMMANDS + ("all",)

COMMAND = flag_table.Command(
    script="leukemia-bench", doc=__doc__, base=settings.BenchConfig, aliases=ALIASES,
    usage=f"<{'|'.join(_MEASUREMENTS)}> (required) [--json_out=FILE] [flags]")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    flag_table.define_flags(fv, COMMAND)


def config_from_flags(fv: flags.FlagValues = FLAGS) -> settings.BenchConfig:
    """BenchConfig from the flags given (short or dotted)."""
    return flag_table.config_from_flags(fv, COMMAND)


def main(argv):
    if len(argv) != 2 or argv[1] not in _MEASUREMENTS:
        raise app.UsageError(f"usage: leukemia-bench <{'|'.join(_MEASUREMENTS)}> "
                             f"[--flags]; got {argv[1:]}")
    cfg = config_from_flags(FLAGS)
    runner.import_tensorflow_quietly()  # the benchmarks' own: start-up noise dropped
    from leukemia_tf.bench import plan as bench
    result = bench.run(argv[1], cfg)
    print(bench.format_table(result))
    if cfg.json_out:
        bench.save(result, cfg.json_out)
        print(f"wrote {cfg.json_out}")
    return 0


def console_main():
    runner.run(main, define_flags, __doc__, command=COMMAND)


if __name__ == "__main__":
    console_main()
