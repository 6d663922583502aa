#include "common.cuh"

// Punica's SGMV for one (fused) projection. The host cuts every segment (rows sharing one adapter) into tiles: tile i
// covers rows [tile_start[i], tile_end[i]) with the adapter in slot tile_slot[i]. `slots` holds every resident
// adapter's weights for this projection (see common.cuh). Accumulators are float32 registers, so each adapter weight
// is read from memory once per block pass (a tile, or 4 of its rows), not once per row.

// Shrink: v[rows, r] = x[rows] · A[r]ᵀ for r < rank, in float32.
// grid: (tiles, ceil(ranks / SHRINK_RANKS)); block: SHRINK_THREADS. A block takes SHRINK_RANKS rank rows of one tile, its rows
// ROWS at a time: each pass loads ROWS x rows and SHRINK_RANKS A rows 16 bytes at a time per thread and keeps all their
// products in registers, so x and A are each read once per pass. Two entry points: ROWS = 1 for steps whose tiles are
// single rows (decode, every recorded step: most of a multi-LoRA server's steps), 4 for longer tiles.
#define SHRINK_RANKS 4
#define SHRINK_THREADS 256  // a constant stride lets the compiler overlap the loads of consecutive steps
template <int ROWS>
__device__ __forceinline__ void shrink_tile(const scalar_t* __restrict__ x, float* __restrict__ v, const LoraSlot* __restrict__ slots,
                                            const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                            const int* __restrict__ tile_slot, int in_width, int v_width) {
    const LoraSlot& slot = slots[tile_slot[blockIdx.x]];
    const int first_rank = blockIdx.y * SHRINK_RANKS;
    if (slot.a == nullptr || first_rank >= slot.rank) return;
    const int ranks = min(SHRINK_RANKS, slot.rank - first_rank);
    const scalar_t* a = slot.a + (size_t)first_rank * in_width;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __shared__ float partial[ROWS * SHRINK_RANKS][SHRINK_THREADS / 32];
    for (int first = tile_start[blockIdx.x], end = tile_end[blockIdx.x]; first < end; first += ROWS) {
        const int rows = min(ROWS, end - first);
        const scalar_t* xs = x + (size_t)first * in_width;
        float sum[ROWS][SHRINK_RANKS] = {};
        if (in_width % 8 == 0) {
#pragma unroll (ROWS == 1 ? 2 : 1)  // a single row has the registers to overlap two steps' loads
            for (int i = threadIdx.x * 8; i < in_width; i += SHRINK_THREADS * 8) {
                // Rows past the tile load its last row again (unconditional loads stay in flight together); unused.
                float xa[ROWS][8];
#pragma unroll
                for (int row = 0; row < ROWS; ++row) load8(xs + (size_t)min(row, rows - 1) * in_width + i, xa[row]);
#pragma unroll
                for (int r = 0; r < SHRINK_RANKS; ++r) {
                    if (r < ranks) {
                        float aa[8];
                        load8(a + (size_t)r * in_width + i, aa);
#pragma unroll
                        for (int row = 0; row < ROWS; ++row) {
#pragma unroll
                            for (int e = 0; e < 8; ++e) sum[row][r] += xa[row][e] * aa[e];
                        }
                    }
                }
            }
        } else {  // rows not 16-byte aligned (no model has such widths; tests do)
            for (int i = threadIdx.x; i < in_width; i += SHRINK_THREADS) {
#pragma unroll
                for (int row = 0; row < ROWS; ++row) {
#pragma unroll
                    for (int r = 0; r < SHRINK_RANKS; ++r) {
                        if (row < rows && r < ranks) sum[row][r] += to_float(xs[(size_t)row * in_width + i]) * to_float(a[(size_t)r * in_width + i]);
                    }
                }
            }
        }
        // Block reduction of every (row, rank) sum: warps first, then one partial per warp in shared memory.
#pragma unroll
        for (int row = 0; row < ROWS; ++row) {
#pragma unroll
            for (int r = 0; r < SHRINK_RANKS; ++r) {
                const float s = warp_sum(sum[row][r]);
                if (lane == 0) partial[row * SHRINK_RANKS + r][warp] = s;
            }
        }
        __syncthreads();
        const int row = threadIdx.x / SHRINK_RANKS, r = threadIdx.x % SHRINK_RANKS;
        if (row < rows && r < ranks) {
            float total = 0.f;
#pragma unroll
            for (int w = 0; w < SHRINK_THREADS / 32; ++w) total += partial[threadIdx.x][w];
            v[(size_t)(first + row) * v_width + first_rank + r] = total;
        }
        __syncthreads();  // partial is reused by the next pass
    }
}

