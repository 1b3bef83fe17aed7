#!/usr/bin/env bash
# A TRAINING launcher (the name test.sh is the task card's; it does not run the tests: those are
# `python3 -m pytest -q`). Launch DenseFuse training:
#   bash run_scripts/test.sh                          # short demo on the bundled sample images
#   IMAGE_PATH=/data/coco2014/train bash run_scripts/test.sh   # the paper's recipe on your data
#   GRAY=0 bash run_scripts/test.sh                   # the same with the RGB (3-channel) network
# Extra arguments are passed to run_train.py, e.g. `bash run_scripts/test.sh --ssim_weight 1000`.
# It runs $PYTHON (default: python3 on PATH, so activate the environment holding torch first,
# or PYTHON=/path/to/venv/bin/python bash run_scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  echo; echo "run_train.py's flags (extra arguments go to it):"; exec "$PYTHON" run_train.py --help
fi
if [ "${GRAY:-1}" = "0" ]; then set -- --no-gray "$@"; fi
if [ -z "${IMAGE_PATH:-}" ]; then
  echo "*** DEMO: no IMAGE_PATH given, training 2 short epochs on the 8 bundled sample images"
  echo "*** (data_train_sample/). For real training: IMAGE_PATH=/path/to/images bash $0"
  exec "$PYTHON" run_train.py --image_path data_train_sample --num_epochs 2 --epoch_size 16 \
    --batch_size 2 --log_every 1 --run_name "demo_$(date +%Y%m%d-%H%M%S)" "$@"
fi
# The paper: MS-COCO resized to 256x256, Adam 1e-4, batch 2, 4 epochs, lambda = 100.
exec "$PYTHON" run_train.py --image_path "$IMAGE_PATH" --image_size 256 --batch_size 2 \
  --num_epochs 4 --lr 1e-4 --ssim_weight "${SSIM_WEIGHT:-100}" "$@"
