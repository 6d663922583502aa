#include "common.cuh"

// Punica's SGMV for one (fused) projection, on tensor cores. The host cuts every segment (rows sharing one adapter)
// into tiles of at most TILE_ROWS rows: tile i covers rows [tile_start[i], tile_end[i]) with the adapter in slot
// tile_slot[i]. `slots` holds every resident adapter's weights for this projection (see common.cuh). A tile is one
// MMA row block (M = 16; a decode row is a tile of one row, the other 15 MMA rows zero), so each adapter weight is
// read once per tile, not once per row. A tile with slot -1 or no rows, and any block past its adapter's rank or
// pieces, returns at once: padding work items cost nothing but their launch slot.
//
// Operand fragments come straight from global memory, 16 or 8 bytes per thread, without shared memory: both operands
// of a dot product are read with the same permutation of k (see shrink_step and sgmv_expand), which leaves the sum
// unchanged and makes every thread's k values contiguous.
#define TILE_ROWS 16

// Shrink: v[rows, r] = x[rows] · A[r]ᵀ for r < rank, in float32 (m16n8k16 MMAs on the storage type, f32 accumulate).
// grid: (tiles, ceil(max rank / SHRINK_RANKS), splits); block: SHRINK_WARPS warps (148 registers: 3 blocks per
// multiprocessor). Block (tile, c, s) computes v's columns [c·64, +64) of its tile over input columns
// [s·split_width, +split_width); its warps take 32 input columns at a time in turn and are summed in shared memory. With one split the block writes v; with several (a step with
// few tiles: decode, one adapter) each writes its partial sums to `partial` and the last to arrive, counted in
// counters[tile · gridDim.y + c], adds them in split order (deterministic) into v and resets the counter to 0.
#define SHRINK_RANKS 64  // v columns per block: 8 MMA n-tiles of 8
#define SHRINK_WARPS 4
#define SHRINK_STEP 32   // input columns per warp step: two k16 MMAs

