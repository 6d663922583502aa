#!/usr/bin/env bash
# Trains the bundled model end to end: tokenizer -> pretraining -> adapters -> evaluation -> model card.
#
#   scripts/train/train_all.sh [--tiny] [CORPUS [OUT]]      (defaults: data/corpus models)
#
# CORPUS comes from scripts/train/build_corpus.py (run where Debian's apt works; the GPU machine needs
# only the built folder). On one H100 the whole run takes about 2.5 minutes. --tiny trains a tiny model on
# a corpus slice in a few minutes on a CPU, to test the scripts; never point it at models/.
# PYTHON picks the interpreter (default python3).
set -euo pipefail

tiny=()
if [[ "${1:-}" == "--tiny" ]]; then
  tiny=(--tiny)
  shift
fi
corpus=${1:-data/corpus}
out=${2:-models}
here=$(dirname "$0")
py=${PYTHON:-python3}

mkdir -p "$out"
start=$SECONDS
"$py" "$here/train_tokenizer.py" --corpus "$corpus" --out "$out" "${tiny[@]}"
"$py" "$here/pretrain.py" --corpus "$corpus" --out "$out" "${tiny[@]}"
"$py" "$here/train_adapters.py" --corpus "$corpus" --model "$out" "${tiny[@]}"
# evaluate.py fails when an adapter doesn't lower its own domain's loss; write the card anyway, to look at.
status=0
"$py" "$here/evaluate.py" --corpus "$corpus" --model "$out" "${tiny[@]}" || status=$?
"$py" "$here/model_card.py" --corpus "$corpus" --model "$out"
echo "done in $(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s; $out holds $(du -sh "$out" | cut -f1)"
exit $status
