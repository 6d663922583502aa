#include "common.cuh"

// Paged causal grouped-query attention over each row's sequence.
//
// grid: (T rows, query heads, splits); block: 128 threads = 4 warps. A block covers one (row, head) and one split
// of the key range; its warps take chunks of 32 keys in turn. Within a chunk each lane scores one key (a full dot
// product over head_dim, q read from shared memory), the warp updates its online softmax, then every lane
// accumulates its own output dims over the chunk's 32 values. Warps then merge their (max, sum, acc) in shared
// memory. With one split the block writes the output row; with several it writes float32 partials that
// attention_merge combines (decode over long contexts: more blocks than rows × heads).
#define WARPS 4
#define MAX_HEAD_DIM 256
#define DIMS_PER_LANE (MAX_HEAD_DIM / 32)

extern "C" __global__ void paged_attention(
        const scalar_t* __restrict__ qkv, const scalar_t* __restrict__ keys, const scalar_t* __restrict__ values,
        const int* __restrict__ positions, const int* __restrict__ row_sequence, const int* __restrict__ block_tables,
        scalar_t* __restrict__ out, float* __restrict__ partial_acc, float* __restrict__ partial_max_sum, int max_pages,
        int qkv_width, int query_heads, int kv_heads, int head_dim, int page_size, int sliding_window, float scale) {
    __shared__ float q[MAX_HEAD_DIM];
    __shared__ float merge_max[WARPS], merge_sum[WARPS];
    __shared__ float merge_acc[WARPS][MAX_HEAD_DIM];

    const int row = blockIdx.x, head = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int d = head_dim;
    const int kv_head = head / (query_heads / kv_heads);
    const int kv_width = kv_heads * d;
    const int position = positions[row];
    const int first = sliding_window > 0 ? max(0, position - sliding_window + 1) : 0;
    const int* table = block_tables + (size_t)row_sequence[row] * max_pages;

    // This split's keys: [begin, end).
    const int total = position - first + 1;
    const int per_split = (total + splits - 1) / splits;
    const int begin = first + split * per_split, end = min(position + 1, begin + per_split);

    for (int i = threadIdx.x; i < d; i += blockDim.x) q[i] = to_float(qkv[(size_t)row * qkv_width + head * d + i]) * scale;
    __syncthreads();

    float running_max = NEG_INF, running_sum = 0.f;
    float acc[DIMS_PER_LANE];
#pragma unroll
    for (int j = 0; j < DIMS_PER_LANE; ++j) acc[j] = 0.f;

    const bool vectorized = d % 8 == 0;
    for (int chunk = begin + warp * 32; chunk < end; chunk += WARPS * 32) {
        const int key = chunk + lane;
        float score = NEG_INF;
        size_t slot = 0;
        if (key < end) {
            slot = (size_t)table[key / page_size] * page_size + key % page_size;
            const scalar_t* k = keys + slot * kv_width + kv_head * d;
            score = 0.f;
            if (vectorized) {
                float kv[8];
                for (int i = 0; i < d; i += 8) {
                    load8(k + i, kv);
#pragma unroll
                    for (int e = 0; e < 8; ++e) score += q[i + e] * kv[e];
                }
            } else {
                for (int i = 0; i < d; ++i) score += q[i] * to_float(k[i]);
            }
        }
        const float chunk_max = warp_max(score);
        const float new_max = fmaxf(running_max, chunk_max);
        const float correction = __expf(running_max - new_max);
        const float p = key < end ? __expf(score - new_max) : 0.f;
        running_sum = running_sum * correction + warp_sum(p);
        running_max = new_max;
#pragma unroll
        for (int j = 0; j < DIMS_PER_LANE; ++j) acc[j] *= correction;
        const int keys_here = min(32, end - chunk);
        for (int k = 0; k < keys_here; ++k) {
            const float weight = __shfl_sync(0xffffffff, p, k);
            const size_t key_slot = __shfl_sync(0xffffffff, slot, k);
            const scalar_t* v = values + key_slot * kv_width + kv_head * d;
#pragma unroll
            for (int j = 0; j < DIMS_PER_LANE; ++j) {
                const int i = lane + 32 * j;
                if (i < d) acc[j] += weight * to_float(v[i]);
            }
        }
    }

    if (lane == 0) { merge_max[warp] = running_max; merge_sum[warp] = running_sum; }
#pragma unroll
    for (int j = 0; j < DIMS_PER_LANE; ++j) {
        const int i = lane + 32 * j;
        if (i < d) merge_acc[warp][i] = acc[j];
    }
    __syncthreads();

    float block_max = NEG_INF;
    for (int w = 0; w < WARPS; ++w) block_max = fmaxf(block_max, merge_max[w]);
    float block_sum_value = 0.f;
    for (int w = 0; w < WARPS; ++w) if (merge_max[w] != NEG_INF) block_sum_value += merge_sum[w] * __expf(merge_max[w] - block_max);
    const size_t task = ((size_t)row * query_heads + head) * splits + split;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float value = 0.f;
        for (int w = 0; w < WARPS; ++w) if (merge_max[w] != NEG_INF) value += merge_acc[w][i] * __expf(merge_max[w] - block_max);
        if (splits == 1) {
            from_float(&out[(size_t)row * query_heads * d + head * d + i], value / block_sum_value);
        } else {
            partial_acc[task * d + i] = value;
        }
    }
    if (splits > 1 && threadIdx.x == 0) {
        partial_max_sum[task * 2] = block_max;
        partial_max_sum[task * 2 + 1] = block_sum_value;
    }
}

// Combines the splits of paged_attention. grid: (T rows, query heads), block: 128.
extern "C" __global__ void attention_merge(const float* __restrict__ partial_acc, const float* __restrict__ partial_max_sum,
                                           scalar_t* __restrict__ out,
                                           int query_heads, int head_dim, int splits) {
    const size_t first_task = ((size_t)blockIdx.x * query_heads + blockIdx.y) * splits;
    float global_max = NEG_INF;
    for (int s = 0; s < splits; ++s) global_max = fmaxf(global_max, partial_max_sum[(first_task + s) * 2]);
    float total = 0.f;
    for (int s = 0; s < splits; ++s) {
        const float m = partial_max_sum[(first_task + s) * 2];
        if (m != NEG_INF) total += partial_max_sum[(first_task + s) * 2 + 1] * __expf(m - global_max);
    }
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float value = 0.f;
        for (int s = 0; s < splits; ++s) {
            const float m = partial_max_sum[(first_task + s) * 2];
            if (m != NEG_INF) value += partial_acc[(first_task + s) * head_dim + i] * __expf(m - global_max);
        }
        from_float(&out[((size_t)blockIdx.x * query_heads + blockIdx.y) * head_dim + i], value / total);
    }
}