// Eight 16-bit values from p as four words (two values each, low half first), zero from index `valid` on (valid ≤ 0:
// all zero). vector: p is 16-byte aligned, so a full group is one load.
__device__ __forceinline__ uint4 load8_bits(const scalar_t* p, int valid, bool vector) {
    if (vector && valid >= 8) return *reinterpret_cast<const uint4*>(p);
    const unsigned short* q = reinterpret_cast<const unsigned short*>(p);
    unsigned int w[4] = {0, 0, 0, 0};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        if (i < valid) w[i / 2] |= (unsigned int)q[i] << (16 * (i % 2));
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

// d += a · b for one m16n8k16 MMA (row.col) on the storage type; the pointer's type picks f16 or bf16.
__device__ __forceinline__ void mma_16x8x16(const __half*, float* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                            unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_16x8x16(const __nv_bfloat16*, float* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                            unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// d += a · b for one m16n8k8 MMA (row.col) on tf32 operands.
__device__ __forceinline__ void mma_16x8x8_tf32(float* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// One warp step of the shrink: 32 input columns starting at k0 for the tile's rows g and g+8 (x0, x1) and the
// block's rank rows n·8 + g (a + n·8·in_width), into acc[n] (the C fragment of n-tile n). Thread (g, t) reads
// columns k0 + 8t ..< +8 of each row: MMA j ∈ {0, 1} takes words 2j and 2j+1 as its k pairs {2t, 2t+1} and
// {2t+8, 2t+9}, so logical k 2t+h is column 8t+4j+h and 2t+8+h is 8t+4j+2+h, for x and A alike.
__device__ __forceinline__ void shrink_step(const scalar_t* x0, const scalar_t* x1, const scalar_t* a, int k0, int k_end,
                                            int in_width, int rows, int ranks, bool vector, float (*acc)[4]) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int k = k0 + 8 * t, valid = k_end - k;
    const uint4 lo = load8_bits(x0 + k, g < rows ? valid : 0, vector);
    const uint4 hi = load8_bits(x1 + k, g + 8 < rows ? valid : 0, vector);
    uint4 w[SHRINK_RANKS / 8];
#pragma unroll
    for (int n = 0; n < SHRINK_RANKS / 8; ++n) {
        if (n * 8 < ranks) w[n] = load8_bits(a + (size_t)n * 8 * in_width + k, n * 8 + g < ranks ? valid : 0, vector);
    }
#pragma unroll
    for (int n = 0; n < SHRINK_RANKS / 8; ++n) {
        if (n * 8 < ranks) {  // the same for the whole warp, as the MMA needs
            mma_16x8x16((const scalar_t*)nullptr, acc[n], lo.x, hi.x, lo.y, hi.y, w[n].x, w[n].y);
            mma_16x8x16((const scalar_t*)nullptr, acc[n], lo.z, hi.z, lo.w, hi.w, w[n].z, w[n].w);
        }
    }
}

// Shrink work item (tile, rank block, split) of `rank_blocks` × `splits` per tile (see sgmv_shrink).
__device__ __forceinline__ void shrink_item(const scalar_t* __restrict__ x, float* __restrict__ v, const LoraSlot* __restrict__ slots,
                                            const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                            const int* __restrict__ tile_slot, float* __restrict__ partial, int* __restrict__ counters,
                                            int in_width, int v_width, int split_width, int tile, int rank_block, int split,
                                            int rank_blocks, int splits) {
    const int slot_index = tile_slot[tile];
    if (slot_index < 0) return;
    const LoraSlot& slot = slots[slot_index];
    const int first = tile_start[tile], rows = tile_end[tile] - first;
    const int first_rank = rank_block * SHRINK_RANKS;
    if (slot.a == nullptr || first_rank >= slot.rank || rows <= 0) return;
    const int ranks = min(SHRINK_RANKS, slot.rank - first_rank);
    const int k_begin = split * split_width, k_end = min(in_width, k_begin + split_width);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const bool vector = in_width % 8 == 0 && ((size_t)x | (size_t)slot.a) % 16 == 0;
    const scalar_t* x0 = x + (size_t)(first + g) * in_width;  // rows past the tile are never read (valid 0)
    const scalar_t* x1 = x0 + (size_t)8 * in_width;
    const scalar_t* a = slot.a + (size_t)(first_rank + g) * in_width;
    float acc[SHRINK_RANKS / 8][4] = {};
#pragma unroll 2
    for (int k0 = k_begin + warp * SHRINK_STEP; k0 < k_end; k0 += SHRINK_WARPS * SHRINK_STEP) {
        shrink_step(x0, x1, a, k0, k_end, in_width, rows, ranks, vector, acc);
    }

    // Sum the warps: C fragment element (n, i) is row g + 8·(i / 2), column n·8 + 2t + i % 2. Rows padded by 8
    // columns: a store's 32 lanes then meet at most two to a bank instead of eight.
    __shared__ float sums[SHRINK_WARPS][TILE_ROWS][SHRINK_RANKS + 8];
#pragma unroll
    for (int n = 0; n < SHRINK_RANKS / 8; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) sums[warp][g + 8 * (i / 2)][n * 8 + 2 * t + i % 2] = acc[n][i];
    }
    __syncthreads();
    constexpr int outputs = TILE_ROWS * SHRINK_RANKS, per_thread = outputs / (SHRINK_WARPS * 32);
    float total[per_thread];
#pragma unroll
    for (int j = 0; j < per_thread; ++j) {
        const int e = threadIdx.x + j * SHRINK_WARPS * 32, row = e / SHRINK_RANKS, column = e % SHRINK_RANKS;
        total[j] = 0.f;
        for (int w = 0; w < SHRINK_WARPS; ++w) total[j] += sums[w][row][column];
    }
    float* out = v + (size_t)first * v_width + first_rank;
    if (splits > 1) {
        const int group = tile * rank_blocks + rank_block;
        float* mine = partial + ((size_t)group * splits + split) * outputs;
#pragma unroll
        for (int j = 0; j < per_thread; ++j) mine[threadIdx.x + j * SHRINK_WARPS * 32] = total[j];
        __threadfence();  // the partial sums are visible before the counter says so
        __syncthreads();
        __shared__ bool last;
        if (threadIdx.x == 0) last = atomicAdd(&counters[group], 1) == splits - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        // Splits in order, so the sum does not depend on which block came last; unrolled so that many loads are in
        // flight at once, not one L2 round trip per split.
        const float* sums_of_group = partial + (size_t)group * splits * outputs + threadIdx.x;
#pragma unroll
        for (int j = 0; j < per_thread; ++j) total[j] = 0.f;
#pragma unroll 4
        for (int s = 0; s < splits; ++s) {
#pragma unroll
            for (int j = 0; j < per_thread; ++j) total[j] += __ldcg(sums_of_group + (size_t)s * outputs + j * SHRINK_WARPS * 32);
        }
        if (threadIdx.x == 0) counters[group] = 0;  // ready for the next launch
    }
#pragma unroll
    for (int j = 0; j < per_thread; ++j) {
        const int e = threadIdx.x + j * SHRINK_WARPS * 32, row = e / SHRINK_RANKS, column = e % SHRINK_RANKS;
        if (row < rows && column < ranks) out[(size_t)row * v_width + column] = total[j];
    }
}

extern "C" __global__ void sgmv_shrink(const scalar_t* __restrict__ x, float* __restrict__ v, const LoraSlot* __restrict__ slots,
                                       const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                       const int* __restrict__ tile_slot, float* __restrict__ partial, int* __restrict__ counters,
                                       int in_width, int v_width, int split_width) {
    shrink_item(x, v, slots, tile_start, tile_end, tile_slot, partial, counters, in_width, v_width, split_width, blockIdx.x, blockIdx.y,
                blockIdx.z, gridDim.y, gridDim.z);
}

// Four float32 values from p through L2 (coherent with other blocks' writes), zero from index `valid` on. vector: p
// is 16-byte aligned.
__device__ __forceinline__ float4 load4_floats(const float* p, int valid, bool vector) {
    if (vector && valid >= 4) return __ldcg(reinterpret_cast<const float4*>(p));
    float f[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        if (i < valid) f[i] = __ldcg(p + i);
    }
    return make_float4(f[0], f[1], f[2], f[3]);
}

// Four storage-type values from p widened to float32 (exact, so already tf32), zero from index `valid` on. vector: p
// is 8-byte aligned.
__device__ __forceinline__ float4 load4_scalars(const scalar_t* p, int valid, bool vector) {
    float f[4] = {0.f, 0.f, 0.f, 0.f};
    if (vector && valid >= 4) {
        const uint2 raw = *reinterpret_cast<const uint2*>(p);
        const scalar_t* s = reinterpret_cast<const scalar_t*>(&raw);
#pragma unroll
        for (int i = 0; i < 4; ++i) f[i] = to_float(s[i]);
    } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if (i < valid) f[i] = to_float(p[i]);
        }
    }
    return make_float4(f[0], f[1], f[2], f[3]);
}

