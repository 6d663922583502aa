#include "common.cuh"

// Paged causal grouped-query attention on tensor cores (FlashAttention-2 style): one code path for prefill chunks
// (after cached tokens or not) and decode rows, over the paged KV cache [pages, page_size, kv_heads, head_dim].
//
// The host plan (CUDAAttentionPlan) lists work items: a query tile of one sequence — `tokens` consecutive rows of
// the step — and a range of its key positions. A block takes one (item, KV head); its query tile has tokens × group
// rows, row r being token r / group and query head kv_head · group + r % group, so the KV head's keys are read once
// for the whole group. grid: items × kv_heads blocks (block b: item b / kv_heads, KV head b % kv_heads), block: 128
// threads = 4 warps. The item's key range already skips tiles past its last query (causal) and before its first
// query's sliding window.
//
// Two tensor-core tile shapes, one code path (attention_tile):
//   attention_rows64(_d256): 64 query rows, each warp 16 of them against every key of a tile (prefill chunks).
//   attention_rows16(_d256): 16 query rows (decode: a token's group, or a few tokens), each warp against a quarter of each
//                     key tile; the warps merge their softmax states at the end. Memory-bound: 64 rows would
//                     quadruple the shared-memory reads of K and V for rows that do not exist.
// and attention_decode: one query row (an MHA decode token) on CUDA cores, when the step has enough of them
// (attention_decode_tile, below).
//
// Per key tile (TILE_KEYS keys gathered from their pages into shared memory with cp.async, double buffered: the next
// tile loads while this one computes): S = Q·Kᵀ on mma.sync with float32 accumulators, scaled to log2 units and
// masked (causal, sliding window, end of range) only on tiles that need it; online softmax per row in registers;
// O += P·V with P rounded to the storage type as the A operand, straight from S's accumulators.
//
// Head dims are compiled for 32, 64, 128 and 256; a smaller one (a multiple of 8) runs in the next size up with its
// extra columns zero-filled on load and never written.
//
// An item with partial ≥ 0 covers one split of its query tile's keys (flash-decoding: few queries, long context):
// it writes float32 unnormalized rows and their (max, sum) to partial slot partial + kv_head · rows + r, and
// attention_merge combines the splits. Otherwise the block writes its output rows. An item with tokens = 0 is
// padding and does nothing, so a grid may be larger than this step's work.

struct AttentionItem {
    int sequence;   // row of block_tables
    int row_start;  // step row of the first query token
    int tokens;     // query tokens (consecutive rows and positions); 0: padding
    int position;   // position of the first query token
    int kv_begin;   // key positions [kv_begin, kv_end)
    int kv_end;
    int partial;    // first partial slot of this split, or -1: write the output
    int reserved;
};

struct AttentionArgs {
    const scalar_t* qkv;
    const scalar_t* keys;
    const scalar_t* values;
    const AttentionItem* items;
    const int* block_tables;
    scalar_t* out;
    float* partial_acc;      // [slots, head_dim]
    float* partial_max_sum;  // [slots, 2], max in log2 units
    int max_pages, qkv_width, query_heads, kv_heads, head_dim, page_size, sliding_window;
    float scale_log2;        // log2(e) · scale (1 / sqrt(head_dim) unless the model says otherwise)
    float softcap_log2;      // log2(e) · softcap: scores become softcap · tanh(score / softcap) (Gemma 2); 0: none
};

#define THREADS 128

