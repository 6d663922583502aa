#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what it needs (OpenBLAS from Debian, NVRTC and CUDA headers from
# PyPI), then `swift test`. CPU tests always run; GPU tests skip without a GPU, but every CUDA kernel is compiled
# through NVRTC for sm_80 and sm_90a.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p | grep -q libopenblas.so.0; then
    apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -r scripts/requirements-ci.txt
cuda=$(python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
export PUNICA_NVRTC=$cuda/lib/libnvrtc.so.13 PUNICA_CUDA_INCLUDE=$cuda/include PUNICA_REQUIRE_NVRTC=1

swift test "$@"

# `punica serve` end to end with the official openai client: the real binary on the bundled model, 100+ concurrent streams.
swift build --product punica
python3 scripts/e2e_openai.py "$(swift build --show-bin-path)/punica"
# The same binary against malformed requests, slow and stalled clients, resets and signals (raw sockets, short timeouts).
python3 scripts/e2e_http.py "$(swift build --show-bin-path)/punica"
# Two replicas read as the Kubernetes inference gateway reads them: the vllm: metrics under load, LoRA affinity, rollout.
python3 scripts/e2e_gateway.py "$(swift build --show-bin-path)/punica"
