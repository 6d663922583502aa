#!/usr/bin/env bash
# The GPU run: CUDA tests and GPU benchmarks on a host with an NVIDIA GPU and CUDA, but no Swift toolchain.
#
#   scripts/gpu.sh bundle        (here)  static `punica`, the optimized test bundle and the Swift runtime it needs, into .gpu/
#   scripts/gpu.sh run OUT [..]  (there) the CUDA test suites, then the benchmarks; logs and tables into OUT
#
# `run` takes what to do after OUT: tests, lora, attention, forward, prefill, long, profile, engine, adapters, serve, tp (default:
# tests lora forward; profile needs Nsight Compute's ncu: per-kernel times of a 7B decode step without and with distinct
# adapters; engine and serve need torch and safetensors to make a random 7B checkpoint, serve also 32 random adapters
# for `punica serve` driven by scripts/bench_serve.py). Everything the GPU host needs is in the repository plus .gpu/
# (about 43 MB compressed); the bundled models/ (40 MB) is not needed there, so where the copy to the GPU host is
# size-limited, move models/ aside for that copy. Environment it honours: PUNICA_LIBCUDA,
# PUNICA_NVRTC, PUNICA_CUBLAS, PUNICA_CUDA_INCLUDE (library/header locations), PUNICA_KERNEL_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
bundle)
    swift build -c release --static-swift-stdlib --product punica
    # The test bundle is optimized (its own build directory, since -enable-testing changes every module): the CPU references
    # the CUDA tests compare against are too slow debug-built for a lease.
    swift build -c release --build-tests -Xswiftc -enable-testing --scratch-path .build-release-tests
    tests=.build-release-tests/release/punicaPackageTests.xctest
    rm -rf .gpu && mkdir -p .gpu
    # The device tool carries at most 64 MiB: ship stripped, xz-compressed binaries.
    for binary in .build/release/punica $tests; do
        strip -o ".gpu/$(basename "$binary")" "$binary"
        xz -T2 ".gpu/$(basename "$binary")"
    done
    # The test bundle links the Swift runtime dynamically: ship the libraries ldd resolves into the toolchain.
    runtime=$(dirname "$(ldd $tests | awk '/libswiftCore.so/ {print $3}')")
    tar cJf .gpu/swift-runtime.tar.xz -C "$runtime" $(ldd $tests | awk -v dir="$runtime" 'index($3, dir) == 1 {print $1}')
    # The engine benchmark's random 7B model borrows the bundled tokenizer.
    mkdir -p .gpu/tokenizer && cp models/tokenizer.json models/tokenizer_config.json .gpu/tokenizer/
    # Tests find their fixtures by the path they were compiled at.
    pwd > .gpu/source-root
    du -sh .gpu
    ;;
