// Shared by every kernel. Each .cu file is compiled twice by NVRTC, with SCALAR defined as __half or
// __nv_bfloat16: activations and weights are stored in that type, arithmetic is float32.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef SCALAR scalar_t;

#define NEG_INF __int_as_float(0xff800000)

// The first statement of every kernel. Kernels are launched with programmatic stream serialization (Hopper's
// programmatic dependent launch, CUDABackend.launch): a kernel's blocks may be scheduled while the previous kernel in
// the stream finishes, which hides the launch gap between the hundreds of small kernels of a step. The wait holds
// them until that kernel has finished and its writes are visible, so nothing before it may touch memory; the
// trigger then lets the next kernel be scheduled the same way. Before sm_90 both are absent and launches serialize.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

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

// Eight float32 from a 16-byte aligned address.
__device__ __forceinline__ void load_float8(const float* p, float* out) {
    const float4 low = reinterpret_cast<const float4*>(p)[0], high = reinterpret_cast<const float4*>(p)[1];
    out[0] = low.x, out[1] = low.y, out[2] = low.z, out[3] = low.w, out[4] = high.x, out[5] = high.y, out[6] = high.z, out[7] = high.w;
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

// ---- Tensor cores (sm_80+): warp-level mma.sync m16n8k16, ldmatrix and cp.async ----
//
// Fragments of mma.sync.aligned.m16n8k16.row.col with g = lane / 4, t = lane % 4 (each register two scalars):
//   A (16×16, row-major): a0 = (row g, cols 2t, 2t+1), a1 = (row g+8, same cols), a2 = (row g, cols 2t+8, 2t+9),
//                         a3 = (row g+8, cols 2t+8, 2t+9)
//   B (16×8):             b0 = (rows 2t, 2t+1, col g), b1 = (rows 2t+8, 2t+9, col g)
//   C (16×8, float32):    c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, cols 2t, 2t+1)

// c += a · b; the storage type picks the instruction's input type.
__device__ __forceinline__ void mma_m16n8k16(float* c, const unsigned* a, unsigned b0, unsigned b1, __half) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_m16n8k16(float* c, const unsigned* a, unsigned b0, unsigned b1, __nv_bfloat16) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to scalars in one register, `low` in the low half: an A or B fragment register.
__device__ __forceinline__ unsigned pack2(float low, float high) {
    scalar_t pair[2];
    from_float(&pair[0], low);
    from_float(&pair[1], high);
    return *reinterpret_cast<unsigned*>(pair);
}

__device__ __forceinline__ unsigned shared_address(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// Four 8×8 scalar matrices from shared memory: lanes 8i..8i+7 give the row addresses of matrix i (16-byte aligned),
// and r[i] receives (row g, cols 2t, 2t+1) of matrix i, or with `_trans` (rows 2t, 2t+1, col g): its transpose.
__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
}

// 16 bytes global → shared without passing through registers; `valid` false writes 16 zero bytes instead (nothing
// is read from `from`, which must still be a mapped address).
__device__ __forceinline__ void cp_async16(void* to, const void* from, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(shared_address(to)), "l"(from), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(pending) : "memory"); }
