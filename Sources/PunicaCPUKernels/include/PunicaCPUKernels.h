// Hot CPU kernels in one variant per vector unit, chosen at run time (the package itself targets baseline
// x86-64, so the same binary runs everywhere). Every variant computes the same sums; only the order of the
// additions differs. The Swift side (PunicaCPU/VectorKernels.swift) holds a plain reference with this shape.
#ifndef PUNICA_CPU_KERNELS_H
#define PUNICA_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct punica_kernels {
    /// Short name for logs and test descriptions: "avx512", "avx2", "sse2", "neon".
    const char *name;
    /// Σ x[i]·y[i] over n elements.
    float (*dot)(const float *x, const float *y, ptrdiff_t n);
    /// The same with y in bfloat16 (the high half of a float32), widened in registers: a decode row's GEMV, with
    /// dots4_bf16's one chain of fused multiply-adds per row would be bound by their latency.
    float (*dot_bf16)(const float *x, const uint16_t *y, ptrdiff_t n);
    /// y[j] = Σ x[i]·w[j·ldw + i] for j < rows: one row of x against a block of weight rows (decode's GEMV).
    void (*gemv)(const float *x, const float *w, ptrdiff_t ldw, ptrdiff_t rows, ptrdiff_t n, float *y);
    /// The same with w in bfloat16.
    void (*gemv_bf16)(const float *x, const uint16_t *w, ptrdiff_t ldw, ptrdiff_t rows, ptrdiff_t n, float *y);
    /// y[r·count + j] = Σ x[r·ldx + i]·w[j·ldw + i] for r < rows (1 ≤ rows ≤ 8), j < count: a few rows of x against a
    /// block of weight rows in one call (batched decode's GEMM), each weight row read from memory once for all of x's rows.
    void (*gemv8)(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const float *w, ptrdiff_t ldw, ptrdiff_t count,
                  ptrdiff_t n, float *y);
    /// The same with w in bfloat16 (the high half of a float32), widened in registers.
    void (*gemv8_bf16)(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const uint16_t *w, ptrdiff_t ldw, ptrdiff_t count,
                       ptrdiff_t n, float *y);
    /// y[i] += a·x[i] over n elements.
    void (*axpy)(ptrdiff_t n, float a, const float *x, float *y);
    /// y[i] += Σ_p a[p]·x[p·ldx + i] for p < count, i < n: weighted rows of x added to y in one call (attention's
    /// values over one page of the cache), in the order of count axpy calls.
    void (*axpy_rows)(ptrdiff_t n, ptrdiff_t count, const float *a, const float *x, ptrdiff_t ldx, float *y);
    /// The same with x in bfloat16 (a bfloat16 KV cache's values).
    void (*axpy_rows_bf16)(ptrdiff_t n, ptrdiff_t count, const float *a, const uint16_t *x, ptrdiff_t ldx, float *y);
    /// tile[4][8] = Σ_p a[p][0..<4] ⊗ b[p][0..<8]: the packed GEMM's micro-kernel (a: [depth][4], b: [depth][8]).
    void (*tile4x8)(ptrdiff_t depth, const float *a, const float *b, float *tile);
    /// y[r·ldy + j] = alpha·Σ_p x[r·ldx + p]·w[j·ldw + p] + beta·y[r·ldy + j] for r < m, j < n, p < k (y not read when
    /// beta == 0): y = x·wᵀ with both operands contiguous along k (a layer's GEMM, W [out, in]), unpacked.
    void (*gemm_nt)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, float alpha, const float *x, ptrdiff_t ldx, const float *w,
                    ptrdiff_t ldw, float beta, float *y, ptrdiff_t ldy);
    /// out[i] = silu(gate[i])·up[i] = gate[i] / (1 + exp(−gate[i]))·up[i] over n elements (a SwiGLU MLP's activation).
    void (*silu_mul)(ptrdiff_t n, const float *gate, const float *up, float *out);
    /// out[i] = gelu_tanh(gate[i])·up[i], GELU's tanh approximation (Gemma's MLP).
    void (*gelu_tanh_mul)(ptrdiff_t n, const float *gate, const float *up, float *out);
    /// x[i] = exp(x[i] − shift) over n elements; returns their sum (a softmax's numerators and denominator).
    float (*exp_shifted)(ptrdiff_t n, float *x, float shift);
} punica_kernels;

/// The variants this CPU can run, best first, ending with the baseline (never empty). Sets *count.
const punica_kernels *const *punica_kernels_supported(ptrdiff_t *count);

/// The thread pool (pool.c): `punica_pool_start(threads)` once starts threads - 1 workers; `punica_pool_run` runs
/// task(context, i) for every i < count on them and the calling thread, and returns when all have run. A call from
/// inside a task, or while another thread's job runs, runs its indices inline instead.
typedef void (*punica_task)(void *context, ptrdiff_t index);
void punica_pool_start(int threads);
void punica_pool_run(ptrdiff_t count, punica_task task, void *context);

#endif