run)
    out=${2:?usage: scripts/gpu.sh run OUT [tests] [lora] [forward]}
    shift 2
    steps=${*:-tests lora forward}
    mkdir -p "$out" .gpu/lib
    # A bundle may carry only `punica` (the benchmark steps need nothing else), as the device tool's size limit may ask.
    for binary in punica punicaPackageTests.xctest; do [ ! -f ".gpu/$binary.xz" ] || xz -dkf ".gpu/$binary.xz"; done
    [ ! -f .gpu/swift-runtime.tar.xz ] || tar xJf .gpu/swift-runtime.tar.xz -C .gpu/lib
    root=$(cat .gpu/source-root)
    [ "$root" = "$PWD" ] || { mkdir -p "$(dirname "$root")"; ln -sfn "$PWD" "$root"; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
    failed=0
    for step in $steps; do
        case $step in
        tests)
            # A failure is reported at the end; the benchmarks still run.
            PUNICA_REQUIRE_GPU=1 LD_LIBRARY_PATH=$PWD/.gpu/lib .gpu/punicaPackageTests.xctest --testing-library swift-testing --filter "CUDA" 2>&1 \
                | tee "$out/gpu-tests.log" | grep -E "✘|passed|failed" || failed=1 ;;
        lora)
            .gpu/punica bench lora --dtype float16 2>&1 | tee "$out/bench-lora.md" ;;
        attention)
            .gpu/punica bench attention --dtype float16 2>&1 | tee "$out/bench-attention.md" ;;
        forward)
            .gpu/punica bench forward --device cuda --dtype float16 --shape llama-7b --batch 1 8 32 64 128 \
                --popularity distinct uniform skewed identical --repeats 3 2>&1 | tee "$out/bench-forward-7b.md" ;;
        prefill)
            # Issue 12's prefill rows: batch-1 prompts of 128–8192 tokens, then 32 prompts of 128.
            for tokens in 128 512 2048 4096 8192; do
                .gpu/punica bench forward --device cuda --dtype float16 --shape llama-7b --batch 1 --prompt-tokens $tokens \
                    --decode-tokens 8 --popularity identical --repeats 1 2>&1 | tee -a "$out/bench-prefill-7b.md"
            done
            .gpu/punica bench forward --device cuda --dtype float16 --shape llama-7b --batch 32 --prompt-tokens 128 \
                --decode-tokens 8 --popularity identical --repeats 1 2>&1 | tee -a "$out/bench-prefill-7b.md" ;;
        tp)
            # Tensor parallelism over this host's GPUs (NCCL): the 7B shape at 1, 2, 4 and 8 ranks, the 70B shape (140 GB of
            # weights) from 2, as far as the GPUs go; decode steps eager at every size, for a like-for-like comparison.
            gpus=$(nvidia-smi --list-gpus | wc -l)
            for shape in llama-7b llama-70b; do
                for size in 1 2 4 8; do
                    [ $size -le "$gpus" ] && { [ $shape = llama-7b ] || [ $size -ge 2 ]; } || continue
                    .gpu/punica bench forward --device cuda --dtype float16 --shape $shape --tensor-parallel-size $size --enforce-eager \
                        --batch 1 32 128 --popularity distinct --repeats 2 2>&1 | tee -a "$out/bench-tp.md"
                done
            done ;;
        long)
            .gpu/punica bench forward --device cuda --dtype float16 --shape llama-7b --batch 8 --prompt-tokens 4096 \
                --decode-tokens 32 --popularity distinct --repeats 1 2>&1 | tee "$out/bench-long-7b.md" ;;
        profile)
            # Steps end at sample_rows: warm-up run and timed run, each a prefill and one decode step, per workload.
            ncu --csv --page raw --metrics gpu__time_duration.sum --cache-control none --clock-control none -k 'regex:^[^f]' \
                --log-file "$out/profile.csv" .gpu/punica bench forward --device cuda --dtype float16 --shape llama-7b --batch 32 \
                --popularity distinct --decode-tokens 1 --repeats 1 > "$out/profile.log" 2>&1 || { tail "$out/profile.log"; exit 1; }
            python3 scripts/kernel_profile.py "$out/profile.csv" 4 8 | tee "$out/profile.md" ;;
        engine)
            # The serving engine on a random-weight Llama-2-7B shape (made here with torch), 1000 adapters registered.
            [ -f /tmp/punica-llama-7b/config.json ] || python3 scripts/make_random_model.py /tmp/punica-llama-7b --tokenizer .gpu/tokenizer
            .gpu/punica bench engine --model /tmp/punica-llama-7b --device cuda --dtype float16 --concurrency 1 8 32 \
                --distinct 0 1 8 32 --prompt-tokens 128 --max-tokens 64 2>&1 | tee "$out/bench-engine-7b.md" ;;
        adapters)
            # Adapter load time on Llama-2-7B shapes: random rank-16 adapters on all seven projections (float32 files,
            # page cache warm), cold and from the host tier, one and four loads at once.
            .gpu/punica bench adapters --device cuda --dtype float16 --shape llama-7b --rank 16 --count 8 --in-flight 1 4 2>&1 \
                | tee "$out/bench-adapters-7b.md" ;;
        serve)
            # Issue 13's serving workload: 32 random rank-16 adapters never seen before at 4 req/s (cold loads in the
            # TTFT), then saturation (every request at once) per popularity, and 256 names over the 32 directories.
            [ -f /tmp/punica-llama-7b/adapters/adapter-31/adapter_config.json ] \
                || python3 scripts/make_random_model.py /tmp/punica-llama-7b --tokenizer .gpu/tokenizer --adapters 32
            .gpu/punica serve --model /tmp/punica-llama-7b --device cuda --dtype float16 --adapter-root /tmp/punica-llama-7b/adapters \
                --max-running-requests 256 --max-num-batched-tokens 2048 --max-loras 32 --max-waiting-requests 4096 \
                > "$out/serve.log" 2>&1 &
            server=$!
            until python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8000/health")' 2> /dev/null; do
                kill -0 $server 2> /dev/null || { tail "$out/serve.log"; exit 1; }
                sleep 1
            done
            workload=(--prompt-tokens uniform:64:512 --output-tokens uniform:32:256 --adapter-dir /tmp/punica-llama-7b/adapters)
            { python3 scripts/bench_serve.py "${workload[@]}" --rate 4 --popularity distinct --requests 64 --adapters 32
              python3 scripts/bench_serve.py "${workload[@]}" --rate 1000 --popularity distinct uniform skewed identical zipf --requests 128 --adapters 32
              python3 scripts/bench_serve.py "${workload[@]}" --rate 1000 --popularity distinct zipf --requests 256 --adapters 256
            } 2>&1 | tee "$out/bench-serve-7b.md"
            kill $server; wait $server || true ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
        esac
    done
    [ $failed = 0 ] || { echo "GPU tests failed: see $out/gpu-tests.log" >&2; exit 1; }
    ;;
*)
    sed -n '2,/^set /{/^#/p}' "$0"; exit 2 ;;  # this header
esac
