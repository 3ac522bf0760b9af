#!/usr/bin/env bash
# The real-patient recipe study (BUILD_NOTES "Real cells, round 3"): every recipe on the
# same pooled, patient-grouped protocol, one after another, each into its own folder.
#
#   tools/real_patient_study.sh RECORDS OUT [RECIPE ...]
#
# RECORDS: the converted real_dev subset (python3 ../shared/cnmc/real_dev/unpack.py D, then
# leukemia-convert --data_dir=D/C-NMC_Leukemia --output_dir=RECORDS). Protocol: the 10
# fold_1 patients (8 ALL, 2 hem) in 5 patient-grouped folds of two patients (at most one
# hem patient held out), each fold trained once per seed 0, 1, 2; every fold's epoch can
# be chosen only on fold 0 (34 cells of 11 other patients); the held-out predictions of
# all folds are pooled (leukemia-crossval --cv=pooled). A finished recipe is skipped on a
# re-run; an interrupted one resumes. Without RECIPE names, every recipe in order.
# SEEDS=0 (or 0,1) runs only those seeds: finished runs are kept, so calling the script
# with SEEDS=0, then 0,1, then 0,1,2 interleaves recipes seed by seed.
set -euo pipefail
if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  echo "needs: the project's venv (.venv/bin/leukemia-crossval, or CROSSVAL=<path>)"
  [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && exit 0
  echo "error: RECORDS and OUT are required" >&2; exit 1
fi
records=$1; out=$2; shift 2
here="$(cd "$(dirname "$0")/.." && pwd)"
crossval="${CROSSVAL:-$here/.venv/bin/leukemia-crossval}"
[[ -f $records/manifest.json ]] || {
  echo "error: $records holds no converted records (no manifest.json; see --help)" >&2; exit 1; }
[[ -x $crossval ]] || {
  echo "error: $crossval is not there: make venv, or CROSSVAL=<path>" >&2; exit 1; }
mkdir -p "$out"
common=(--records_dir="$records" --cv=pooled --folds=1 --num_folds=5
        --selection_split=fold0 --seeds="${SEEDS:-0,1,2}" --config=run.train.monitor=last)
# BN trainable, no head-only epochs (the pretrained preset's fine-tuning otherwise)
lite_bn=(--preset=pretrained --models=efficientnet_lite0
         --config=run.model.freeze_backbone_bn=false --config=run.train.freeze_backbone_epochs=0)
# flips and 90-degree turns only: no small rotations, no colour jitter
flips=(--config=run.model.augment.rotate_degrees=0 --config=run.model.augment.brightness=0
       --config=run.model.augment.contrast=0 --config=run.model.augment.hue=0
       --config=run.model.augment.saturation=0)
recipe() {
  case $1 in
    lite_bn_8ep_128) echo "${lite_bn[*]} --image_size=128 --epochs=8" ;;
    lite_bn_flips_8ep_128) echo "${lite_bn[*]} ${flips[*]} --image_size=128 --epochs=8" ;;
    resnet_small_20ep_128) echo "--models=resnet_small --image_size=128 --epochs=20" ;;
    resnet_small_20ep_96) echo "--models=resnet_small --image_size=96 --epochs=20" ;;
    lite_frozen_8ep_128) echo "--preset=pretrained --models=efficientnet_lite0 --image_size=128 --epochs=8" ;;
    lite_bn_flips_lr3e-3_b32_8ep_128) echo "${lite_bn[*]} ${flips[*]} --image_size=128 --epochs=8 --learning_rate=3e-3 --batch_size=32" ;;
    lite_bn_4ep_128) echo "${lite_bn[*]} --image_size=128 --epochs=4" ;;
    lite_bn_8ep_96) echo "${lite_bn[*]} --image_size=96 --epochs=8" ;;
    lite_bn_16ep_128) echo "${lite_bn[*]} --image_size=128 --epochs=16" ;;
    lite_bn_4ep_96) echo "${lite_bn[*]} --image_size=96 --epochs=4" ;;
    lite_bn_4ep_64) echo "${lite_bn[*]} --image_size=64 --epochs=4" ;;
    lite_frozen_4ep_96) echo "--preset=pretrained --models=efficientnet_lite0 --image_size=96 --epochs=4" ;;
    lite_bn_flips_4ep_96) echo "${lite_bn[*]} ${flips[*]} --image_size=96 --epochs=4" ;;
    lite_frozen_4ep_64) echo "--preset=pretrained --models=efficientnet_lite0 --image_size=64 --epochs=4" ;;
    resnet_small_20ep_64) echo "--models=resnet_small --image_size=64 --epochs=20" ;;
    *) echo "unknown recipe $1" >&2; return 1 ;;
  esac
}
all=(lite_bn_8ep_128 lite_bn_flips_8ep_128 resnet_small_20ep_128 lite_frozen_8ep_128
     lite_bn_flips_lr3e-3_b32_8ep_128 lite_bn_4ep_128 lite_bn_8ep_96 lite_bn_16ep_128)
for name in "${@:-${all[@]}}"; do
  flags=$(recipe "$name")
  [ -z "${SEEDS:-}" ] && [ -f "$out/$name/pooled.csv" ] && {
    echo "$name: done ($out/$name/pooled.md)"; continue; }
  echo "$(date -u +%FT%TZ) $name: $flags; load $(cut -d' ' -f1-3 /proc/loadavg)"
  # shellcheck disable=SC2086
  "$crossval" "${common[@]}" $flags --out_dir="$out/$name" >> "$out/$name.log" 2>&1
  echo "$(date -u +%FT%TZ) $name: finished; load $(cut -d' ' -f1-3 /proc/loadavg)"
done
