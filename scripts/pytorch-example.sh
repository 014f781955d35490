#!/usr/bin/env bash
# The README's PyTorch recipe, end to end, with its figures: the digits
# CNN of examples/pytorch trained by ROUNDS rounds of federated learning
# under he (coordinator and CLIENTS clients as separate processes), then
# the same network trained centrally by the same script on the union of
# the clients' data for as many epochs; contributions, and the receipts
# verified offline. Usage: scripts/pytorch-example.sh [ROUNDS] [CLIENTS] [DIR]
# (LR sets the learning rate, 0.02 by default: at tally data's 0.05 the
# CNN's centralised SGD oscillates, 0.96 at 20 epochs and 0.90 at 40.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-20}
CLIENTS=${2:-4}
DIR=${3:-/tmp/tally-pytorch}
PY=${TALLY_PYTHON:-/usr/bin/python3}
CNN="$PY $PWD/examples/pytorch/digits_cnn.py"
PORT=${PORT:-7171}
LR=${LR:-0.02}

make build >/dev/null
rm -rf "$DIR"
bin/tally data --dataset digits --clients "$CLIENTS" --rounds "$ROUNDS" --scaling none --lr "$LR" \
	--model-command "$CNN" --listen "127.0.0.1:$PORT" --out "$DIR"
bin/tally coordinator --config "$DIR/job.yaml" --metrics-addr "" --report "$DIR/report.json" 2>"$DIR/coordinator.log" &
coord=$!
pids=()
while read -r id token file; do
	bin/tally client --join "127.0.0.1:$PORT" --token "$token" --data "$DIR/$file" --trainer "$CNN" \
		>"$DIR/$id.out" 2>"$DIR/$id.log" &
	pids+=($!)
done <"$DIR/tokens.txt"
for p in "${pids[@]}"; do wait "$p"; done
wait "$coord"
$PY - "$DIR/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("federated test accuracy %.4f (loss %.4f)" % (r["test_accuracy"], r["test_loss"]))
for c in r["contributions"]:
    print("  %-9s rank %d  value %9.5f  payout %8.2f" % (c["client"], c["rank"], c["value"], c["payout"]))
PY
$CNN central --train "$DIR"/client-*.csv --test "$DIR/test.csv" --epochs "$ROUNDS" --lr "$LR" --seed 1
bin/tally ledger verify --db "$DIR/digits-job.db"
key=$(bin/tally ledger verify --db "$DIR/digits-job.db" 2>&1 | grep -o '[0-9a-f]\{64\}' | head -1)
for f in "$DIR"/client-*.csv.receipts.jsonl; do
	id=$(basename "$f" .csv.receipts.jsonl)
	bin/tally ledger verify --receipts "$f" --public-key "$key" --client "$id"
done
