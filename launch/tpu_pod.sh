#!/usr/bin/env bash
# Runs a ladder on a Cloud TPU VM pod slice, from your workstation:
#
#   launch/tpu_pod.sh TPU_NAME ZONE PRESET WORKDIR [--config.FIELD=VALUE ...]
#   e.g. launch/tpu_pod.sh t2-v5p-64 us-east5-a paper /mnt/shared/t2-paper
#
# Every worker needs the same checkout at $REPO_DIR (relative to its home directory) with
# `pip install -e .[tpu]` done, and WORKDIR on a file system all workers share (NFS/Filestore or
# gcsfuse): orbax writes each checkpoint from all hosts into one directory, and every host checks
# the rung's train_done.json to skip finished rungs.
#  1. train + eval: the same command on every worker (one JAX process per host); with
#     --config.distributed.num_processes set to the host count, jax.distributed.initialize finds
#     the coordinator and this host's process id from the TPU metadata.
#  2. fit, plan on worker 0 alone, on its CPU (a single host of a pod slice cannot bring up the
#     slice's TPUs by itself).
#  3. validate (train and sample the plan's choices; a single JAX process) and report: on
#     VALIDATE_TPU, a single-host TPU VM in ZONE with the same checkout and WORKDIR mounted (e.g. a
#     v5p-8); without VALIDATE_TPU, the report alone on worker 0, and the validate command to run.
# Rerunning the script skips finished rungs and validation runs and resumes a half-trained one.
set -euo pipefail
if (($# < 4)); then
  echo "usage: $0 TPU_NAME ZONE PRESET WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
TPU_NAME=$1 ZONE=$2 PRESET=$3 WORKDIR=$4
shift 4
REPO_DIR=${REPO_DIR:-t2jax}
PYTHON=${PYTHON:-python3}

HOSTS=$(gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" --format=json \
  | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["networkEndpoints"]))')
CD="cd $(printf %q "$REPO_DIR") &&"
LAUNCH=$(printf '%q ' "$PYTHON" -m t2jax.launch --config="configs/ladder.py:$PRESET" \
  --config.workdir="$WORKDIR" "$@")
echo "$TPU_NAME: $HOSTS hosts; workdir $WORKDIR"

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --command="$CD $LAUNCH --stages=train,eval --config.distributed.num_processes=$HOSTS"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
  --command="$CD JAX_PLATFORMS=cpu $LAUNCH --stages=fit,plan"
if [[ -n "${VALIDATE_TPU:-}" ]]; then
  gcloud compute tpus tpu-vm ssh "$VALIDATE_TPU" --zone="$ZONE" --worker=0 \
    --command="$CD $LAUNCH --stages=validate,report"
else
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
    --command="$CD JAX_PLATFORMS=cpu $LAUNCH --stages=report"
  echo "validation not run: on a single-host accelerator VM sharing $WORKDIR, run" \
    "$LAUNCH --stages=validate,report (or rerun with VALIDATE_TPU=NAME)"
fi
