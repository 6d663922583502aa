#include "common.cuh"

// Row kernels take one block per row (T is small when decoding), so each thread moves 16 bytes per access and keeps
// several accesses in flight (restrict pointers, unrolled loops): a decode step is latency-bound otherwise.

// out[t, :] = table[tokens[t] - first_token, :], zeros where that is not a row of the table (another rank's part of the
// vocabulary). grid: T, block: 256.
extern "C" __global__ void embedding(const int* __restrict__ tokens, const scalar_t* __restrict__ table, scalar_t* __restrict__ out,
                                     int width, int first_token, int table_rows) {
    wait_for_previous_kernel();
    const int index = tokens[blockIdx.x] - first_token;
    scalar_t* row = out + (size_t)blockIdx.x * width;
    if (index >= 0 && index < table_rows) {
        copy_row(table + (size_t)index * width, row, width);
    } else {
        for (int i = threadIdx.x; i < width; i += blockDim.x) row[i] = scalar_t(0.f);
    }
}

// out[i, :] = x[rows[i], :]. grid: rows, block: 256.
extern "C" __global__ void gather_rows(const scalar_t* __restrict__ x, const int* __restrict__ rows, scalar_t* __restrict__ out,
                                       int width) {
    wait_for_previous_kernel();
    copy_row(x + (size_t)rows[blockIdx.x] * width, out + (size_t)blockIdx.x * width, width);
}

// to[t, first_column ..< +width] = from[t, :]: one rank's part of gathered logits into place. grid: T, block: 256.
extern "C" __global__ void copy_columns(const scalar_t* __restrict__ from, scalar_t* __restrict__ to, int width, int to_width,
                                        int first_column) {
    wait_for_previous_kernel();
    copy_row(from + (size_t)blockIdx.x * width, to + (size_t)blockIdx.x * to_width + first_column, width);
}

// out = x / sqrt(mean(x²) + eps) * weight for one row; `squares` is this thread's share of sum(x²) over its
// elements (the same ones it normalizes here). The block's threads take 8 elements at a time where the width allows.
__device__ __forceinline__ void normalize_row(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                                              scalar_t* __restrict__ out, int width, float eps, float squares) {
    const float inverse = rsqrtf(block_sum(squares) / width + eps);
    if (width % 8 == 0) {
        float xs[8], ws[8];
#pragma unroll 2
        for (int i = threadIdx.x * 8; i < width; i += blockDim.x * 8) {
            load8(x + i, xs);
            load8(weight + i, ws);
#pragma unroll
            for (int e = 0; e < 8; ++e) xs[e] *= inverse * ws[e];
            store8(out + i, xs);
        }
    } else {
        for (int i = threadIdx.x; i < width; i += blockDim.x) from_float(&out[i], to_float(x[i]) * inverse * to_float(weight[i]));
    }
}

// grid: T, block: 512.
extern "C" __global__ void rms_norm(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight, scalar_t* __restrict__ out,
                                    int width, float eps) {
    wait_for_previous_kernel();
    const scalar_t* row = x + (size_t)blockIdx.x * width;
    float squares = 0.f;
    if (width % 8 == 0) {
        float xs[8];
#pragma unroll 2
        for (int i = threadIdx.x * 8; i < width; i += blockDim.x * 8) {
            load8(row + i, xs);
#pragma unroll
            for (int e = 0; e < 8; ++e) squares += xs[e] * xs[e];
        }
    } else {
        for (int i = threadIdx.x; i < width; i += blockDim.x) squares += to_float(row[i]) * to_float(row[i]);
    }
    normalize_row(row, weight, out + (size_t)blockIdx.x * width, width, eps, squares);
}

// residual += x (rounded to scalar_t, as the model's own dtype would), then out = rms_norm(residual). Each thread
// normalizes the elements it summed, so it reads back only its own writes. grid: T, block: 512.
extern "C" __global__ void add_rms_norm(scalar_t* __restrict__ residual, const scalar_t* __restrict__ x,
                                        const scalar_t* __restrict__ weight, scalar_t* __restrict__ out, int width, float eps) {
    wait_for_previous_kernel();
    const size_t offset = (size_t)blockIdx.x * width;
    scalar_t* row = residual + offset;
    float squares = 0.f;
    if (width % 8 == 0) {
        float rs[8], xs[8];
#pragma unroll 2
        for (int i = threadIdx.x * 8; i < width; i += blockDim.x * 8) {
            load8(row + i, rs);
            load8(x + offset + i, xs);
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                rs[e] = round_to_scalar(rs[e] + xs[e]);
                squares += rs[e] * rs[e];
            }
            store8(row + i, rs);
        }
    } else {
        for (int i = threadIdx.x; i < width; i += blockDim.x) {
            from_float(&row[i], to_float(row[i]) + to_float(x[offset + i]));
            squares += to_float(row[i]) * to_float(row[i]);
        }
    }
    normalize_row(row, weight, out + offset, width, eps, squares);
}