extern "C" __global__ void sgmv_shrink(const scalar_t* __restrict__ x, float* __restrict__ v, const LoraSlot* __restrict__ slots,
                                       const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                       const int* __restrict__ tile_slot, int in_width, int v_width) {
    wait_for_previous_kernel();
    shrink_tile<4>(x, v, slots, tile_start, tile_end, tile_slot, in_width, v_width);
}

extern "C" __global__ void sgmv_shrink_row(const scalar_t* __restrict__ x, float* __restrict__ v, const LoraSlot* __restrict__ slots,
                                           const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                           const int* __restrict__ tile_slot, int in_width, int v_width) {
    wait_for_previous_kernel();
    shrink_tile<1>(x, v, slots, tile_start, tile_end, tile_slot, in_width, v_width);
}

// Shrink on tensor cores, for segments of 16 rows or more (prefill chunks, many decode rows on one adapter): the
// CUDA-core shrink above reads x again for every rank row, this one reads each x row once per 64 ranks.
// v[rows, r] += x[rows, k_begin ..< k_end] · A[r, same]ᵀ, added with atomics into v (zeroed before), so the input
// width can be split over blocks: grid (tiles, ceil(max rank / 64), ceil(in_width / k_split)); block: 128 = 4 warps,
// warp w the tile's rows 16w ..< 16w + 16 against the 64-rank chunk (8 column blocks of mma.sync m16n8k16). The
// tile's x rows and the chunk's A rows pass through shared memory SHRINK_MMA_K columns at a time, double-buffered
// with cp.async; rows past the tile, ranks past the slot's rank and columns past k_end load as zeros, and are never
// written. k_split is a multiple of SHRINK_MMA_K.
#define MMA_TILE_ROWS 64
#define MMA_RANKS 64
// Input columns per pipeline step of the shrink: each step waits for one cp.async round trip, so few long steps (a
// 4 096-row prefill's qkv shrink: 35.5 µs in steps of 32 columns, 30.2 in steps of 64, against ~8 µs of x bytes).
#define SHRINK_MMA_K 64
#define MMA_K 32  // ranks per step of the expand
// Rows of the tiles in shared memory, in scalars: 16 bytes of padding put ldmatrix's 8 rows on distinct banks.
#define SHRINK_MMA_STRIDE (SHRINK_MMA_K + 8)
#define MMA_STRIDE (MMA_K + 8)
extern "C" __global__ void sgmv_shrink_mma(const scalar_t* __restrict__ x, float* __restrict__ v, const LoraSlot* __restrict__ slots,
                                           const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                           const int* __restrict__ tile_slot, int in_width, int v_width, int k_split) {
    wait_for_previous_kernel();
    const LoraSlot& slot = slots[tile_slot[blockIdx.x]];
    const int first_rank = blockIdx.y * MMA_RANKS, k_begin = blockIdx.z * k_split;
    const int first = tile_start[blockIdx.x], rows = tile_end[blockIdx.x] - first;
    if (slot.a == nullptr || first_rank >= slot.rank || rows <= 0 || k_begin >= in_width) return;
    const int ranks = min(MMA_RANKS, slot.rank - first_rank), k_end = min(in_width, k_begin + k_split);
    const scalar_t* xs = x + (size_t)first * in_width;
    const scalar_t* a = slot.a + (size_t)first_rank * in_width;

    __shared__ __align__(16) scalar_t x_tiles[2][MMA_TILE_ROWS * SHRINK_MMA_STRIDE];
    __shared__ __align__(16) scalar_t a_tiles[2][MMA_RANKS * SHRINK_MMA_STRIDE];
    constexpr int CHUNKS = SHRINK_MMA_K / 8;  // 16-byte copies per row and step
    auto load = [&](int step) {
        const int k0 = k_begin + step * SHRINK_MMA_K;
#pragma unroll
        for (int j = 0; j < MMA_TILE_ROWS * CHUNKS / 128; ++j) {
            const int i = threadIdx.x + j * 128, r = i / CHUNKS, c = k0 + (i % CHUNKS) * 8;
            scalar_t* x_to = &x_tiles[step % 2][r * SHRINK_MMA_STRIDE + (i % CHUNKS) * 8];
            scalar_t* a_to = &a_tiles[step % 2][r * SHRINK_MMA_STRIDE + (i % CHUNKS) * 8];
            const bool x_valid = c < k_end && r < rows, a_valid = c < k_end && r < ranks;
            if (in_width % 8 == 0) {
                cp_async16(x_to, x_valid ? xs + (size_t)r * in_width + c : x, x_valid);
                cp_async16(a_to, a_valid ? a + (size_t)r * in_width + c : slot.a, a_valid);
            } else {  // rows not 16-byte aligned: element by element (no model has such widths; tests do)
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    const bool in_row = c + e < k_end;
                    x_to[e] = x_valid && in_row ? xs[(size_t)r * in_width + c + e] : scalar_t(0.f);
                    a_to[e] = a_valid && in_row ? a[(size_t)r * in_width + c + e] : scalar_t(0.f);
                }
            }
        }
        cp_async_commit();
    };

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const bool warp_rows = warp * 16 < rows;  // warps wholly past the tile's rows only help load
    float acc[MMA_RANKS / 8][4] = {};
    const int steps = (k_end - k_begin + SHRINK_MMA_K - 1) / SHRINK_MMA_K;
    load(0);
    for (int step = 0; step < steps; ++step) {
        if (step + 1 < steps) {
            load(step + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const scalar_t* xt = x_tiles[step % 2];
        const scalar_t* at = a_tiles[step % 2];
        if (warp_rows) {
#pragma unroll
            for (int kk = 0; kk < SHRINK_MMA_K / 16; ++kk) {
                // A operand: the warp's 16 x rows; B operand: A's rank rows are its columns (as K rows in attention.cu).
                unsigned x_fragment[4];
                ldmatrix_x4(x_fragment, xt + (warp * 16 + lane % 16) * SHRINK_MMA_STRIDE + kk * 16 + (lane / 16) * 8);
#pragma unroll
                for (int jp = 0; jp < MMA_RANKS / 16; ++jp) {
                    if (jp * 16 < ranks) {
                        unsigned b[4];
                        ldmatrix_x4(b, at + (jp * 16 + lane % 8 + (lane / 16) * 8) * SHRINK_MMA_STRIDE + kk * 16 + ((lane / 8) % 2) * 8);
                        mma_m16n8k16(acc[2 * jp], x_fragment, b[0], b[1], scalar_t());
                        mma_m16n8k16(acc[2 * jp + 1], x_fragment, b[2], b[3], scalar_t());
                    }
                }
            }
        }
        __syncthreads();  // the buffer is refilled two steps later
    }
    if (!warp_rows) return;
    // C fragments: acc[j] holds rows g (0, 1) and g + 8 (2, 3) of the warp's 16, ranks 8j + 2t and 8j + 2t + 1.
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < MMA_RANKS / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = warp * 16 + g + 8 * (e / 2), rank = 8 * j + 2 * t + e % 2;
            if (row < rows && rank < ranks) atomicAdd(&v[(size_t)(first + row) * v_width + first_rank + rank], acc[j][e]);
        }
    }
}