// The end of a block: each of its warps left unnormalized float32 rows and their softmax state in shared memory,
// row r of warp w at entry (r / WARP_ROWS · KEY_WARPS + w) · WARP_ROWS + r % WARP_ROWS (o_shared rows HEAD_DIM + 8
// floats apart, state as (max, sum) pairs), the KEY_WARPS warps of a row having seen disjoint keys. Merges them and
// writes the output rows, or for a split the float32 partial rows and their (max, sum); each thread whole 8-dim chunks.
template <int HEAD_DIM, int WARP_ROWS, int KEY_WARPS>
__device__ __forceinline__ void write_rows(const AttentionArgs& a, const AttentionItem& item, int kv_head, int rows,
                                           const float* o_shared, const float* state) {
    constexpr int CHUNKS = HEAD_DIM / 8, OUT_STRIDE = HEAD_DIM + 8;
    const int group = a.query_heads / a.kv_heads;
    for (int i = threadIdx.x; i < rows * CHUNKS; i += THREADS) {
        const int r = i / CHUNKS, c = i % CHUNKS;
        if (c * 8 >= a.head_dim) continue;
        const int first_entry = (r / WARP_ROWS) * KEY_WARPS * WARP_ROWS + r % WARP_ROWS;
        float m = NEG_INF;
#pragma unroll
        for (int w = 0; w < KEY_WARPS; ++w) m = fmaxf(m, state[2 * (first_entry + w * WARP_ROWS)]);
        const float base = m == NEG_INF ? 0.f : m;
        float sum = 0.f, acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int w = 0; w < KEY_WARPS; ++w) {
            const int from = first_entry + w * WARP_ROWS;
            const float weight = exp2f(state[2 * from] - base);
            sum += state[2 * from + 1] * weight;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[e] += o_shared[from * OUT_STRIDE + c * 8 + e] * weight;
        }
        if (item.partial < 0) {
            const float inverse = 1.f / sum;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[e] *= inverse;
            store8(a.out + (size_t)(item.row_start + r / group) * a.query_heads * a.head_dim + (kv_head * group + r % group) * a.head_dim + c * 8, acc);
        } else {
            const size_t slot = (size_t)item.partial + (size_t)kv_head * rows + r;
            float4* to = reinterpret_cast<float4*>(a.partial_acc + slot * a.head_dim + c * 8);
            to[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
            to[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
            if (c == 0) {
                a.partial_max_sum[2 * slot] = m;
                a.partial_max_sum[2 * slot + 1] = sum;
            }
        }
    }
}

template <int HEAD_DIM, int ROW_WARPS>
__device__ __forceinline__ void attention_tile(const AttentionArgs& a) {
    constexpr int KEY_WARPS = 4 / ROW_WARPS;
    constexpr int TILE_ROWS = 16 * ROW_WARPS;
    constexpr int TILE_KEYS = HEAD_DIM == 256 && ROW_WARPS == 4 ? 32 : 64;  // 256: registers hold 128 accumulators
    constexpr int WARP_KEYS = TILE_KEYS / KEY_WARPS;                       // keys of a tile each warp scores
    constexpr int STRIDE = HEAD_DIM + 8;   // shared row stride in scalars: 16 bytes of padding put ldmatrix's 8 rows on distinct banks
    constexpr int CHUNKS = HEAD_DIM / 8;   // 16-byte chunks per row
    constexpr bool Q_IN_REGISTERS = HEAD_DIM <= 128;
    constexpr int OUT_STRIDE = HEAD_DIM + 8;  // floats, epilogue
    static_assert(WARP_KEYS % 16 == 0, "a warp scores whole 16-key steps");
    static_assert(4 * 16 * OUT_STRIDE * 4 <= 4 * TILE_KEYS * STRIDE * 2, "the epilogue's rows fit in the key tiles' space");

    extern __shared__ uint4 shared[];
    scalar_t* q_tile = reinterpret_cast<scalar_t*>(shared);  // [TILE_ROWS][STRIDE]
    scalar_t* k_tiles = q_tile + TILE_ROWS * STRIDE;         // [2][TILE_KEYS][STRIDE]
    scalar_t* v_tiles = k_tiles + 2 * TILE_KEYS * STRIDE;    // [2][TILE_KEYS][STRIDE]

    const AttentionItem item = a.items[blockIdx.x / a.kv_heads];
    const int kv_head = blockIdx.x % a.kv_heads;
    if (item.tokens == 0) return;
    const int group = a.query_heads / a.kv_heads, rows = item.tokens * group;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int row_warp = warp / KEY_WARPS, key_warp = warp % KEY_WARPS;
    const int* table = a.block_tables + (size_t)item.sequence * a.max_pages;

    // Q tile, its own cp.async group.
#pragma unroll
    for (int j = 0; j < (TILE_ROWS * CHUNKS + THREADS - 1) / THREADS; ++j) {
        const int i = threadIdx.x + j * THREADS, r = i / CHUNKS, c = i % CHUNKS;
        if (i >= TILE_ROWS * CHUNKS) break;
        const bool valid = r < rows && c * 8 < a.head_dim;
        const scalar_t* from = valid ? a.qkv + (size_t)(item.row_start + r / group) * a.qkv_width + (kv_head * group + r % group) * a.head_dim + c * 8
                                     : a.qkv;
        cp_async16(q_tile + r * STRIDE + c * 8, from, valid);
    }
    cp_async_commit();

    // Key tile `tile` into buffer tile % 2: K and V rows of TILE_KEYS positions, each looked up in the block table.
    const int key_tiles = (item.kv_end - item.kv_begin + TILE_KEYS - 1) / TILE_KEYS;
    auto load_keys = [&](int tile) {
        const int first = item.kv_begin + tile * TILE_KEYS;
        scalar_t* k = k_tiles + (tile % 2) * TILE_KEYS * STRIDE;
        scalar_t* v = v_tiles + (tile % 2) * TILE_KEYS * STRIDE;
#pragma unroll
        for (int j = 0; j < TILE_KEYS * CHUNKS / THREADS; ++j) {
            const int i = threadIdx.x + j * THREADS, key = i / CHUNKS, c = i % CHUNKS, position = first + key;
            const bool valid = position < item.kv_end && c * 8 < a.head_dim;
            size_t offset = 0;
            if (valid) {
                const size_t slot = (size_t)table[position / a.page_size] * a.page_size + position % a.page_size;
                offset = (slot * a.kv_heads + kv_head) * a.head_dim + c * 8;
            }
            cp_async16(k + key * STRIDE + c * 8, a.keys + offset, valid);
            cp_async16(v + key * STRIDE + c * 8, a.values + offset, valid);
        }
    };
    if (key_tiles > 0) load_keys(0);
    cp_async_commit();

    // This warp's 16 query rows: A operand row addresses (lane l gives row l % 16, columns +8 for lanes ≥ 16).
    const scalar_t* q_row = q_tile + (row_warp * 16 + lane % 16) * STRIDE + (lane / 16) * 8;
    unsigned q[Q_IN_REGISTERS ? HEAD_DIM / 16 : 1][4];
    cp_async_wait<1>();  // the Q group; the first key tile may still be loading
    __syncthreads();
    if constexpr (Q_IN_REGISTERS) {
#pragma unroll
        for (int kk = 0; kk < HEAD_DIM / 16; ++kk) ldmatrix_x4(q[kk], q_row + kk * 16);
    }

    // The thread's two rows, g and g + 8 of the warp's 16: positions (padding rows take the last token's) and softmax
    // state. Sums cover this thread's columns only until the end.
    int query_position[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) query_position[h] = item.position + min((row_warp * 16 + g + 8 * h) / group, item.tokens - 1);
    const int last_position = item.position + item.tokens - 1;
    float row_max[2] = {NEG_INF, NEG_INF}, row_sum[2] = {0.f, 0.f};
    float o[HEAD_DIM / 8][4];  // C fragments: dims 8j + 2t, +1 of rows g (0, 1) and g + 8 (2, 3)
#pragma unroll
    for (int j = 0; j < HEAD_DIM / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;

    for (int tile = 0; tile < key_tiles; ++tile) {
        if (tile + 1 < key_tiles) load_keys(tile + 1);
        cp_async_commit();
        cp_async_wait<1>();  // everything but the tile just requested
        __syncthreads();
        const scalar_t* k = k_tiles + ((tile % 2) * TILE_KEYS + key_warp * WARP_KEYS) * STRIDE;
        const scalar_t* v = v_tiles + ((tile % 2) * TILE_KEYS + key_warp * WARP_KEYS) * STRIDE;

        // S = Q·Kᵀ for the warp's keys: B = Kᵀ, so K rows (keys) are B's columns and a plain ldmatrix of K gives b0, b1.
        // Per x4: matrices (keys +0..7, dims +0..7), (keys +0..7, dims +8..15), (keys +8..15, dims +0..7),
        // (keys +8..15, dims +8..15) = b0, b1 of key block 2·jp, then b0, b1 of key block 2·jp + 1.
        float s[WARP_KEYS / 8][4];
#pragma unroll
        for (int j = 0; j < WARP_KEYS / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
            unsigned a_fragment[4];
            if constexpr (Q_IN_REGISTERS) {
#pragma unroll
                for (int e = 0; e < 4; ++e) a_fragment[e] = q[kk][e];
            } else {
                ldmatrix_x4(a_fragment, q_row + kk * 16);
            }
#pragma unroll
            for (int jp = 0; jp < WARP_KEYS / 16; ++jp) {
                unsigned b[4];
                ldmatrix_x4(b, k + (jp * 16 + lane % 8 + (lane / 16) * 8) * STRIDE + kk * 16 + ((lane / 8) % 2) * 8);
                mma_m16n8k16(s[2 * jp], a_fragment, b[0], b[1], scalar_t());
                mma_m16n8k16(s[2 * jp + 1], a_fragment, b[2], b[3], scalar_t());
            }
        }

        // Scale to log2 units; mask only tiles that reach past the first query, the range end, or a window's start.
        const int first_key = item.kv_begin + tile * TILE_KEYS;
        const bool masked = first_key + TILE_KEYS > min(item.kv_end, item.position + 1)
                            || (a.sliding_window > 0 && first_key <= last_position - a.sliding_window);
        const int thread_key = first_key + key_warp * WARP_KEYS + 2 * t;
#pragma unroll
        for (int j = 0; j < WARP_KEYS / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = thread_key + 8 * j + e % 2, query = query_position[e / 2];
                const bool visible = !masked || (key < item.kv_end && key <= query && (a.sliding_window == 0 || key > query - a.sliding_window));
                // In log2 units cap · tanh(s / cap) is cap₂ · tanh(s₂ / cap₂). The branch is uniform over the grid.
                const float score = a.softcap_log2 > 0.f ? a.softcap_log2 * tanhf(s[j][e] * a.scale_log2 / a.softcap_log2)
                                                         : s[j][e] * a.scale_log2;
                s[j][e] = visible ? score : NEG_INF;
            }
        }

        // Online softmax: the row's max over the quad (lanes 4g..4g+3 hold its columns), rescale, exponentiate.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float tile_max = NEG_INF;
#pragma unroll
            for (int j = 0; j < WARP_KEYS / 8; ++j) tile_max = fmaxf(tile_max, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 2));
            const float new_max = fmaxf(row_max[h], tile_max);
            const float base = new_max == NEG_INF ? 0.f : new_max;  // nothing visible yet: every p is 0, no NaN
            const float correction = exp2f(row_max[h] - base);
            row_max[h] = new_max;
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < WARP_KEYS / 8; ++j) {
                s[j][2 * h] = exp2f(s[j][2 * h] - base);
                s[j][2 * h + 1] = exp2f(s[j][2 * h + 1] - base);
                sum += s[j][2 * h] + s[j][2 * h + 1];
            }
            row_sum[h] = row_sum[h] * correction + sum;
#pragma unroll
            for (int j = 0; j < HEAD_DIM / 8; ++j) {
                o[j][2 * h] *= correction;
                o[j][2 * h + 1] *= correction;
            }
        }

        // O += P·V. P's A fragment for keys 16kk..16kk+15 is S's C fragments of key blocks 2kk and 2kk + 1. B = V
        // (keys × dims) wants (keys 2t, 2t+1; dim g): ldmatrix.trans of V rows. Per x4: matrices (keys +0..7,
        // dims +0..7), (keys +8..15, dims +0..7), (keys +0..7, dims +8..15), (keys +8..15, dims +8..15) = b0, b1 of
        // dim block 2·jp, then b0, b1 of dim block 2·jp + 1.
