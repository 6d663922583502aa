#include "common.cuh"

// Punica's SGMV for one (fused) projection. The host cuts every segment (rows sharing one adapter) into tiles of at
// most 16 rows: tile i covers rows [tile_start[i], tile_end[i]) with the adapter in slot tile_slot[i]. `slots` holds
// every resident adapter's weights for this projection (see common.cuh).

// Shrink: v[rows, r] = x[rows] · A[r]ᵀ for r < rank, in float32.
// grid: (tiles, ceil(16 · max rank / 8)); block: 256 = 8 warps. Each warp computes one (row of the tile, rank row)
// dot product over `in`, 16 bytes per lane per load, so even one long segment spreads over hundreds of warps.
// A decode tile has one row: its warps read A exactly once; longer tiles re-read A rows from L2.
extern "C" __global__ void sgmv_shrink(const scalar_t* x, float* v, const LoraSlot* slots, const int* tile_start,
                                       const int* tile_end, const int* tile_slot, int in_width, int v_width) {
    const LoraSlot slot = slots[tile_slot[blockIdx.x]];
    const int lane = threadIdx.x % 32, pair = blockIdx.y * 8 + threadIdx.x / 32;
    if (slot.a == nullptr) return;
    const int row = tile_start[blockIdx.x] + pair / slot.rank, r = pair % slot.rank;
    if (row >= tile_end[blockIdx.x]) return;
    const scalar_t* a = slot.a + (size_t)r * in_width;
    const scalar_t* xr = x + (size_t)row * in_width;
    float sum = 0.f;
    if (in_width % 8 == 0) {
        float xa[8], aa[8];
        for (int i = lane * 8; i < in_width; i += 256) {
            load8(xr + i, xa);
            load8(a + i, aa);
#pragma unroll
            for (int e = 0; e < 8; ++e) sum += xa[e] * aa[e];
        }
    } else {
        for (int i = lane; i < in_width; i += 32) sum += to_float(xr[i]) * to_float(a[i]);
    }
    sum = warp_sum(sum);
    if (lane == 0) v[(size_t)row * v_width + r] = sum;
}

// Expand: y[rows, c] += v[rows, rank_offset ..< +rank] · B[c - output_offset] for the piece whose output columns
// hold c. grid: (tiles, ceil(y_width / 128)); block: 128, one thread per output column.
extern "C" __global__ void sgmv_expand(const float* v, scalar_t* y, const LoraSlot* slots, const int* tile_start,
                                       const int* tile_end, const int* tile_slot, int v_width, int y_width) {
    const LoraSlot slot = slots[tile_slot[blockIdx.x]];
    const int column = blockIdx.y * blockDim.x + threadIdx.x;
    if (slot.a == nullptr || column >= y_width) return;
    int found = -1;
    for (int p = 0; p < slot.piece_count; ++p) {
        if (column >= slot.pieces[p].output_offset && column < slot.pieces[p].output_offset + slot.pieces[p].output_width) found = p;
    }
    if (found < 0) return;
    const LoraPiece piece = slot.pieces[found];
    const scalar_t* b = piece.b + (size_t)(column - piece.output_offset) * piece.rank;
    for (int row = tile_start[blockIdx.x]; row < tile_end[blockIdx.x]; ++row) {
        const float* vr = v + (size_t)row * v_width + piece.rank_offset;
        float sum = 0.f;
        for (int k = 0; k < piece.rank; ++k) sum += vr[k] * to_float(b[k]);
        scalar_t* target = y + (size_t)row * y_width + column;
        from_float(target, to_float(*target) + sum);
    }
}
