#!/usr/bin/env bash
# The device check on one GPU: (a) the engine's equivalence tests and every device-parametrised test on CUDA,
# (b) the efficiency benchmark at 7B scale (llama-7b-arch, qwen2.5-7b-arch: published configs, random weights,
# bf16, with the compression baselines; decoding steps replayed as CUDA graphs, and for llama-7b-arch also eager
# decoding on the growing cache, for comparison), (c) a short RecBole run of EARNLCRec on ml-100k (tiny-llama
# preset, bf16) on CUDA. Each part runs under its own timeout, so one failure leaves the others' results;
# summary.txt lists every part's exit status.
#
#   tools/gpu_check.sh RESULTS_DIR [WHEELS_DIR]
#
# WHEELS_DIR (default tools/gpu_wheels, made by tools/gpu_wheels.sh where pip reaches a registry) holds what a
# machine with PyTorch, transformers, peft, numpy, pandas, scipy, scikit-learn, matplotlib, pytest and
# hypothesis lacks: RecBole and its small dependencies as wheels, and SmolLM2's tokenizer under cache/ (the
# tiny presets and the architectures use it; no weights are needed). Nothing is downloaded.
#
# Settings from the environment (defaults for the GPU; tests/test_gpu_check.py runs the script on the CPU):
#   GPU_CHECK_DEVICE       cuda | cpu
#   GPU_CHECK_TESTS        pytest arguments of part (a)
#   GPU_CHECK_ARCHS        backbones of part (b)
#   GPU_CHECK_EAGER_ARCHS  backbones of part (b) also timed with eager decoding (--decode_mode growing)
#   GPU_CHECK_BENCH_ARGS   benchmark arguments of part (b)
#   GPU_CHECK_RUN_ARGS     run_earn.py arguments of part (c)
#   GPU_CHECK_TIMEOUTS     seconds for (a), each backbone of (b), and (c)
set -u
results=${1:?usage: tools/gpu_check.sh RESULTS_DIR [WHEELS_DIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$results" && results=$(cd "$results" && pwd)
wheels=$(cd "${2:-$repo/tools/gpu_wheels}" 2>/dev/null && pwd || true)
python=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
tests=${GPU_CHECK_TESTS:--m cuda tests/test_llm_split_forward.py tests/test_llm_decoding.py tests}
archs=${GPU_CHECK_ARCHS:-llama-7b-arch qwen2.5-7b-arch}
eager_archs=${GPU_CHECK_EAGER_ARCHS-llama-7b-arch}
bench_args=${GPU_CHECK_BENCH_ARGS:-"--dtype bfloat16 --lengths 600 --batches 1,8 --k_fractions 8,4 \
--generate_max_tokens 0 --press_budget 0.5"}
run_args=${GPU_CHECK_RUN_ARGS:-"--dataset=ml-100k --llm_path=tiny-llama --llm_dtype=bfloat16 \
--train_time_budget_s=None --epochs=1 --train_sample_num=1024"}
# Measured on an H200: (a) 141 s, each benchmark 61-79 s, (c) 45 s; at most 500 s in all with these limits.
read -r tests_s bench_s run_s <<< "${GPU_CHECK_TIMEOUTS:-160 90 70}"
summary="$results/summary.txt"
cd "$repo" || exit 1

if [ -n "$wheels" ]; then
  if ls "$wheels"/*.whl > /dev/null 2>&1; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl \
      || { echo "installing the wheels of $wheels failed" | tee "$summary"; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  [ -d "$wheels/cache" ] && export RECBOLE_EARN_CACHE="$wheels/cache"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

part() {  # part NAME SECONDS LOG COMMAND...: run COMMAND under a timeout, log its output, record its status
  local name=$1 seconds=$2 log=$3 started status
  shift 3
  started=$(date +%s)
  timeout --kill-after=10 "$seconds" "$@" > "$log" 2>&1
  status=$?
  local verdict="exit $status"
  [ $status -eq 124 ] || [ $status -eq 137 ] && verdict="timed out after ${seconds} s"
  echo "$name: $verdict, $(( $(date +%s) - started )) s, log $(basename "$log")" | tee -a "$summary"
}

{
  echo "# recbole-earn device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), device $device"
  "$python" -c "import torch, transformers, numpy, pandas; print('torch', torch.__version__, '| transformers', \
transformers.__version__, '| numpy', numpy.__version__, '| pandas', pandas.__version__, '|', \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
} > "$summary" 2>&1
cat "$summary"

# shellcheck disable=SC2086  # the settings are word lists
part "a. tests on $device" "$tests_s" "$results/tests.log" "$python" -m pytest -q -rfE -p no:cacheprovider \
  --continue-on-collection-errors $tests
for arch in $archs; do
  part "b. benchmark $arch" "$bench_s" "$results/benchmark-$arch.md" "$python" -m recbole_earn.benchmark efficiency \
    --device "$device" --llm_path "$arch" --json "$results/benchmark-$arch.json" $bench_args
done
for arch in $eager_archs; do
  part "b. benchmark $arch, eager decoding" "$bench_s" "$results/benchmark-$arch-growing.md" "$python" -m \
    recbole_earn.benchmark efficiency --device "$device" --llm_path "$arch" \
    --json "$results/benchmark-$arch-growing.json" $bench_args --decode_mode growing --no_generate
done
gpu=--use_gpu=True
[ "$device" = cpu ] && gpu=--use_gpu=False
scratch=$(mktemp -d)  # RecBole's log/ and saved/ of part (c)
part "c. EARNLCRec" "$run_s" "$results/run_earn.log" sh -c 'cd "$1" && shift && exec "$@"' - "$scratch" \
  "$python" "$repo/run_earn.py" --model=EARNLCRec "$gpu" $run_args
! grep -q "exit [1-9]\|timed out" "$summary"