// out[t, i] = act(gate_up[t, i]) * gate_up[t, I + i]: SiLU (SwiGLU) or tanh GELU (Gemma's GeGLU). A thread takes 8
// consecutive i, 16 bytes per access, where I allows (one per element moved prefill's 4 096 × 11 008 at a third of
// the bandwidth). grid: (ceil(I / (256 · 8)), T), block: 256.
__device__ __forceinline__ float activate(float x, bool gelu_tanh) {
    return gelu_tanh ? 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))) : x / (1.f + __expf(-x));
}

template <bool GELU_TANH>
__device__ __forceinline__ void gated_mul(const scalar_t* __restrict__ gate_up, scalar_t* __restrict__ out, int half_width) {
    const int first = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (first >= half_width) return;
    const scalar_t* gate = gate_up + (size_t)blockIdx.y * 2 * half_width;
    scalar_t* target = out + (size_t)blockIdx.y * half_width;
    if (half_width % 8 == 0) {
        float xs[8], ups[8];
        load8(gate + first, xs);
        load8(gate + half_width + first, ups);
#pragma unroll
        for (int e = 0; e < 8; ++e) xs[e] = activate(xs[e], GELU_TANH) * ups[e];
        store8(target + first, xs);
    } else {
        for (int i = first; i < min(first + 8, half_width); ++i) {
            from_float(&target[i], activate(to_float(gate[i]), GELU_TANH) * to_float(gate[half_width + i]));
        }
    }
}

extern "C" __global__ void silu_mul(const scalar_t* __restrict__ gate_up, scalar_t* __restrict__ out, int half_width) {
    wait_for_previous_kernel();
    gated_mul<false>(gate_up, out, half_width);
}

extern "C" __global__ void gelu_tanh_mul(const scalar_t* __restrict__ gate_up, scalar_t* __restrict__ out, int half_width) {
    wait_for_previous_kernel();
    gated_mul<true>(gate_up, out, half_width);
}

// x[i] *= factor in place. grid: ceil(count / 256), block: 256.
extern "C" __global__ void scale(scalar_t* x, size_t count, float factor) {
    wait_for_previous_kernel();
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) from_float(&x[i], to_float(x[i]) * factor);
}

// x[i] = cap * tanh(x[i] / cap) in place. grid: ceil(count / 256), block: 256.
extern "C" __global__ void softcap(scalar_t* x, size_t count, float cap) {
    wait_for_previous_kernel();
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) from_float(&x[i], cap * tanhf(to_float(x[i]) / cap));
}

// x[t, i] += bias[i] in place. grid: (ceil(width / 256), T), block: 256.
extern "C" __global__ void add_bias(scalar_t* __restrict__ x, const scalar_t* __restrict__ bias, int width) {
    wait_for_previous_kernel();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= width) return;
    scalar_t* element = x + (size_t)blockIdx.y * width + i;
    from_float(element, to_float(*element) + to_float(bias[i]));
}

// Each q and k head of a fused q|k|v row, in place: head / sqrt(mean(head²) + eps) * weight (q heads first, then k).
// The normalized value is rounded to scalar_t before the weight multiplies it, as HF's RMSNorm does.
// grid: (T, query heads + kv heads), block: 32, one warp per head.
extern "C" __global__ void head_rms_norm(scalar_t* __restrict__ qkv, const scalar_t* __restrict__ query_weight,
                                         const scalar_t* __restrict__ key_weight, int qkv_width, int head_dim, int query_heads,
                                         float eps) {
    wait_for_previous_kernel();
    scalar_t* x = qkv + (size_t)blockIdx.x * qkv_width + (size_t)blockIdx.y * head_dim;
    const scalar_t* weight = (int)blockIdx.y < query_heads ? query_weight : key_weight;
    float squares = 0.f;
    for (int i = threadIdx.x; i < head_dim; i += 32) squares += to_float(x[i]) * to_float(x[i]);
    const float inverse = rsqrtf(warp_sum(squares) / head_dim + eps);
    for (int i = threadIdx.x; i < head_dim; i += 32) from_float(&x[i], round_to_scalar(to_float(x[i]) * inverse) * to_float(weight[i]));
}

// Rotates the q and k heads of each fused q|k|v row in place by its position (rotate-half layout), cos and sin times
// `scale` (LongRoPE's attention factor, else 1), and writes the rotated k heads and the v heads into the cache slot of
// the row's position: one pass over the row. grid: (T, ceil((q heads + kv heads) / heads_per_block)), block:
// ROPE_THREADS. A block takes heads_per_block heads of one row, each thread 8 pairs of a head, 16 bytes per access
// (1 pair where head_dim or the row width are not multiples of 16 and 8); a kv head's thread also copies that part of
// v into the cache. (A block per head and a thread per pair, with a double-precision sine, ran a 4 096-token prefill's
// RoPE at a tenth of the bandwidth.)
#define ROPE_THREADS 128

// sin and cos of a float angle, precise at any size: transformers takes them of the float product position ·
// frequency, whose size grows with the context. Reduced to [-π, π] in double, the angle is where the fast float
// intrinsic (what --use_fast_math makes of sincosf) is off by < 4e-7; unreduced, it is off by ~1e-3 at angles of a
// few thousand radians.
__device__ __forceinline__ void precise_sincos(float angle, float* sine, float* cosine) {
    const double turns = rint((double)angle * 0.15915494309189535);  // angle / 2π
    __sincosf((float)fma(-turns, 6.283185307179586, (double)angle), sine, cosine);
}