#pragma unroll
        for (int kk = 0; kk < WARP_KEYS / 16; ++kk) {
            const unsigned p[4] = {pack2(s[2 * kk][0], s[2 * kk][1]), pack2(s[2 * kk][2], s[2 * kk][3]),
                                   pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int jp = 0; jp < HEAD_DIM / 16; ++jp) {
                unsigned b[4];
                ldmatrix_x4_trans(b, v + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * STRIDE + jp * 16 + (lane / 16) * 8);
                mma_m16n8k16(o[2 * jp], p, b[0], b[1], scalar_t());
                mma_m16n8k16(o[2 * jp + 1], p, b[2], b[3], scalar_t());
            }
        }
        __syncthreads();  // every warp is done with this buffer before the next iteration's loads refill it
    }
    __syncthreads();  // (no key tile: the Q fragments were read before the Q tile's space is reused below)

    // Epilogue: each warp's rows (unnormalized float32) and softmax state to shared memory, in the key tiles' and the
    // Q tile's space, so the key warps of a row merge and each thread writes whole 16-byte output chunks.
    float* o_shared = reinterpret_cast<float*>(k_tiles);  // [4 warps][16 rows][OUT_STRIDE]
    float* state = reinterpret_cast<float*>(q_tile);      // [4 warps][16 rows][max, sum]
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        row_sum[h] += __shfl_xor_sync(0xffffffff, row_sum[h], 1);
        row_sum[h] += __shfl_xor_sync(0xffffffff, row_sum[h], 2);
        const int r = warp * 16 + g + 8 * h;
        if (t == 0) {
            state[2 * r] = row_max[h];
            state[2 * r + 1] = row_sum[h];
        }
