#include "common.cuh"

// Sampling on the device, with the semantics of TokenChoice.pick (TokenChoice.swift): only token ids go to the
// host. The logits arrive widened to float32 (a copy, so the model's logits stay as they were).

struct SampleParams {  // TokenChoice, as the host packs it: 20 bytes per row
    float temperature;
    int top_k;
    float top_p;
    float uniform;
    float log_min_p;  // -inf: min-p off
};

struct LogitAdjustment {  // TokenChoice.adjustments, one per distinct token: 16 bytes
    int token;
    float bias;
    float penalty;
    float subtracted;
};

// TokenChoice.adjust on each row's adjusted tokens, in place: (logit + bias), HF's repetition penalty, minus the
// frequency/presence penalties. Explicitly rounded operations, so --use_fast_math gives the host's exact values.
// grid: rows, block: 256. Row i's entries are adjustments[offsets[i] ..< offsets[i + 1]], distinct tokens.
extern "C" __global__ void adjust_logits(float* __restrict__ logits, const int* __restrict__ offsets,
                                         const LogitAdjustment* __restrict__ adjustments, int vocab) {
    wait_for_previous_kernel();
    float* row = logits + (size_t)blockIdx.x * vocab;
    for (int i = offsets[blockIdx.x] + threadIdx.x; i < offsets[blockIdx.x + 1]; i += blockDim.x) {
        const LogitAdjustment a = adjustments[i];
        if (a.token < 0 || a.token >= vocab) continue;
        const float biased = __fadd_rn(row[a.token], a.bias);
        const float penalized = a.penalty == 1.f ? biased : biased > 0.f ? __fdiv_rn(biased, a.penalty) : __fmul_rn(biased, a.penalty);
        row[a.token] = __fsub_rn(penalized, a.subtracted);
    }
}

// Orders floats as unsigned integers: a > b exactly when key(a) > key(b).
__device__ __forceinline__ unsigned order_key(float f) {
    const unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#define SAMPLE_THREADS 1024

__device__ __forceinline__ int block_max_int(int v) {
    __shared__ int partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, offset));
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < blockDim.x / 32 ? partial[lane] : -1;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, offset));
    return v;
}

// The largest key t with sum(weight of logits whose key ≥ max(t, floor)) ≥ target: a radix select, eight bits
// at a time from the top, over a 256-bin histogram of weights (counts, for top-k). All threads return it.
template <typename Weight>
__device__ unsigned select_threshold(const float* row, int vocab, unsigned floor, float target, Weight weight) {
    __shared__ float histogram[256];
    __shared__ unsigned chosen_prefix;
    __shared__ float chosen_above;
    unsigned prefix = 0, mask = 0;
    float above = 0.f;  // weight of keys above the current prefix
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0.f;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            const unsigned key = order_key(row[i]);
            if ((key & mask) == prefix && key >= floor) atomicAdd(&histogram[(key >> shift) & 255], weight(row[i]));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int b = 255;
            for (; b > 0 && above + histogram[b] < target; --b) above += histogram[b];
            chosen_prefix = prefix | ((unsigned)b << shift);
            chosen_above = above;
        }
        __syncthreads();
        prefix = chosen_prefix;
        above = chosen_above;
        mask |= 255u << shift;
    }
    return prefix;
}

// Exclusive prefix sum over the block (SAMPLE_THREADS threads) and the total.
__device__ float block_exclusive_scan(float value, float* total) {
    __shared__ float warp_totals[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float inclusive = value;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        const float other = __shfl_up_sync(0xffffffff, inclusive, offset);
        if (lane >= offset) inclusive += other;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        float t = warp_totals[lane];
#pragma unroll
        for (int offset = 1; offset < 32; offset <<= 1) {
            const float other = __shfl_up_sync(0xffffffff, t, offset);
            if (lane >= offset) t += other;
        }
        warp_totals[lane] = t;  // inclusive over warps
    }
    __syncthreads();
    *total = warp_totals[31];
    return (warp > 0 ? warp_totals[warp - 1] : 0.f) + inclusive - value;
}

