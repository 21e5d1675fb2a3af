#!/usr/bin/env bash
# The CUDA checks and every CUDA row of docs/performance.md in one go, for one call on a lent GPU machine
# (a few minutes; each step has its own time limit). From the repository root:
#
#   bash bench/gpu.sh [BYOL-A checkout]     # logs under $OUT (else ./gpu-results), a summary at the end
#
# 1. the card (nvidia-smi), 2. the CUDA tests (tests/test_cuda.py: a CUDA step against the CPU step, bf16;
# SIGKILL + resume bit-exact on CUDA; HEAR on CUDA), 3. bench/pretrain_loader.py: clips/s for lambda = 0 and
# 0.5 with bf16 autocast, B = 256, batches from audio files through the trainer's DataLoader, peak GPU
# memory, then HEAR embeddings on the card, 4. with a checkout: bench/official_augment.py, BYOL-A v2's
# per-sample augmentation in DataLoader workers against ours batched on the card.
# The package is installed first, with the wheels in .whl/ (what the machine's image lacks);
# docs/development.md, "On a lent GPU machine", has the commands that fetch them and make the call.
# DEVICE=cpu QUICK=1 bash bench/gpu.sh runs the same steps small on a CPU, to check the script itself.
set -uo pipefail
out=${OUT:-gpu-results}
official=${1:-}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out"
: >"$out/summary.txt"
# The package itself is installed, not put on the path: tasks/, upstream/ and weights/ only become
# hear_diffbyola.tasks, .s3prl_upstream and ._weights through pyproject.toml's package-dir.
site=${SITE:-/tmp/site}
pkgs=(.)
if compgen -G ".whl/*.whl" >/dev/null; then pkgs+=(.whl/*.whl); fi
"$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$site" "${pkgs[@]}" || { echo "installing ${pkgs[*]} into $site failed"; exit 1; }
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
failed=()

step() {  # step NAME SECONDS COMMAND...: its output to $out/NAME.txt, its exit status to the summary
    local name=$1 limit=$2
    shift 2
    echo "## $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "$name: exit $rc ($*)" >>"$out/summary.txt"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

if [ "$device" = cuda ]; then
    step card 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fi
# PYTHONSAFEPATH (as python -P, inherited by the CLI runs the tests start): the checkout's hear_diffbyola/
# in the working directory would come first and hide the installed package's tasks and weights
step tests 300 env PYTHONSAFEPATH=1 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py \
    "tests/test_train.py::test_sigkill_then_resume_ends_with_exactly_the_uninterrupted_weights[cuda]" \
    tests/test_hear.py::test_model_on_cuda_moves_the_audio \
    tests/test_embedders.py::test_hear_module_on_cuda_gets_its_audio_on_cuda
quick=()
[ -n "${QUICK:-}" ] && quick=(--batch-size 8 --workers 1 --files 16 --steps 1 --warmup 1 --rounds 1)
step pretrain_loader 300 "$py" bench/pretrain_loader.py --device "$device" --batch-size 256 --workers 8 "${quick[@]}"
if [ -n "$official" ]; then
    quick=()
    [ -n "${QUICK:-}" ] && quick=(--batch-size 8 --workers 1 --batches 1 --rounds 1)
    step official_augment 180 "$py" bench/official_augment.py --official "$official" --device "$device" \
        --workers 8 --batch-size 256 "${quick[@]}"
fi
echo "## summary"
cat "$out/summary.txt"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