#pragma unroll
        for (int j = 0; j < HEAD_DIM / 8; ++j)
            *reinterpret_cast<float2*>(&o_shared[r * OUT_STRIDE + 8 * j + 2 * t]) = make_float2(o[j][2 * h], o[j][2 * h + 1]);
    }
    __syncthreads();

    write_rows<HEAD_DIM, 16, KEY_WARPS>(a, item, kv_head, rows, o_shared, state);
}

// Head dims up to 128 share a kernel per tile shape; 256 has its own, so that its registers (about 240, against
// 170 for 128 in 16-row tiles) do not lower the occupancy of the others.
template <int ROW_WARPS>
__device__ __forceinline__ void attention_tiles(const AttentionArgs& a) {
    if (a.head_dim <= 32) attention_tile<32, ROW_WARPS>(a);
    else if (a.head_dim <= 64) attention_tile<64, ROW_WARPS>(a);
    else attention_tile<128, ROW_WARPS>(a);
}

// A tile of at most DECODE_ROWS query rows on CUDA cores (attention_decode). An MHA decode row fills one of a
// tensor-core tile's 16 rows and pays registers and shared memory for all 16, which caps the memory-bound decode at 3
// resident blocks per multiprocessor. Here a thread holds 8 dims of each row and reads K and V straight from the paged
// cache into registers, 16 bytes at a time: a key's row is read by LANES = HEAD_DIM / 8 adjacent lanes, so a warp
// covers 32 / LANES keys per step and the block's 4 warps take consecutive steps in turn, UNROLL steps at once to keep
// loads in flight. Each thread keeps an online softmax over the keys it saw (all lanes of a key hold its whole score);
// the key groups of a warp merge through shuffles, the warps through shared memory (write_rows).
#define DECODE_ROWS 1