// One token per row. grid: rows, block: SAMPLE_THREADS. Each thread owns a contiguous chunk of the vocabulary for
// the final draw, so the draw walks tokens in vocabulary order.
extern "C" __global__ void sample_rows(const float* __restrict__ logits, const SampleParams* __restrict__ params,
                                       int* __restrict__ out, int vocab) {
    wait_for_previous_kernel();
    __shared__ float best_value[32];
    __shared__ int best_index[32];
    __shared__ int drawn;
    const float* row = logits + (size_t)blockIdx.x * vocab;
    const SampleParams p = params[blockIdx.x];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

    // The largest logit, the first on ties; and whether the row holds a NaN or +inf (TokenChoice.nonFinite).
    float value = NEG_INF;
    int index = 0;
    bool undefined = false;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (row[i] > value) { value = row[i]; index = i; }
        // Bit tests rather than isnan: they hold under --use_fast_math. All-ones exponent and not -inf.
        const unsigned bits = __float_as_uint(row[i]);
        undefined |= (bits & 0x7f800000u) == 0x7f800000u && bits != 0xff800000u;
    }
    undefined = __syncthreads_or(undefined);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffff, value, offset);
        const int other_index = __shfl_xor_sync(0xffffffff, index, offset);
        if (other > value || (other == value && other_index < index)) { value = other; index = other_index; }
    }
    if (lane == 0) { best_value[warp] = value; best_index[warp] = index; }
    __syncthreads();
    value = best_value[0];
    index = best_index[0];
    for (int w = 1; w < blockDim.x / 32; ++w) {
        if (best_value[w] > value || (best_value[w] == value && best_index[w] < index)) { value = best_value[w]; index = best_index[w]; }
    }
    if (undefined || value == NEG_INF) {  // NaN/+inf somewhere, or every logit -inf: TokenChoice.nonFinite
        if (threadIdx.x == 0) out[blockIdx.x] = -1;
        return;
    }
    if (p.temperature == 0.f) {
        if (threadIdx.x == 0) out[blockIdx.x] = index;
        return;
    }
    const float max_logit = value, inverse_temperature = 1.f / p.temperature;
    auto weight = [&](float logit) { return __expf((logit - max_logit) * inverse_temperature); };

    // Min-p: logits >= max + temperature * log(min_p), rounded as the host rounds it (no fused multiply-add).
    unsigned threshold = p.log_min_p > NEG_INF ? order_key(__fadd_rn(max_logit, __fmul_rn(p.temperature, p.log_min_p))) : 0u;
    if (p.top_k > 0 && p.top_k < vocab) {
        threshold = max(threshold, select_threshold(row, vocab, threshold, (float)p.top_k, [](float) { return 1.f; }));
    }
    if (p.top_p < 1.f) {
        float mass = 0.f;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            if (order_key(row[i]) >= threshold) mass += weight(row[i]);
        }
        mass = block_sum(mass);
        threshold = max(threshold, select_threshold(row, vocab, threshold, p.top_p * mass, weight));
    }

    // The draw: chunk sums, their prefix sums, then the chunk holding the target walks its tokens.
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int begin = min(vocab, threadIdx.x * chunk), end = min(vocab, begin + chunk);
    float own = 0.f;
    int last_kept = -1;
    for (int i = begin; i < end; ++i) {
        if (order_key(row[i]) >= threshold) { own += weight(row[i]); last_kept = i; }
    }
    float total;
    const float before = block_exclusive_scan(own, &total);
    const float target = p.uniform * total;
    if (threadIdx.x == 0) drawn = -1;
    __syncthreads();
    if (own > 0.f && before <= target && target < before + own) {
        float running = before;
        int token = last_kept;
        for (int i = begin; i < end; ++i) {
            if (order_key(row[i]) >= threshold) {
                running += weight(row[i]);
                if (running > target) { token = i; break; }
            }
        }
        drawn = token;
    }
    __syncthreads();
    if (drawn < 0) {
        // Rounding left the target at the very end: the last kept token.
        int last = block_max_int(last_kept);
        if (threadIdx.x == 0) out[blockIdx.x] = last;
    } else if (threadIdx.x == 0) {
        out[blockIdx.x] = drawn;
    }
}

// A step fed by the one before it, queued before that one has finished: tokens[pairs[2i]] = sampled[pairs[2i + 1]],
// a negative id (a row that could not be sampled, whose request ends when the ids are read) becoming 0 so the row
// still indexes the embedding table. grid: ceil(count / 128); block: 128.
extern "C" __global__ void feed_tokens(const int* __restrict__ sampled, const int* __restrict__ pairs, int count,
                                       int* __restrict__ tokens) {
    wait_for_previous_kernel();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) tokens[pairs[2 * i]] = max(sampled[pairs[2 * i + 1]], 0);
}