// Expand: y[rows, c] += v[rows, rank_offset ..< +rank] · B[c - output_offset] for the piece whose output columns
// hold c. grid: (tiles, ceil(y_width / 128)); block: 128, one thread per output column, reading its row of B (rank
// contiguous scalars) 16 bytes at a time, for the tile's rows (at most ROWS: the host cuts segments so): few
// accumulators keep registers, and so occupancy, and a long segment still spreads over many blocks. Entry points for
// ROWS = 1 (single-row tiles, as the shrink) and 4.
template <int ROWS>
__device__ __forceinline__ void expand_tile(const float* __restrict__ v, scalar_t* __restrict__ y, const LoraSlot* __restrict__ slots,
                                            const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                            const int* __restrict__ tile_slot, int v_width, int y_width) {
    // A reference, not a copy: indexing a local copy's pieces by a run-time index would put it in local memory.
    const LoraSlot& slot = slots[tile_slot[blockIdx.x]];
    const int column = blockIdx.y * blockDim.x + threadIdx.x;
    if (slot.a == nullptr || column >= y_width) return;
    int found = -1;
    for (int p = 0; p < slot.piece_count; ++p) {
        if (column >= slot.pieces[p].output_offset && column < slot.pieces[p].output_offset + slot.pieces[p].output_width) found = p;
    }
    if (found < 0) return;
    const LoraPiece& piece = slot.pieces[found];
    const int rank = piece.rank;
    const scalar_t* b = piece.b + (size_t)(column - piece.output_offset) * rank;
    const int first = tile_start[blockIdx.x], rows = min(ROWS, tile_end[blockIdx.x] - first);
    if (rows <= 0) return;
    const float* vs = v + (size_t)first * v_width + piece.rank_offset;
    float sum[ROWS] = {};
    if (rank % 8 == 0 && v_width % 4 == 0 && piece.rank_offset % 4 == 0) {
        // Every thread of the block reads the same v: 16-byte loads, 4 times fewer than scalar ones.
        float bb[8], vv[8];
        for (int k = 0; k < rank; k += 8) {
            load8(b + k, bb);
#pragma unroll
            for (int row = 0; row < ROWS; ++row) {
                if (row < rows) {
                    load_float8(vs + (size_t)row * v_width + k, vv);
#pragma unroll
                    for (int e = 0; e < 8; ++e) sum[row] += vv[e] * bb[e];
                }
            }
        }
    } else {
        for (int k = 0; k < rank; ++k) {
            const float bk = to_float(b[k]);
#pragma unroll
            for (int row = 0; row < ROWS; ++row) {
                if (row < rows) sum[row] += vs[(size_t)row * v_width + k] * bk;
            }
        }
    }
#pragma unroll
    for (int row = 0; row < ROWS; ++row) {
        if (row < rows) {
            scalar_t* target = y + (size_t)(first + row) * y_width + column;
            from_float(target, to_float(*target) + sum[row]);
        }
    }
}