template <int HEAD_DIM>
__device__ __forceinline__ void attention_decode_tile(const AttentionArgs& a) {
    constexpr int ROWS = DECODE_ROWS, LANES = HEAD_DIM / 8, WARP_KEYS = 32 / LANES, BLOCK_KEYS = 4 * WARP_KEYS, UNROLL = 2;
    constexpr int OUT_STRIDE = HEAD_DIM + 8;
    extern __shared__ uint4 shared[];
    float* o_shared = reinterpret_cast<float*>(shared);  // [4 warps][ROWS][OUT_STRIDE]
    float* state = o_shared + 4 * ROWS * OUT_STRIDE;     // [4 warps][ROWS][max, sum]

    const AttentionItem item = a.items[blockIdx.x / a.kv_heads];
    const int kv_head = blockIdx.x % a.kv_heads;
    if (item.tokens == 0) return;
    const int group = a.query_heads / a.kv_heads, rows = item.tokens * group;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, c = lane % LANES, key_lane = lane / LANES;
    const bool in_head = c * 8 < a.head_dim;  // lanes past a smaller head dim read zeros and write nothing
    const int* table = a.block_tables + (size_t)item.sequence * a.max_pages;

    float q[ROWS][8], o[ROWS][8], row_max[ROWS], row_sum[ROWS];
    int query_position[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const bool valid = r < rows && in_head;
        const scalar_t* from = a.qkv + (size_t)(item.row_start + r / group) * a.qkv_width + (kv_head * group + r % group) * a.head_dim + c * 8;
        if (valid) load8(from, q[r]);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            if (!valid) q[r][e] = 0.f;
            o[r][e] = 0.f;
        }
        query_position[r] = item.position + min(r / group, item.tokens - 1);
        row_max[r] = NEG_INF;
        row_sum[r] = 0.f;
    }

    // `base` is uniform over the warp (shuffles below need every lane); this lane's keys are base + u · BLOCK_KEYS + key_lane.
    for (int base = item.kv_begin + warp * WARP_KEYS; base < item.kv_end; base += UNROLL * BLOCK_KEYS) {
        uint4 k[UNROLL], v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int position = base + u * BLOCK_KEYS + key_lane;
            k[u] = v[u] = make_uint4(0, 0, 0, 0);
            if (position < item.kv_end && in_head) {
                const size_t slot = (size_t)table[position / a.page_size] * a.page_size + position % a.page_size;
                const size_t offset = (slot * a.kv_heads + kv_head) * a.head_dim + c * 8;
                k[u] = *reinterpret_cast<const uint4*>(a.keys + offset);
                v[u] = *reinterpret_cast<const uint4*>(a.values + offset);
            }
        }
        float s[ROWS][UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const scalar_t* key = reinterpret_cast<const scalar_t*>(&k[u]);
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                float dot = 0.f;
#pragma unroll
                for (int e = 0; e < 8; ++e) dot += q[r][e] * to_float(key[e]);
#pragma unroll
                for (int offset = LANES / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffff, dot, offset);
                const int position = base + u * BLOCK_KEYS + key_lane, query = query_position[r];
                const bool visible = position < item.kv_end && position <= query
                                     && (a.sliding_window == 0 || position > query - a.sliding_window);
                const float score = a.softcap_log2 > 0.f ? a.softcap_log2 * tanhf(dot * a.scale_log2 / a.softcap_log2) : dot * a.scale_log2;
                s[r][u] = visible ? score : NEG_INF;
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            float step_max = NEG_INF;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) step_max = fmaxf(step_max, s[r][u]);
            const float new_max = fmaxf(row_max[r], step_max);
            const float shift = new_max == NEG_INF ? 0.f : new_max;  // nothing visible yet: every p is 0, no NaN
            const float correction = exp2f(row_max[r] - shift);
            row_max[r] = new_max;
            row_sum[r] *= correction;
