# punica as a container image: the model server for one replica behind the Kubernetes inference gateway
# (deploy/kubernetes/, docs/SCALE-OUT.md).
#
#   docker build -t punica .
#   docker run --gpus all -p 8000:8000 -v /path/to/llama:/model:ro punica serve --host 0.0.0.0 --device cuda --model /model
#
# Without arguments it serves the bundled model on the CPU. The binary links the Swift runtime statically and loads
# CUDA (libcuda from the NVIDIA container runtime; NVRTC and cuBLAS from the base image) with dlopen at run time, so
# the build stage needs no CUDA and the runtime stage no Swift. Tags are examples: any Swift 6 toolchain image and any
# CUDA 12 or 13 runtime image on the same or a newer glibc work.

FROM swift:6.3-noble AS build
WORKDIR /src
COPY . .
RUN swift build -c release --static-swift-stdlib --product punica \
    && cp "$(swift build -c release --show-bin-path)/punica" /usr/local/bin/punica

# NVRTC compiles punica's kernels at run time and needs CUDA's headers (cuda_fp16.h, cuda_bf16.h), which only the
# devel image has: they are copied from it, not the rest of the toolkit.
FROM nvidia/cuda:12.8.1-devel-ubuntu24.04 AS cuda-headers

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04
COPY --from=cuda-headers /usr/local/cuda/include /usr/local/cuda/include
# OpenBLAS for the CPU backend (also dlopen'ed; without it the built-in GEMM runs).
RUN apt-get update && apt-get install -y --no-install-recommends libopenblas0-pthread && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/punica /usr/local/bin/punica
COPY models /opt/punica/models
WORKDIR /opt/punica
# Compiled kernels are cached here; mount a volume to keep them across restarts.
ENV PUNICA_KERNEL_CACHE=/var/cache/punica/kernels
EXPOSE 8000
ENTRYPOINT ["punica"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
