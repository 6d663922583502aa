#include "common.cuh"

// Row kernels take one block per row (T is small when decoding), so each thread moves 16 bytes per access and keeps
// several accesses in flight (restrict pointers, unrolled loops): a decode step is latency-bound otherwise.

// out[t, :] = table[tokens[t], :]. grid: T, block: 256.
extern "C" __global__ void embedding(const int* __restrict__ tokens, const scalar_t* __restrict__ table, scalar_t* __restrict__ out,
                                     int width) {
    wait_for_previous_kernel();
    copy_row(table + (size_t)tokens[blockIdx.x] * width, out + (size_t)blockIdx.x * width, width);
}

// out[i, :] = x[rows[i], :]. grid: rows, block: 256.
extern "C" __global__ void gather_rows(const scalar_t* __restrict__ x, const int* __restrict__ rows, scalar_t* __restrict__ out,
                                       int width) {
    wait_for_previous_kernel();
    copy_row(x + (size_t)rows[blockIdx.x] * width, out + (size_t)blockIdx.x * width, width);
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

// out[t, i] = act(gate_up[t, i]) * gate_up[t, I + i]: SiLU (SwiGLU) or tanh GELU (Gemma's GeGLU).
// grid: (ceil(I / 256), T), block: 256.
template <bool GELU_TANH>
__device__ __forceinline__ void gated_mul(const scalar_t* __restrict__ gate_up, scalar_t* __restrict__ out, int half_width) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= half_width) return;
    const size_t row = blockIdx.y;
    const float x = to_float(gate_up[row * 2 * half_width + i]);
    const float up = to_float(gate_up[row * 2 * half_width + half_width + i]);
    const float activated = GELU_TANH ? 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)))
                                      : x / (1.f + __expf(-x));
    from_float(&out[row * half_width + i], activated * up);
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
// the row's position: one pass over the row. grid: (T, q heads + kv heads), block: head_dim / 2, one rotated pair per
// thread; a kv head's block also copies that head of v.
// The angle is a float product, as transformers computes it; its sine and cosine are taken in double, which
// --use_fast_math leaves precise (its float sincosf becomes __sincosf, off by ~1e-3 at angles of a few thousand,
// i.e. at long contexts), then rounded to float.
extern "C" __global__ void rope_append_kv(scalar_t* __restrict__ qkv, scalar_t* __restrict__ keys, scalar_t* __restrict__ values,
                                          const int* __restrict__ positions, const int* __restrict__ row_sequence,
                                          const int* __restrict__ block_tables, const float* __restrict__ inverse_frequencies,
                                          int max_pages, int page_size, int qkv_width, int query_heads, int head_dim, float scale) {
    wait_for_previous_kernel();
    const int half = head_dim / 2, i = threadIdx.x, head = blockIdx.y, position = positions[blockIdx.x];
    const float angle = (float)position * inverse_frequencies[i];
    double precise_sine, precise_cosine;
    sincos((double)angle, &precise_sine, &precise_cosine);
    const float sine = (float)precise_sine * scale, cosine = (float)precise_cosine * scale;
    scalar_t* row = qkv + (size_t)blockIdx.x * qkv_width;
    scalar_t* x = row + head * head_dim;
    const float first = to_float(x[i]), second = to_float(x[i + half]);
    scalar_t rotated_first, rotated_second;
    from_float(&rotated_first, first * cosine - second * sine);
    from_float(&rotated_second, second * cosine + first * sine);
    x[i] = rotated_first;
    x[i + half] = rotated_second;
    if (head < query_heads) return;
    // Cache rows are [kv heads, head_dim]; v heads follow the k heads in the fused row.
    const int kv_heads = gridDim.y - query_heads, kv_head = head - query_heads;
    const int* table = block_tables + (size_t)row_sequence[blockIdx.x] * max_pages;
    const size_t slot = ((size_t)table[position / page_size] * page_size + position % page_size) * kv_heads * head_dim + kv_head * head_dim;
    const scalar_t* v = row + (query_heads + kv_heads + kv_head) * head_dim;
    keys[slot + i] = rotated_first;
    keys[slot + i + half] = rotated_second;
    values[slot + i] = v[i];
    values[slot + i + half] = v[i + half];
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