#pragma unroll
            for (int e = 0; e < 8; ++e) o[r][e] *= correction;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const float p = exp2f(s[r][u] - shift);
                const scalar_t* value = reinterpret_cast<const scalar_t*>(&v[u]);
                row_sum[r] += p;
#pragma unroll
                for (int e = 0; e < 8; ++e) o[r][e] += p * to_float(value[e]);
            }
        }
    }

    // Merge the warp's key groups (lanes LANES apart hold the same dims), then hand each warp's rows to write_rows.
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
#pragma unroll
        for (int offset = LANES; offset < 32; offset *= 2) {
            const float other_max = __shfl_xor_sync(0xffffffff, row_max[r], offset);
            const float other_sum = __shfl_xor_sync(0xffffffff, row_sum[r], offset);
            const float new_max = fmaxf(row_max[r], other_max), shift = new_max == NEG_INF ? 0.f : new_max;
            const float mine = exp2f(row_max[r] - shift), theirs = exp2f(other_max - shift);
            row_sum[r] = row_sum[r] * mine + other_sum * theirs;
#pragma unroll
            for (int e = 0; e < 8; ++e) o[r][e] = o[r][e] * mine + __shfl_xor_sync(0xffffffff, o[r][e], offset) * theirs;
            row_max[r] = new_max;
        }
        const int entry = warp * ROWS + r;
        if (key_lane == 0) {
#pragma unroll
            for (int e = 0; e < 8; ++e) o_shared[entry * OUT_STRIDE + c * 8 + e] = o[r][e];
            if (c == 0) {
                state[2 * entry] = row_max[r];
                state[2 * entry + 1] = row_sum[r];
            }
        }
    }
    __syncthreads();
    write_rows<HEAD_DIM, ROWS, 4>(a, item, kv_head, rows, o_shared, state);
}

