#!/usr/bin/env bash
# Train the RAPTOR head shipped with alan (src/alan/assets/heads/phantom_default) on the bundled
# phantom backbone: the EchoNet-format phantom (default size, seed 0) TRAIN split, K=32, 10 epochs,
# with the position option (weight 1.0; see docs/raptor.md, "Position"). Writes the artifact and
# its README (command, data, seed, minutes, hash, probe table).
set -euo pipefail
cd "$(dirname "$0")/.."

ALAN=${ALAN:-.venv/bin/alan}
WORK=${WORK:-/tmp/alan_bundled_head}
SEED=${SEED:-0}
K=${K:-32}
POSITION=${POSITION:-1.0}
EPOCHS=${EPOCHS:-10}
THREADS=${THREADS:-2}
DEST=src/alan/assets/heads/phantom_default
BACKBONE=src/alan/assets/backbones/phantom_vit_tiny

mkdir -p "$WORK"
for f in echonet camus; do
  [ -e "$WORK/$f/phantom.json" ] || "$ALAN" synth "$f" "$WORK/$f" --size default --seed "$SEED"
done
CMD=("$ALAN" raptor train --backbone "$BACKBONE" --data "$WORK/echonet" --split train --k "$K"
     --epochs "$EPOCHS" --batch-size 4 --position "$POSITION" --seed "$SEED" --cache memory --no-progress
     --out "$WORK/raptor")
echo "[$(date -u +%FT%TZ)] OMP_NUM_THREADS=$THREADS ${CMD[*]}"
start=$(date +%s)
OMP_NUM_THREADS=$THREADS "${CMD[@]}"
elapsed=$(( $(date +%s) - start ))
mkdir -p "$DEST"
cp "$WORK/raptor/head/config.json" "$WORK/raptor/head/weights.safetensors" "$DEST/"
PROBE=$(OMP_NUM_THREADS=$THREADS "$ALAN" backbone probe --backbone "$BACKBONE" --head "$DEST" --data "$WORK/camus" \
        --fit-split train --eval-split val 2>/dev/null || true)
HASH=$(python3 -c "import json,sys; print(json.load(open('$DEST/config.json'))['hash'])")
cat > "$DEST/README.md" <<MD
# Bundled RAPTOR head \`phantom_default\` (hash \`$HASH\`)

Trained by \`scripts/train_bundled_head.sh\` on the bundled phantom backbone
(\`phantom_vit_tiny\`), $((elapsed / 60)) min on $THREADS CPU threads:

    $(echo "${CMD[*]}" | sed "s|$WORK|WORK|g; s|$ALAN|alan|")

Data: \`alan synth echonet --size default --seed $SEED\` (the demo's EchoNet-format phantom), TRAIN
split. K=$K parcels, the reference STRAPTOR preset, position weight $POSITION (an option beyond the
paper: the token's grid place enters the head's input and the loss target).

Probe on the CAMUS-format phantom (fitted on train, scored on val):

\`\`\`
$PROBE
\`\`\`
MD
echo "head $HASH -> $DEST ($elapsed s)"
