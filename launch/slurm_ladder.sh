#!/usr/bin/env bash
# Submits a ladder to a SLURM GPU cluster, from the repository's login-node checkout:
#
#   launch/slurm_ladder.sh PRESET WORKDIR [--config.FIELD=VALUE ...]
#   e.g. NODES=2 launch/slurm_ladder.sh gpu /shared/$USER/t2-gpu
#
# Four jobs: (1) prepare: tokenize the data into data.cache_dir once; (2) a job array with one
# rung per task (index into ladder.rungs), each on $NODES nodes training and then evaluating its
# rung (launch/slurm_rung.sbatch); (3) after every rung succeeded: eval (writes the ladder tables,
# skipping the evaluated rungs), fit, plan on CPU; (4) validate (train and sample the plan's
# choices, one process on one node's GPUs) and report (launch/slurm_validate.sbatch). WORKDIR and
# data.cache_dir must be on a file system every node shares. Resubmitting skips finished rungs and
# validation runs and resumes half-trained ones.
# Environment: NODES (1), GPUS_PER_NODE (8), MAX_PARALLEL (rungs running at once, 8),
# PARTITION and ACCOUNT (cluster defaults), PYTHON (python; the job inherits this shell's PATH).
set -euo pipefail
if (($# < 2)); then
  echo "usage: $0 PRESET WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
PRESET=$1 WORKDIR=$2
shift 2
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python}
NODES=${NODES:-1} GPUS_PER_NODE=${GPUS_PER_NODE:-8} MAX_PARALLEL=${MAX_PARALLEL:-8}
SBATCH=(sbatch --parsable ${PARTITION:+--partition=$PARTITION} ${ACCOUNT:+--account=$ACCOUNT})

NUM_RUNGS=$(JAX_PLATFORMS=cpu "$PYTHON" - --config="configs/ladder.py:$PRESET" "$@" <<'PY'
import sys
from absl import flags
from ml_collections import config_flags
config = config_flags.DEFINE_config_file("config")
flags.FLAGS(sys.argv)
print(len(config.value.ladder.rungs))
PY
)

submit() { local id; id=$("${SBATCH[@]}" "$@"); echo "${id%%;*}"; }  # --parsable: "id[;cluster]"
prepare=$(submit --job-name=t2-prepare launch/slurm_cpu.sbatch prepare "$PRESET" "$WORKDIR" "$@")
rungs=$(submit --job-name=t2-rung --dependency=afterok:"$prepare" \
  --array=0-$((NUM_RUNGS - 1))%"$MAX_PARALLEL" --nodes="$NODES" --ntasks-per-node="$GPUS_PER_NODE" \
  --gres=gpu:"$GPUS_PER_NODE" launch/slurm_rung.sbatch "$PRESET" "$WORKDIR" "$@")
analysis=$(submit --job-name=t2-analysis --dependency=afterok:"$rungs" \
  launch/slurm_cpu.sbatch analysis "$PRESET" "$WORKDIR" "$@")
validate=$(submit --job-name=t2-validate --dependency=afterok:"$analysis" \
  --gres=gpu:"$GPUS_PER_NODE" launch/slurm_validate.sbatch "$PRESET" "$WORKDIR" "$@")
echo "prepare $prepare -> $NUM_RUNGS rungs $rungs (${NODES}x${GPUS_PER_NODE} GPUs each) -> analysis" \
  "$analysis -> validate + report $validate (1x${GPUS_PER_NODE} GPUs)"
