// Shared by every kernel. Each .cu file is compiled twice by NVRTC, with SCALAR defined as __half or
// __nv_bfloat16: activations and weights are stored in that type, arithmetic is float32.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef SCALAR scalar_t;

#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void from_float(__half* out, float x) { *out = __float2half_rn(x); }
__device__ __forceinline__ void from_float(__nv_bfloat16* out, float x) { *out = __float2bfloat16_rn(x); }

__device__ __forceinline__ float round_to_scalar(float x) {
    scalar_t s;
    from_float(&s, x);
    return to_float(s);
}

// Eight consecutive scalars as one 16-byte load, widened to float.
__device__ __forceinline__ void load8(const scalar_t* p, float* out) {
    uint4 raw = *reinterpret_cast<const uint4*>(p);
    const scalar_t* s = reinterpret_cast<const scalar_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = to_float(s[i]);
}

// Eight floats rounded to scalars and stored as one 16-byte write.
__device__ __forceinline__ void store8(scalar_t* p, const float* values) {
    uint4 raw;
    scalar_t* s = reinterpret_cast<scalar_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) from_float(&s[i], values[i]);
    *reinterpret_cast<uint4*>(p) = raw;
}

// Copies `width` scalars with the block's threads, 16 bytes at a time where the width allows. Unrolled over
// restrict pointers so each thread has several loads in flight instead of one load-store round trip at a time.
__device__ __forceinline__ void copy_row(const scalar_t* __restrict__ from, scalar_t* __restrict__ to, int width) {
    if (width % 8 == 0 && ((size_t)from | (size_t)to) % 16 == 0) {
        const uint4* source = reinterpret_cast<const uint4*>(from);
        uint4* target = reinterpret_cast<uint4*>(to);
#pragma unroll 4
        for (int i = threadIdx.x; i < width / 8; i += blockDim.x) target[i] = source[i];
    } else {
#pragma unroll 4
        for (int i = threadIdx.x; i < width; i += blockDim.x) to[i] = from[i];
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, offset));
    return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < blockDim.x / 32 ? partial[lane] : 0.f;
    return warp_sum(v);
}

// One adapter's LoRA weights for one (fused) projection, as the host lays them out (see CUDALoRATable.swift).
struct LoraPiece {
    const scalar_t* b;      // [output_width, rank], scale folded in
    int rank;
    int rank_offset;        // first column of v it reads
    int output_offset;      // first column of y it adds to
    int output_width;
};

struct LoraSlot {
    const scalar_t* a;      // [rank, in] (the targeted parts' A stacked); null: the adapter skips this projection
    int rank;
    int piece_count;
    LoraPiece pieces[3];
};