// Head dims ≤ 128, 64-row query tiles. Dynamic shared memory: (64 + 4 · 64) · (padded head dim + 8) · 2 bytes.
extern "C" __global__ void attention_rows64(
        const scalar_t* __restrict__ qkv, const scalar_t* __restrict__ keys, const scalar_t* __restrict__ values,
        const AttentionItem* __restrict__ items, const int* __restrict__ block_tables, scalar_t* __restrict__ out,
        float* __restrict__ partial_acc, float* __restrict__ partial_max_sum, int max_pages, int qkv_width, int query_heads,
        int kv_heads, int head_dim, int page_size, int sliding_window, float scale_log2, float softcap_log2) {
    wait_for_previous_kernel();
    attention_tiles<4>({qkv, keys, values, items, block_tables, out, partial_acc, partial_max_sum, max_pages, qkv_width, query_heads, kv_heads,
                  head_dim, page_size, sliding_window, scale_log2, softcap_log2});
}

// Head dims ≤ 128, 16-row query tiles. Dynamic shared memory: (16 + 4 · 64) · (padded head dim + 8) · 2 bytes.
extern "C" __global__ void attention_rows16(
        const scalar_t* __restrict__ qkv, const scalar_t* __restrict__ keys, const scalar_t* __restrict__ values,
        const AttentionItem* __restrict__ items, const int* __restrict__ block_tables, scalar_t* __restrict__ out,
        float* __restrict__ partial_acc, float* __restrict__ partial_max_sum, int max_pages, int qkv_width, int query_heads,
        int kv_heads, int head_dim, int page_size, int sliding_window, float scale_log2, float softcap_log2) {
    wait_for_previous_kernel();
    attention_tiles<1>({qkv, keys, values, items, block_tables, out, partial_acc, partial_max_sum, max_pages, qkv_width, query_heads, kv_heads,
                  head_dim, page_size, sliding_window, scale_log2, softcap_log2});
}

// Head dims 129–256, 64-row query tiles of 32-key tiles. Dynamic shared memory: (64 + 4 · 32) · 264 · 2 bytes.
extern "C" __global__ void attention_rows64_d256(
        const scalar_t* __restrict__ qkv, const scalar_t* __restrict__ keys, const scalar_t* __restrict__ values,
        const AttentionItem* __restrict__ items, const int* __restrict__ block_tables, scalar_t* __restrict__ out,
        float* __restrict__ partial_acc, float* __restrict__ partial_max_sum, int max_pages, int qkv_width, int query_heads,
        int kv_heads, int head_dim, int page_size, int sliding_window, float scale_log2, float softcap_log2) {
    wait_for_previous_kernel();
    attention_tile<256, 4>({qkv, keys, values, items, block_tables, out, partial_acc, partial_max_sum, max_pages, qkv_width, query_heads, kv_heads,
                  head_dim, page_size, sliding_window, scale_log2, softcap_log2});
}

