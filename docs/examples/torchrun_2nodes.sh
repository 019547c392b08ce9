#!/usr/bin/env bash
# Two nodes x 4 GPUs with torchrun: run this script on every node (same command, same MASTER_ADDR).
#   MASTER_ADDR=node01 bash docs/examples/torchrun_2nodes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MASTER_ADDR:?set MASTER_ADDR to the first node's host name}"
torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint="${MASTER_ADDR}:29500" \
  -m lw_lightning fit experiment=lookwhere_in1k_224_k128 launch=ddp_gpu \
  trainer.num_nodes=2 trainer.devices=4 "$@"
