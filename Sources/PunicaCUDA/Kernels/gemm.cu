#include "common.cuh"

// y[m, n] = x[m, k] · w[n, k]ᵀ for decode-sized m (1–64 rows): every weight is read once, so the kernel is a
// weight stream and should run at memory speed; cuBLAS's kernels for these skinny shapes leave bandwidth unused.
//
// grid: (ceil(n / 64), splits); block: 128 threads = 4 warps. Block (c, s) computes output columns 64c ..< 64c + 64
// over the input columns [s · k_split, (s + 1) · k_split); warp w takes 16 of those columns (two 8-column blocks of
// mma.sync m16n8k16) for all rows (M_TILES blocks of 16 rows; rows past m load as zeros and are never written).
// Inputs pass through shared memory GEMM_K columns at a time, STAGES steps in flight (cp.async), so each block keeps
// ~STAGES × 8 KB of weights loading. k must be a multiple of 8 (16-byte copies).
//
// With several splits, each block writes its float32 partial sums to `partials` [splits][m][n]; the last block of a
// column block to finish (a counter per column block in `counters`, which it resets to 0 for the next launch) adds
// the splits in split order and writes y: the result does not depend on which block finished first.
#define GEMM_COLUMNS 64
#define GEMM_K 64
#define GEMM_STRIDE (GEMM_K + 8)  // scalars; 16 bytes of padding put ldmatrix's 8 rows on distinct banks
#define STAGES 4

template <int M_TILES>
__device__ __forceinline__ void skinny_gemm(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w, scalar_t* __restrict__ y,
                                            float* __restrict__ partials, int* __restrict__ counters, int m, int n, int k, int k_split) {
    constexpr int ROWS = 16 * M_TILES, CHUNKS = GEMM_K / 8;
    extern __shared__ uint4 shared[];
    scalar_t* w_tiles = reinterpret_cast<scalar_t*>(shared);           // [STAGES][GEMM_COLUMNS][GEMM_STRIDE]
    scalar_t* x_tiles = w_tiles + STAGES * GEMM_COLUMNS * GEMM_STRIDE;  // [STAGES][ROWS][GEMM_STRIDE]

    const int first_column = blockIdx.x * GEMM_COLUMNS, splits = gridDim.y;
    const int k_begin = blockIdx.y * k_split, k_end = min(k, k_begin + k_split);
    const int steps = k_end > k_begin ? (k_end - k_begin + GEMM_K - 1) / GEMM_K : 0;
    auto load = [&](int step) {
        if (step < steps) {
            const int k0 = k_begin + step * GEMM_K;
            scalar_t* wt = w_tiles + (step % STAGES) * GEMM_COLUMNS * GEMM_STRIDE;
            scalar_t* xt = x_tiles + (step % STAGES) * ROWS * GEMM_STRIDE;
#pragma unroll
            for (int j = 0; j < GEMM_COLUMNS * CHUNKS / 128; ++j) {
                const int i = threadIdx.x + j * 128, r = i / CHUNKS, c = k0 + (i % CHUNKS) * 8;
                const bool valid = first_column + r < n && c < k_end;
                cp_async16(wt + r * GEMM_STRIDE + (i % CHUNKS) * 8, valid ? w + (size_t)(first_column + r) * k + c : w, valid);
            }
#pragma unroll
            for (int j = 0; j < ROWS * CHUNKS / 128; ++j) {
                const int i = threadIdx.x + j * 128, r = i / CHUNKS, c = k0 + (i % CHUNKS) * 8;
                const bool valid = r < m && c < k_end;
                cp_async16(xt + r * GEMM_STRIDE + (i % CHUNKS) * 8, valid ? x + (size_t)r * k + c : x, valid);
            }
        }
        cp_async_commit();  // an empty group past the last step keeps the wait counts uniform
    };

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    float acc[M_TILES][2][4] = {};
#pragma unroll
    for (int step = 0; step < STAGES - 1; ++step) load(step);
    for (int step = 0; step < steps; ++step) {
        cp_async_wait<STAGES - 2>();  // this step's group has landed
        __syncthreads();              // for every thread, and every thread is done with the buffer refilled next
        load(step + STAGES - 1);
        const scalar_t* wt = w_tiles + (step % STAGES) * GEMM_COLUMNS * GEMM_STRIDE;
        const scalar_t* xt = x_tiles + (step % STAGES) * ROWS * GEMM_STRIDE;
#pragma unroll
        for (int kk = 0; kk < GEMM_K / 16; ++kk) {
            // B operand: weight rows are its columns (as K rows in attention.cu): b0, b1 of both 8-column blocks.
            unsigned b[4];
            ldmatrix_x4(b, wt + (warp * 16 + lane % 8 + (lane / 16) * 8) * GEMM_STRIDE + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
            for (int mt = 0; mt < M_TILES; ++mt) {
                unsigned a[4];
                ldmatrix_x4(a, xt + (mt * 16 + lane % 16) * GEMM_STRIDE + kk * 16 + (lane / 16) * 8);
                mma_m16n8k16(acc[mt][0], a, b[0], b[1], scalar_t());
                mma_m16n8k16(acc[mt][1], a, b[2], b[3], scalar_t());
            }
        }
    }
    cp_async_wait<0>();

    // C fragments: acc[mt][nb] holds rows 16mt + g (0, 1) and 16mt + g + 8 (2, 3), columns 8nb + 2t and 8nb + 2t + 1
    // of the warp's 16. One split writes y; several write their partial sums.
#pragma unroll
    for (int mt = 0; mt < M_TILES; ++mt) {
#pragma unroll
        for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = mt * 16 + g + 8 * (e / 2), column = first_column + warp * 16 + nb * 8 + 2 * t + e % 2;
                if (row >= m || column >= n) continue;
                if (splits == 1) {
                    from_float(y + (size_t)row * n + column, acc[mt][nb][e]);
                } else {
                    partials[((size_t)blockIdx.y * m + row) * n + column] = acc[mt][nb][e];
                }
            }
        }
    }
    if (splits == 1) return;
    __threadfence();  // the partials are visible device-wide before the counter says so
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.x], 1) == splits - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = threadIdx.x; i < m * GEMM_COLUMNS; i += blockDim.x) {
        const int row = i / GEMM_COLUMNS, column = first_column + i % GEMM_COLUMNS;
        if (column >= n) continue;
        float sum = 0.f;
        for (int s = 0; s < splits; ++s) sum += __ldcg(partials + ((size_t)s * m + row) * n + column);  // L2, not a stale L1
        from_float(y + (size_t)row * n + column, sum);
    }
    if (threadIdx.x == 0) counters[blockIdx.x] = 0;
}

extern "C" __global__ void skinny_gemm16(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w, scalar_t* __restrict__ y,
                                         float* __restrict__ partials, int* __restrict__ counters, int m, int n, int k, int k_split) {
    wait_for_previous_kernel();
    skinny_gemm<1>(x, w, y, partials, counters, m, n, k, k_split);
}
extern "C" __global__ void skinny_gemm32(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w, scalar_t* __restrict__ y,
                                         float* __restrict__ partials, int* __restrict__ counters, int m, int n, int k, int k_split) {
    wait_for_previous_kernel();
    skinny_gemm<2>(x, w, y, partials, counters, m, n, k, k_split);
}
extern "C" __global__ void skinny_gemm64(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w, scalar_t* __restrict__ y,
                                         float* __restrict__ partials, int* __restrict__ counters, int m, int n, int k, int k_split) {
    wait_for_previous_kernel();
    skinny_gemm<4>(x, w, y, partials, counters, m, n, k, k_split);
}