// N consecutive scalars (N = 8: one 16-byte access) to float and back.
template <int N> __device__ __forceinline__ void load_n(const scalar_t* p, float* out) {
    if constexpr (N == 8) load8(p, out); else out[0] = to_float(*p);
}
template <int N> __device__ __forceinline__ void store_n(scalar_t* p, const float* values) {
    if constexpr (N == 8) store8(p, values); else from_float(p, values[0]);
}

// Pairs i ..< i + PAIRS of head `head` of one fused row at `position`; its cache slot's row starts at `cache_row`.
template <int PAIRS>
__device__ __forceinline__ void rotate_pairs(scalar_t* __restrict__ row, scalar_t* __restrict__ keys, scalar_t* __restrict__ values,
                                             const float* __restrict__ inverse_frequencies, int position, float scale,
                                             size_t cache_row, int head, int i, int query_heads, int kv_heads, int head_dim) {
    const int half = head_dim / 2;
    scalar_t* x = row + head * head_dim;
    float first[PAIRS], second[PAIRS];
    load_n<PAIRS>(x + i, first);
    load_n<PAIRS>(x + half + i, second);
#pragma unroll
    for (int e = 0; e < PAIRS; ++e) {
        float sine, cosine;
        precise_sincos((float)position * inverse_frequencies[i + e], &sine, &cosine);
        sine *= scale, cosine *= scale;
        const float a = first[e], b = second[e];
        first[e] = a * cosine - b * sine;
        second[e] = b * cosine + a * sine;
    }
    store_n<PAIRS>(x + i, first);
    store_n<PAIRS>(x + half + i, second);
    if (head < query_heads) return;
    // Cache rows are [kv heads, head_dim]; v heads follow the k heads in the fused row.
    const int kv_head = head - query_heads;
    scalar_t* key = keys + cache_row + (size_t)kv_head * head_dim;
    scalar_t* value = values + cache_row + (size_t)kv_head * head_dim;
    store_n<PAIRS>(key + i, first);
    store_n<PAIRS>(key + half + i, second);
    const scalar_t* v = row + (query_heads + kv_heads + kv_head) * head_dim;
    float vs[PAIRS];  // widening and rounding back leave 16-bit values as they were
    load_n<PAIRS>(v + i, vs);
    store_n<PAIRS>(value + i, vs);
    load_n<PAIRS>(v + half + i, vs);
    store_n<PAIRS>(value + half + i, vs);
}

extern "C" __global__ void rope_append_kv(scalar_t* __restrict__ qkv, scalar_t* __restrict__ keys, scalar_t* __restrict__ values,
                                          const int* __restrict__ positions, const int* __restrict__ row_sequence,
                                          const int* __restrict__ block_tables, const float* __restrict__ inverse_frequencies,
                                          int max_pages, int page_size, int qkv_width, int query_heads, int kv_heads, int head_dim,
                                          int heads_per_block, float scale) {
    wait_for_previous_kernel();
    const int position = positions[blockIdx.x];
    scalar_t* row = qkv + (size_t)blockIdx.x * qkv_width;
    const int* table = block_tables + (size_t)row_sequence[blockIdx.x] * max_pages;
    const size_t cache_row = ((size_t)table[position / page_size] * page_size + position % page_size) * kv_heads * head_dim;
    const int first_head = blockIdx.y * heads_per_block, heads = min(heads_per_block, query_heads + kv_heads - first_head);
    const bool vectors = head_dim % 16 == 0 && qkv_width % 8 == 0;
    const int chunks = vectors ? head_dim / 16 : head_dim / 2;  // per head
    for (int item = threadIdx.x; item < heads * chunks; item += blockDim.x) {
        const int head = first_head + item / chunks, i = item % chunks * (vectors ? 8 : 1);
        if (vectors) {
            rotate_pairs<8>(row, keys, values, inverse_frequencies, position, scale, cache_row, head, i, query_heads, kv_heads, head_dim);
        } else {
            rotate_pairs<1>(row, keys, values, inverse_frequencies, position, scale, cache_row, head, i, query_heads, kv_heads, head_dim);
        }
    }
}

// Widens a tensor to float32 for the host. grid: ceil(count / 256), block: 256.
extern "C" __global__ void to_float32(const scalar_t* x, float* out, size_t count) {
    wait_for_previous_kernel();
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) out[i] = to_float(x[i]);
}

// Uniform values in [-scale, scale) from a counter-based hash (SplitMix64 of seed + index): random benchmark
// weights made on the device. grid: ceil(count / 256), block: 256.
extern "C" __global__ void fill_uniform(scalar_t* out, size_t count, unsigned long long seed, float scale) {
    wait_for_previous_kernel();
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    unsigned long long z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    from_float(&out[i], ((float)(z >> 40) / 16777216.f * 2.f - 1.f) * scale);
}
