#include "common.cuh"

// Punica's SGMV for one (fused) projection. The host cuts every segment (rows sharing one adapter) into tiles of at
// most TILE_ROWS rows: tile i covers rows [tile_start[i], tile_end[i]) with the adapter in slot tile_slot[i]. `slots`
// holds every resident adapter's weights for this projection (see common.cuh). Accumulators are float32 registers,
// so each adapter weight is read from memory once per tile.
#define TILE_ROWS 16

// Shrink: v[rows, r] = x[rows] · A[r]ᵀ for r < rank, in float32.
// grid: (tiles, ceil(max rank / ranks_per_block)); block: 256. A block computes the (row, rank row) pairs of one tile
// and `ranks_per_block` rank rows, at most TILE_ROWS pairs; the host picks as many rank rows per block as keeps the
// grid at two blocks per multiprocessor or more. Threads stride the input width 16 bytes at a time.
extern "C" __global__ void sgmv_shrink(const scalar_t* __restrict__ x, float* __restrict__ v, const LoraSlot* __restrict__ slots,
                                       const int* __restrict__ tile_start, const int* __restrict__ tile_end,
                                       const int* __restrict__ tile_slot, int in_width, int v_width, int ranks_per_block) {
    const LoraSlot& slot = slots[tile_slot[blockIdx.x]];
    const scalar_t* a = slot.a;
    const int first_rank = blockIdx.y * ranks_per_block;
    if (a == nullptr || first_rank >= slot.rank) return;
    const int first = tile_start[blockIdx.x], rows = tile_end[blockIdx.x] - first;
    const int ranks = min(ranks_per_block, slot.rank - first_rank), pairs = rows * ranks;
    const scalar_t* xs = x + (size_t)first * in_width;
    a += (size_t)first_rank * in_width;
    // Pair p is (row p / ranks, rank row first_rank + p % ranks).
    float sum[TILE_ROWS] = {};
    if (in_width % 8 == 0) {
        float aa[8], xa[8];
        for (int i = threadIdx.x * 8; i < in_width; i += blockDim.x * 8) {
#pragma unroll
            for (int p = 0; p < TILE_ROWS; ++p) {
                if (p < pairs) {
                    load8(xs + (size_t)(p / ranks) * in_width + i, xa);
                    load8(a + (size_t)(p % ranks) * in_width + i, aa);
#pragma unroll
                    for (int e = 0; e < 8; ++e) sum[p] += xa[e] * aa[e];
                }
            }
        }
    } else {
        for (int i = threadIdx.x; i < in_width; i += blockDim.x) {
#pragma unroll
            for (int p = 0; p < TILE_ROWS; ++p) {
                if (p < pairs) sum[p] += to_float(xs[(size_t)(p / ranks) * in_width + i]) * to_float(a[(size_t)(p % ranks) * in_width + i]);
            }
        }
    }
    // Block reduction of every pair's sum: warps first, then one partial per warp in shared memory.
    __shared__ float partial[TILE_ROWS][8];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int p = 0; p < TILE_ROWS; ++p) {
        if (p < pairs) {
            const float s = warp_sum(sum[p]);
            if (lane == 0) partial[p][warp] = s;
        }
    }
    __syncthreads();
    if (threadIdx.x < pairs) {
        float total = 0.f;
        for (int w = 0; w < blockDim.x / 32; ++w) total += partial[threadIdx.x][w];
        v[(size_t)(first + threadIdx.x / ranks) * v_width + first_rank + threadIdx.x % ranks] = total;
    }
}

// Expand: y[rows, c] += v[rows, rank_offset ..< +rank] · B[c - output_offset] for the piece whose output columns
// hold c. grid: (tiles, ceil(y_width / 128)); block: 128, one thread per output column, reading its row of B
// (rank contiguous scalars) 16 bytes at a time. Tile rows go EXPAND_ROWS at a time (B rows then come from L1):
// few accumulators keep registers, and so occupancy, where decode steps need it.
#define EXPAND_ROWS 4
extern "C" __global__ void sgmv_expand(const float* __restrict__ v, scalar_t* __restrict__ y, const LoraSlot* __restrict__ slots,
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
    for (int first = tile_start[blockIdx.x], end = tile_end[blockIdx.x]; first < end; first += EXPAND_ROWS) {
        const int rows = min(EXPAND_ROWS, end - first);
        const float* vs = v + (size_t)first * v_width + piece.rank_offset;
        float sum[EXPAND_ROWS] = {};
        if (rank % 8 == 0) {
            float bb[8];
            for (int k = 0; k < rank; k += 8) {
                load8(b + k, bb);
#pragma unroll
                for (int row = 0; row < EXPAND_ROWS; ++row) {
                    if (row < rows) {
#pragma unroll
                        for (int e = 0; e < 8; ++e) sum[row] += vs[(size_t)row * v_width + k + e] * bb[e];
                    }
                }
            }
        } else {
            for (int k = 0; k < rank; ++k) {
                const float bk = to_float(b[k]);
#pragma unroll
                for (int row = 0; row < EXPAND_ROWS; ++row) {
                    if (row < rows) sum[row] += vs[(size_t)row * v_width + k] * bk;
                }
            }
        }
#pragma unroll
        for (int row = 0; row < EXPAND_ROWS; ++row) {
            if (row < rows) {
                scalar_t* target = y + (size_t)(first + row) * y_width + column;
                from_float(target, to_float(*target) + sum[row]);
            }
        }
    }
}
