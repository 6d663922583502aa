#include "common.cuh"

// out[t, :] = table[tokens[t], :]. grid: T, block: 256.
extern "C" __global__ void embedding(const int* tokens, const scalar_t* table, scalar_t* out, int width) {
    const scalar_t* row = table + (size_t)tokens[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[(size_t)blockIdx.x * width + i] = row[i];
}

// out[i, :] = x[rows[i], :]. grid: rows, block: 256.
extern "C" __global__ void gather_rows(const scalar_t* x, const int* rows, scalar_t* out, int width) {
    const scalar_t* row = x + (size_t)rows[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[(size_t)blockIdx.x * width + i] = row[i];
}

// out = x / sqrt(mean(x²) + eps) * weight, per row. With a residual: residual += x first (rounded to scalar_t,
// as the model's own dtype would), and the sum is normalized. grid: T, block: 256.
__device__ __forceinline__ void rms_norm_row(const scalar_t* x, const scalar_t* weight, scalar_t* out, int width, float eps) {
    float squares = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = to_float(x[i]);
        squares += v * v;
    }
    const float inverse = rsqrtf(block_sum(squares) / width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) from_float(&out[i], to_float(x[i]) * inverse * to_float(weight[i]));
}

extern "C" __global__ void rms_norm(const scalar_t* x, const scalar_t* weight, scalar_t* out, int width, float eps) {
    const size_t offset = (size_t)blockIdx.x * width;
    rms_norm_row(x + offset, weight, out + offset, width, eps);
}

extern "C" __global__ void add_rms_norm(scalar_t* residual, const scalar_t* x, const scalar_t* weight, scalar_t* out,
                                        int width, float eps) {
    const size_t offset = (size_t)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) from_float(&residual[offset + i], to_float(residual[offset + i]) + to_float(x[offset + i]));
    __syncthreads();
    rms_norm_row(residual + offset, weight, out + offset, width, eps);
}

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, I + i]. grid: (ceil(I / 256), T), block: 256.
extern "C" __global__ void silu_mul(const scalar_t* gate_up, scalar_t* out, int half_width) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= half_width) return;
    const size_t row = blockIdx.y;
    const float gate = to_float(gate_up[row * 2 * half_width + i]);
    const float up = to_float(gate_up[row * 2 * half_width + half_width + i]);
    from_float(&out[row * half_width + i], gate / (1.f + __expf(-gate)) * up);
}

// Rotates the q and k heads of each fused q|k|v row by its position (rotate-half layout).
// grid: T, block: 128; threads cover (head, pair) for rotated_heads × head_dim / 2 pairs.
extern "C" __global__ void rope(scalar_t* qkv, const int* positions, const float* inverse_frequencies, int qkv_width,
                                int rotated_heads, int head_dim) {
    const int half = head_dim / 2;
    const float position = (float)positions[blockIdx.x];
    scalar_t* row = qkv + (size_t)blockIdx.x * qkv_width;
    for (int task = threadIdx.x; task < rotated_heads * half; task += blockDim.x) {
        const int head = task / half, i = task % half;
        float sine, cosine;
        sincosf(position * inverse_frequencies[i], &sine, &cosine);
        scalar_t* x = row + head * head_dim;
        const float first = to_float(x[i]), second = to_float(x[i + half]);
        from_float(&x[i], first * cosine - second * sine);
        from_float(&x[i + half], second * cosine + first * sine);
    }
}

// Writes each row's k and v heads into the cache slot of its position. grid: T, block: 128.
extern "C" __global__ void append_kv(const scalar_t* qkv, scalar_t* keys, scalar_t* values, const int* positions,
                                     const int* row_sequence, const int* block_tables, int max_pages, int page_size,
                                     int qkv_width, int query_width, int kv_width) {
    const int position = positions[blockIdx.x];
    const int* table = block_tables + (size_t)row_sequence[blockIdx.x] * max_pages;
    const size_t slot = ((size_t)table[position / page_size] * page_size + position % page_size) * kv_width;
    const scalar_t* row = qkv + (size_t)blockIdx.x * qkv_width + query_width;
    for (int i = threadIdx.x; i < kv_width; i += blockDim.x) {
        keys[slot + i] = row[i];
        values[slot + i] = row[kv_width + i];
    }
}

// Greedy sampling: index of the largest logit of each row. grid: rows, block: 1024.
extern "C" __global__ void argmax_rows(const scalar_t* logits, int* out, int width) {
    __shared__ float best_value[32];
    __shared__ int best_index[32];
    float value = NEG_INF;
    int index = 0;
    const scalar_t* row = logits + (size_t)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float v = to_float(row[i]);
        if (v > value) { value = v; index = i; }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffff, value, offset);
        const int other_index = __shfl_xor_sync(0xffffffff, index, offset);
        if (other > value || (other == value && other_index < index)) { value = other; index = other_index; }
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) { best_value[warp] = value; best_index[warp] = index; }
    __syncthreads();
    if (warp == 0) {
        value = lane < blockDim.x / 32 ? best_value[lane] : NEG_INF;
        index = lane < blockDim.x / 32 ? best_index[lane] : 0;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float other = __shfl_xor_sync(0xffffffff, value, offset);
            const int other_index = __shfl_xor_sync(0xffffffff, index, offset);
            if (other > value || (other == value && other_index < index)) { value = other; index = other_index; }
        }
        if (lane == 0) out[blockIdx.x] = index;
    }
}

// Widens a tensor to float32 for the host. grid: ceil(count / 256), block: 256.
extern "C" __global__ void to_float32(const scalar_t* x, float* out, size_t count) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) out[i] = to_float(x[i]);
}

// Uniform values in [-scale, scale) from a counter-based hash (SplitMix64 of seed + index): random benchmark
// weights made on the device. grid: ceil(count / 256), block: 256.
extern "C" __global__ void fill_uniform(scalar_t* out, size_t count, unsigned long long seed, float scale) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    unsigned long long z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    from_float(&out[i], ((float)(z >> 40) / 16777216.f * 2.f - 1.f) * scale);
}