// Expand: y[rows, c] += v[rows, rank_offset ..< +rank] · B[c - output_offset] for each piece, as m16n8k8 tf32 MMAs
// (v rounded to tf32, 10 mantissa bits; B's 16-bit values are exact in tf32; f32 accumulate, one rounding of y).
// grid: (tiles, ceil(widest piece / EXPAND_COLUMNS), pieces); block: 4 warps. Block (tile, c, p) adds piece p's
// columns [c·128, +128) of its tile, each warp 32 of them as 4 n-tiles, over the piece's rank 16 at a time (a rank
// rounds up to 16, never to the widest rank). Thread (g, t) reads k values 4t ..< +4 of v's rows g and g+8 and of B
// row (column) g: MMA j ∈ {0, 1} takes k 4t+2j as its k t and 4t+2j+1 as its k t+4, for v and B alike.
#define EXPAND_COLUMNS 128
#define EXPAND_WARPS 4
// Expand work item (tile, column block, piece) (see sgmv_expand). v is read through L2 (ld.cg): in sgmv_lora another
// block of the same launch wrote it.
__device__ __forceinline__ void expand_item(const float* v, scalar_t* __restrict__ y, const LoraSlot* __restrict__ slots,
                                            const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                            const int* __restrict__ tile_slot, int v_width, int y_width, int tile, int column_block,
                                            int piece_index) {
    const int slot_index = tile_slot[tile];
    if (slot_index < 0) return;
    // A reference, not a copy: indexing a local copy's pieces by a run-time index would put it in local memory.
    const LoraSlot& slot = slots[slot_index];
    const int first = tile_start[tile], rows = tile_end[tile] - first;
    if (slot.a == nullptr || piece_index >= slot.piece_count || rows <= 0) return;
    const LoraPiece& piece = slot.pieces[piece_index];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int warp_first = column_block * EXPAND_COLUMNS + warp * 32;  // the warp's first column within the piece
    const int width = piece.output_width, rank = piece.rank;
    if (warp_first >= width) return;  // whole warps only; no barrier inside the item
    const bool vector_v = v_width % 4 == 0 && piece.rank_offset % 4 == 0 && (size_t)v % 16 == 0;
    const bool vector_b = rank % 4 == 0 && (size_t)piece.b % 8 == 0;
    const float* v0 = v + (size_t)(first + g) * v_width + piece.rank_offset;  // rows past the tile are never read
    const float* v1 = v0 + (size_t)8 * v_width;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < rank; k0 += 16) {
        const int k = k0 + 4 * t, valid = rank - k;
        const float4 lo = load4_floats(v0 + k, g < rows ? valid : 0, vector_v);
        const float4 hi = load4_floats(v1 + k, g + 8 < rows ? valid : 0, vector_v);
        const unsigned a0[4] = {to_tf32(lo.x), to_tf32(hi.x), to_tf32(lo.y), to_tf32(hi.y)};
        const unsigned a1[4] = {to_tf32(lo.z), to_tf32(hi.z), to_tf32(lo.w), to_tf32(hi.w)};
        float4 b[4];
#pragma unroll
        for (int n = 0; n < 4; ++n) {
            const int column = warp_first + n * 8 + g;
            if (warp_first + n * 8 < width) b[n] = load4_scalars(piece.b + (size_t)column * rank + k, column < width ? valid : 0, vector_b);
        }
#pragma unroll
        for (int n = 0; n < 4; ++n) {
            if (warp_first + n * 8 < width) {  // the same for the whole warp, as the MMA needs
                mma_16x8x8_tf32(acc[n], a0[0], a0[1], a0[2], a0[3], __float_as_uint(b[n].x), __float_as_uint(b[n].y));
                mma_16x8x8_tf32(acc[n], a1[0], a1[1], a1[2], a1[3], __float_as_uint(b[n].z), __float_as_uint(b[n].w));
            }
        }
    }
    // C fragment element (n, i) is row g + 8·(i / 2), column n·8 + 2t + i % 2.
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i / 2), column = warp_first + n * 8 + 2 * t + i % 2;
            if (row < rows && column < width) {
                scalar_t* target = y + (size_t)(first + row) * y_width + piece.output_offset + column;
                from_float(target, to_float(*target) + acc[n][i]);
            }
        }
    }
}