// Head dims 129–256, 16-row query tiles. Dynamic shared memory: (16 + 4 · 64) · 264 · 2 bytes.
extern "C" __global__ void attention_rows16_d256(
        const scalar_t* __restrict__ qkv, const scalar_t* __restrict__ keys, const scalar_t* __restrict__ values,
        const AttentionItem* __restrict__ items, const int* __restrict__ block_tables, scalar_t* __restrict__ out,
        float* __restrict__ partial_acc, float* __restrict__ partial_max_sum, int max_pages, int qkv_width, int query_heads,
        int kv_heads, int head_dim, int page_size, int sliding_window, float scale_log2, float softcap_log2) {
    wait_for_previous_kernel();
    attention_tile<256, 1>({qkv, keys, values, items, block_tables, out, partial_acc, partial_max_sum, max_pages, qkv_width, query_heads, kv_heads,
                  head_dim, page_size, sliding_window, scale_log2, softcap_log2});
}

// Tiles of at most DECODE_ROWS query rows (MHA decode tokens), every head dim. Dynamic shared memory:
// 4 · DECODE_ROWS · (padded head dim + 10) · 4 bytes.
extern "C" __global__ void attention_decode(
        const scalar_t* __restrict__ qkv, const scalar_t* __restrict__ keys, const scalar_t* __restrict__ values,
        const AttentionItem* __restrict__ items, const int* __restrict__ block_tables, scalar_t* __restrict__ out,
        float* __restrict__ partial_acc, float* __restrict__ partial_max_sum, int max_pages, int qkv_width, int query_heads,
        int kv_heads, int head_dim, int page_size, int sliding_window, float scale_log2, float softcap_log2) {
    wait_for_previous_kernel();
    const AttentionArgs a{qkv, keys, values, items, block_tables, out, partial_acc, partial_max_sum, max_pages, qkv_width, query_heads,
                          kv_heads, head_dim, page_size, sliding_window, scale_log2, softcap_log2};
    if (head_dim <= 32) attention_decode_tile<32>(a);
    else if (head_dim <= 64) attention_decode_tile<64>(a);
    else if (head_dim <= 128) attention_decode_tile<128>(a);
    else attention_decode_tile<256>(a);
}

// A query tile whose keys were split: `splits` items wrote partial slots partial + s · kv_heads · rows + kv_head · rows + r.
struct AttentionMergeItem {
    int row_start, tokens, partial, splits;
};

// Combines the splits of each merge item's rows into the output. grid: merges × kv_heads, block: 128.
extern "C" __global__ void attention_merge(const AttentionMergeItem* __restrict__ merges, const float* __restrict__ partial_acc,
                                           const float* __restrict__ partial_max_sum, scalar_t* __restrict__ out,
                                           int query_heads, int kv_heads, int head_dim) {
    wait_for_previous_kernel();
    const AttentionMergeItem merge = merges[blockIdx.x / kv_heads];
    const int kv_head = blockIdx.x % kv_heads, group = query_heads / kv_heads, rows = merge.tokens * group, chunks = head_dim / 8;
    const size_t split_stride = (size_t)kv_heads * rows;
    for (int i = threadIdx.x; i < rows * chunks; i += blockDim.x) {
        const int r = i / chunks, c = i % chunks;
        const size_t first = (size_t)merge.partial + (size_t)kv_head * rows + r;
        float m = NEG_INF;
        for (int s = 0; s < merge.splits; ++s) m = fmaxf(m, partial_max_sum[2 * (first + s * split_stride)]);
        float sum = 0.f, acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (int s = 0; s < merge.splits; ++s) {
            const size_t slot = first + s * split_stride;
            const float weight = exp2f(partial_max_sum[2 * slot] - m);  // a split that saw nothing of this row: 0
            sum += partial_max_sum[2 * slot + 1] * weight;
            const float4* from = reinterpret_cast<const float4*>(partial_acc + slot * head_dim + c * 8);
            const float4 low = from[0], high = from[1];
            acc[0] += low.x * weight; acc[1] += low.y * weight; acc[2] += low.z * weight; acc[3] += low.w * weight;
            acc[4] += high.x * weight; acc[5] += high.y * weight; acc[6] += high.z * weight; acc[7] += high.w * weight;
        }
        const float inverse = 1.f / sum;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] *= inverse;
        store8(out + (size_t)(merge.row_start + r / group) * query_heads * head_dim + (kv_head * group + r % group) * head_dim + c * 8, acc);
    }
}