extern "C" __global__ void sgmv_expand(const float* __restrict__ v, scalar_t* __restrict__ y, const LoraSlot* __restrict__ slots,
                                       const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                       const int* __restrict__ tile_slot, int v_width, int y_width) {
    wait_for_previous_kernel();
    expand_tile<4>(v, y, slots, tile_start, tile_end, tile_slot, v_width, y_width);
}

extern "C" __global__ void sgmv_expand_row(const float* __restrict__ v, scalar_t* __restrict__ y, const LoraSlot* __restrict__ slots,
                                           const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                           const int* __restrict__ tile_slot, int v_width, int y_width) {
    wait_for_previous_kernel();
    expand_tile<1>(v, y, slots, tile_start, tile_end, tile_slot, v_width, y_width);
}

// Expand on tensor cores, for the tensor-core shrink's tiles: y[rows, c] += v[rows, rank_offset ..< +rank] · B[c]ᵀ,
// summed over the slot's pieces (each contributes only to its own output columns: B rows of other columns load as
// zeros). grid: (tiles, ceil(y_width / EXPAND_COLUMNS), MMA_TILE_ROWS / 16); block: 128 = 4 warps on the tile's 16
// rows blockIdx.z·16 ..< +16, warp w on the block's columns 32w ..< 32w + 32 (4 column blocks of mma.sync m16n8k16),
// MMA_K ranks at a time through shared memory: many small blocks, as the y tile each reads and writes is the bulk of
// the bytes. v is float32: it enters the MMA as two 16-bit parts, high = round(v) and low = round(v - high), so the
// products keep about twice the 16-bit precision (well below the output's rounding, as the CUDA-core expand's
// float32). Rows past the tile and ranks past the piece's rank load as zeros and are never written.
#define EXPAND_COLUMNS 128
extern "C" __global__ void sgmv_expand_mma(const float* __restrict__ v, scalar_t* __restrict__ y, const LoraSlot* __restrict__ slots,
                                           const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                           const int* __restrict__ tile_slot, int v_width, int y_width) {
    wait_for_previous_kernel();
    const LoraSlot& slot = slots[tile_slot[blockIdx.x]];
    const int first = tile_start[blockIdx.x] + blockIdx.z * 16, rows = min(16, tile_end[blockIdx.x] - first);
    const int first_column = blockIdx.y * EXPAND_COLUMNS;
    if (slot.a == nullptr || rows <= 0) return;
    __shared__ __align__(16) scalar_t v_high[16 * MMA_STRIDE], v_low[16 * MMA_STRIDE];
    __shared__ __align__(16) scalar_t b_tile[EXPAND_COLUMNS * MMA_STRIDE];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float acc[4][4] = {};
    for (int p = 0; p < slot.piece_count; ++p) {
        const LoraPiece& piece = slot.pieces[p];
        // The piece's columns within this block's (the same for every thread, so the barriers below are reached by all).
        const int from = max(first_column, piece.output_offset);
        const int to = min(min(first_column + EXPAND_COLUMNS, piece.output_offset + piece.output_width), y_width);
        if (from >= to) continue;
        for (int k0 = 0; k0 < piece.rank; k0 += MMA_K) {
            __syncthreads();  // the previous step's tiles are read
            for (int i = threadIdx.x; i < 16 * MMA_K; i += blockDim.x) {
                const int r = i / MMA_K, k = i % MMA_K;
                const float value = r < rows && k0 + k < piece.rank ? v[(size_t)(first + r) * v_width + piece.rank_offset + k0 + k] : 0.f;
                scalar_t high;
                from_float(&high, value);
                v_high[r * MMA_STRIDE + k] = high;
                from_float(&v_low[r * MMA_STRIDE + k], value - to_float(high));
            }
            if (piece.rank % 8 == 0) {  // B rows 16-byte aligned: 8 ranks per copy, whole copies in or past the rank
                constexpr int CHUNKS = MMA_K / 8;
                for (int i = threadIdx.x; i < EXPAND_COLUMNS * CHUNKS; i += blockDim.x) {
                    const int c = i / CHUNKS, k = k0 + (i % CHUNKS) * 8, column = first_column + c;
                    const bool valid = column >= from && column < to && k < piece.rank;
                    cp_async16(&b_tile[c * MMA_STRIDE + (i % CHUNKS) * 8],
                               valid ? piece.b + (size_t)(column - piece.output_offset) * piece.rank + k : piece.b, valid);
                }
                cp_async_commit();
                cp_async_wait<0>();
            } else {
                for (int i = threadIdx.x; i < EXPAND_COLUMNS * MMA_K; i += blockDim.x) {
                    const int c = i / MMA_K, k = i % MMA_K, column = first_column + c;
                    const bool valid = column >= from && column < to && k0 + k < piece.rank;
                    b_tile[c * MMA_STRIDE + k] = valid ? piece.b[(size_t)(column - piece.output_offset) * piece.rank + k0 + k] : scalar_t(0.f);
                }
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < MMA_K / 16; ++kk) {
                unsigned high[4], low[4];
                ldmatrix_x4(high, v_high + (lane % 16) * MMA_STRIDE + kk * 16 + (lane / 16) * 8);
                ldmatrix_x4(low, v_low + (lane % 16) * MMA_STRIDE + kk * 16 + (lane / 16) * 8);
#pragma unroll
                for (int jp = 0; jp < 2; ++jp) {
                    unsigned b[4];  // as the shrink's B operand: the columns' B rows are its columns
                    ldmatrix_x4(b, b_tile + (warp * 32 + jp * 16 + lane % 8 + (lane / 16) * 8) * MMA_STRIDE + kk * 16 + ((lane / 8) % 2) * 8);
                    mma_m16n8k16(acc[2 * jp], high, b[0], b[1], scalar_t());
                    mma_m16n8k16(acc[2 * jp + 1], high, b[2], b[3], scalar_t());
                    mma_m16n8k16(acc[2 * jp], low, b[0], b[1], scalar_t());
                    mma_m16n8k16(acc[2 * jp + 1], low, b[2], b[3], scalar_t());
                }
            }
        }
    }
    // The sums reach y through shared memory (over b_tile, read no more), so that y is read and written 16 bytes per
    // thread along a row: stored from the C fragments themselves, each warp instruction would touch 8 rows, with 4
    // times the memory transactions (the kernel was bound by them: 258 µs for a 4 096-row prefill's qkv).
    // C fragments: acc[j] holds rows g (0, 1) and g + 8 (2, 3), columns 8j + 2t and 8j + 2t + 1 of the warp's 32.
    constexpr int SUMS_STRIDE = EXPAND_COLUMNS + 4;  // floats; rows stay 16-byte aligned
    static_assert(16 * SUMS_STRIDE * sizeof(float) <= sizeof(b_tile), "the sums fit over b_tile");
    float* sums = reinterpret_cast<float*>(b_tile);
    const int g = lane / 4, t = lane % 4;
    __syncthreads();  // every warp has read b_tile
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) sums[(g + 8 * (e / 2)) * SUMS_STRIDE + warp * 32 + 8 * j + 2 * t + e % 2] = acc[j][e];
    }
    __syncthreads();
    auto piece_holding = [&](int column, int count) {  // the piece holding columns column ..< +count, or -1
        int found = -1;
        for (int p = 0; p < slot.piece_count; ++p) {
            if (column >= slot.pieces[p].output_offset && column + count <= slot.pieces[p].output_offset + slot.pieces[p].output_width) found = p;
        }
        return found;
    };
    for (int i = threadIdx.x; i < 16 * (EXPAND_COLUMNS / 8); i += blockDim.x) {
        const int row = i / (EXPAND_COLUMNS / 8), c = i % (EXPAND_COLUMNS / 8) * 8, column = first_column + c;
        if (row >= rows || column >= y_width) continue;
        scalar_t* target = y + (size_t)(first + row) * y_width + column;
        const float4* from = reinterpret_cast<const float4*>(sums + row * SUMS_STRIDE + c);
        const float4 low = from[0], high = from[1];
        const float delta[8] = {low.x, low.y, low.z, low.w, high.x, high.y, high.z, high.w};
        if (y_width % 8 == 0 && piece_holding(column, 8) >= 0) {
            float values[8];
            load8(target, values);
#pragma unroll
            for (int e = 0; e < 8; ++e) values[e] += delta[e];
            store8(target, values);
        } else {  // a chunk across a piece's edge or y's end: column by column (columns of no piece keep their bits)
            for (int e = 0; e < 8 && column + e < y_width; ++e) {
                if (piece_holding(column + e, 1) >= 0) from_float(target + e, to_float(target[e]) + delta[e]);
            }
        }
    }
}