extern "C" __global__ void sgmv_expand(const float* __restrict__ v, scalar_t* __restrict__ y, const LoraSlot* __restrict__ slots,
                                       const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                       const int* __restrict__ tile_slot, int v_width, int y_width) {
    expand_item(v, y, slots, tile_start, tile_end, tile_slot, v_width, y_width, blockIdx.x, blockIdx.y, blockIdx.z);
}

// Shrink and expand in one launch (a decode-sized step: few tiles): 1-D grid of tiles · rank_blocks · splits shrink
// items then tiles · column_blocks · pieces expand items, block: 4 warps. A block takes the next item from a ticket
// counter, not from blockIdx, so by the time any block holds an expand item every shrink item is held by a running
// block that waits for nothing: the expand's wait for its tile always ends. A shrink item counts itself done in
// tile_done[tile] after its v columns are written (the last split of a group writes them before counting); an expand
// item starts once its tile's count is rank_blocks · splits. counters: [0] ticket, [1] blocks finished,
// [2 ..< 2 + tiles] tile_done, then the shrink's split counters; the last block to finish zeroes the first three, the
// split counters zero themselves. A wait of millions of polls (seconds; a bug) traps, a launch error, not a hang.
extern "C" __global__ void sgmv_lora(const scalar_t* __restrict__ x, float* v, scalar_t* __restrict__ y,
                                     const LoraSlot* __restrict__ slots, const int* __restrict__ tile_start,
                                     const int* __restrict__ tile_end, const int* __restrict__ tile_slot, float* __restrict__ partial,
                                     int* __restrict__ counters, int tiles, int in_width, int v_width, int y_width, int split_width,
                                     int rank_blocks, int splits, int column_blocks, int pieces) {
    __shared__ int item;
    if (threadIdx.x == 0) item = atomicAdd(&counters[0], 1);
    __syncthreads();
    int* tile_done = counters + 2;
    const int shrink_items = tiles * rank_blocks * splits;
    if (item < shrink_items) {
        const int tile = item / (rank_blocks * splits), rank_block = item / splits % rank_blocks, split = item % splits;
        shrink_item(x, v, slots, tile_start, tile_end, tile_slot, partial, tile_done + tiles, in_width, v_width, split_width, tile,
                    rank_block, split, rank_blocks, splits);
        __threadfence();  // this block's v writes are visible before it counts itself done
        __syncthreads();
        if (threadIdx.x == 0) atomicAdd(&tile_done[tile], 1);
    } else {
        const int e = item - shrink_items, per_tile = column_blocks * pieces;
        const int tile = e / per_tile;
        if (threadIdx.x == 0) {
            const volatile int* done = tile_done + tile;
            for (int spins = 0; *done < rank_blocks * splits; ++spins) {
                if (spins > (1 << 22)) __trap();
                __nanosleep(64);
            }
            __threadfence();
        }
        __syncthreads();
        expand_item(v, y, slots, tile_start, tile_end, tile_slot, v_width, y_width, tile, e % per_tile % column_blocks,
                    e % per_tile / column_blocks);
    }
    __syncthreads();
    if (threadIdx.x == 0 && atomicAdd(&counters[1], 1) == (int)gridDim.x - 1) {
        for (int i = 0; i < tiles; ++i) tile_done[i] = 0;
        counters[1] = 0;
        counters[0] = 0;
    }
}
