// Kernel variants: baseline (portable vector extensions: SSE2 on x86-64), AVX2+FMA and AVX-512 on x86-64 through
// per-function target attributes, NEON on arm64. Shapes and meanings are in the header.
#include "PunicaCPUKernels.h"
#include <stdlib.h>


static inline float widen_bf16(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    __builtin_memcpy(&result, &bits, sizeof result);
    return result;
}

// y[j] = dot(x, w + j·ldw, n) for j < rows: a decode row against a block of weight rows in one call, so the calls'
// overhead is paid once per block, not per row (rows of 288 weights take tens of nanoseconds each).
#define GEMV(ATTRIBUTES, NAME, DOT, WTYPE)                                                                    \
    ATTRIBUTES static void NAME(const float *x, const WTYPE *w, ptrdiff_t ldw, ptrdiff_t rows, ptrdiff_t n, float *y) { \
        for (ptrdiff_t j = 0; j < rows; j++) y[j] = DOT(x, w + j * ldw, n);                                  \
    }

// y[r·count + j] = dots of x's rows r < rows (≤ 8) with weight row j < count, through the variant's four-row dot
// (DOTS4: sums[r] = x[r·ldx ..< +n] · w, reading w once) on each group of four rows while the weight row is in L1:
// one call per block of weight rows, as GEMV.
#define GEMV8(ATTRIBUTES, NAME, DOTS4, WTYPE)                                                                 \
    ATTRIBUTES static void NAME(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const WTYPE *w, ptrdiff_t ldw, \
                                ptrdiff_t count, ptrdiff_t n, float *y) {                                     \
        for (ptrdiff_t j = 0; j < count; j++) {                                                               \
            for (ptrdiff_t first = 0; first < rows; first += 4) {                                             \
                float sums[4];                                                                                \
                ptrdiff_t group = rows - first < 4 ? rows - first : 4;                                        \
                DOTS4(x + first * ldx, ldx, group, w + j * ldw, n, sums);                                     \
                for (ptrdiff_t r = 0; r < group; r++) y[(first + r) * count + j] = sums[r];                   \
            }                                                                                                 \
        }                                                                                                     \
    }

// y += Σ_p a[p]·x[p·ldx ..< +n]: a page of attention values in one call (rows of head_dim floats are short).
#define AXPY_ROWS(ATTRIBUTES, NAME, AXPY, XTYPE)                                                              \
    ATTRIBUTES static void NAME(ptrdiff_t n, ptrdiff_t count, const float *a, const XTYPE *x, ptrdiff_t ldx, float *y) { \
        for (ptrdiff_t p = 0; p < count; p++) AXPY(n, a[p], x + p * ldx, y);                                  \
    }

// y[r·ldy + j] = alpha·Σ_p x[r·ldx + p]·w[j·ldw + p] + beta·y[r·ldy + j] for r < m, j < n (y only written when
// beta == 0): x·wᵀ with both operands contiguous along k, as a layer's GEMM reads x and W [out, in], with no packing.
// A register tile of R rows of x × C rows of w holds R·C vector sums along k, reduced once per NT_KC slice of k:
// the C weight rows' slice stays in L1 while every row of x meets it. Past the last row or column the tile rereads
// the last one (its sums are not stored) instead of branching in the loop.
#define NT_KC 1024
#define GEMM_NT(ATTRIBUTES, NAME, VEC, LANES, ZERO, LOAD, FMA, R, C, REDUCE)                                  \
    ATTRIBUTES static void NAME(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, float alpha, const float *x, ptrdiff_t ldx, \
                                const float *w, ptrdiff_t ldw, float beta, float *y, ptrdiff_t ldy) {         \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += C) {                                                             \
            const float *wr[C];                                                                               \
            for (int c = 0; c < C; c++) wr[c] = w + (j0 + c < n ? j0 + c : n - 1) * ldw;                      \
            ptrdiff_t columns = n - j0 < C ? n - j0 : C;                                                      \
            for (ptrdiff_t p0 = 0; p0 < k; p0 += NT_KC) {                                                     \
                ptrdiff_t p1 = p0 + NT_KC < k ? p0 + NT_KC : k, vectors_end = p0 + (p1 - p0) / LANES * LANES;  \
                for (ptrdiff_t i0 = 0; i0 < m; i0 += R) {                                                     \
                    const float *xr[R];                                                                       \
                    for (int r = 0; r < R; r++) xr[r] = x + (i0 + r < m ? i0 + r : m - 1) * ldx;              \
                    VEC s[R][C];                                                                              \
                    for (int r = 0; r < R; r++)                                                               \
                        for (int c = 0; c < C; c++) s[r][c] = ZERO;                                           \
                    ptrdiff_t p = p0;                                                                         \
                    for (; p < vectors_end; p += LANES) {                                                     \
                        VEC a[R];                                                                             \
                        for (int r = 0; r < R; r++) a[r] = LOAD(xr[r] + p);                                   \
                        for (int c = 0; c < C; c++) {                                                         \
                            VEC b = LOAD(wr[c] + p);                                                          \
                            for (int r = 0; r < R; r++) s[r][c] = FMA(a[r], b, s[r][c]);                      \
                        }                                                                                     \
                    }                                                                                         \
                    float sums[R][C];                                                                         \
                    for (int r = 0; r < R; r++) REDUCE(s[r], sums[r]);                                        \
                    for (; p < p1; p++)                                                                       \
                        for (int r = 0; r < R; r++)                                                           \
                            for (int c = 0; c < C; c++) sums[r][c] += xr[r][p] * wr[c][p];                    \
                    /* The first slice applies beta; later ones add to it. Full tiles: loops of C. */         \
                    float keep = p0 > 0 ? 1 : beta;                                                           \
                    for (int r = 0; r < R && i0 + r < m; r++) {                                               \
                        float *out = y + (i0 + r) * ldy + j0;                                                 \
                        if (columns == C && keep == 0) {                                                      \
                            for (int c = 0; c < C; c++) out[c] = alpha * sums[r][c];                          \
                        } else if (columns == C) {                                                            \
                            for (int c = 0; c < C; c++) out[c] = alpha * sums[r][c] + keep * out[c];          \
                        } else {                                                                              \
                            for (int c = 0; c < columns; c++)                                                 \
                                out[c] = alpha * sums[r][c] + (keep == 0 ? 0 : keep * out[c]);                \
                        }                                                                                     \
                    }                                                                                         \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
    }

// Element-wise exp and the activations built on it, the same code for every variant (VF: its float vector, VI: the
// int32 vector of as many lanes). exp(x) = 2ⁿ·eʳ with n = round(x/ln 2) and r = x − n·ln 2 (ln 2 in two parts, so
// n·ln2_hi is exact), eʳ a degree-6 polynomial fitted on [−ln2/2, ln2/2] (relative error < 1e-7), 2ⁿ built in the
// exponent bits. x is clamped to [−87, 88], where 2ⁿ stays a normal float. Rounding adds and subtracts 1.5·2²³,
// which needs no SSE4.1. Tails run through a zero-padded vector, so they get the same values as full vectors.
#define VECTOR_MATH(ATTRIBUTES, SUFFIX, VF, VI, LANES)                                                        \
    ATTRIBUTES static inline VF load_##SUFFIX(const float *p) { VF v; __builtin_memcpy(&v, p, sizeof v); return v; } \
    ATTRIBUTES static inline void store_##SUFFIX(float *p, VF v) { __builtin_memcpy(p, &v, sizeof v); }       \
    ATTRIBUTES static inline VF exp_##SUFFIX(VF x) {                                                          \
        const VF zero = {0};                                                                                  \
        x = __builtin_elementwise_min(__builtin_elementwise_max(x, zero - 87.0f), zero + 88.0f);              \
        VF n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;                                                 \
        VF r = (x - n * 0.693359375f) - n * -2.12194440e-4f;                                                  \
        VF p = zero + 1.37529650e-3f;                                                                         \
        p = p * r + 8.36613961e-3f;                                                                           \
        p = p * r + 4.16692086e-2f;                                                                           \
        p = p * r + 1.66665420e-1f;                                                                           \
        p = p * r + 4.99999911e-1f;                                                                           \
        p = (p * r + 1.0f) * r + 1.0f;                                                                        \
        VI bits = (__builtin_convertvector(n, VI) + 127) << 23;                                               \
        return p * (VF)bits;                                                                                  \
    }                                                                                                         \
    ATTRIBUTES static inline VF silu_mul_lanes_##SUFFIX(VF gate, VF up) { return gate / (1.0f + exp_##SUFFIX(-gate)) * up; } \
    /* ½·x·(1 + tanh z) = x / (1 + e^−2z), z = √(2/π)·(x + 0.044715·x³): no cancellation where tanh z ≈ −1. */ \
    ATTRIBUTES static inline VF gelu_tanh_mul_lanes_##SUFFIX(VF x, VF up) {                                  \
        VF z = 0.797884561f * (x + 0.044715f * x * x * x);                                                    \
        return x / (1.0f + exp_##SUFFIX(-2.0f * z)) * up;                                                     \
    }                                                                                                         \
    /* out = lanes(gate, up) over n elements; the tail through zero-padded vectors. Inlined with `lanes` known. */  \
    ATTRIBUTES static inline __attribute__((always_inline)) void gated_##SUFFIX(                              \
        ptrdiff_t n, const float *gate, const float *up, float *out, VF (*lanes)(VF, VF)) {                   \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + LANES <= n; i += LANES) store_##SUFFIX(out + i, lanes(load_##SUFFIX(gate + i), load_##SUFFIX(up + i))); \
        if (i < n) {                                                                                          \
            float g[LANES] = {0}, u[LANES] = {0}, o[LANES];                                                   \
            __builtin_memcpy(g, gate + i, (n - i) * sizeof(float));                                           \
            __builtin_memcpy(u, up + i, (n - i) * sizeof(float));                                             \
            store_##SUFFIX(o, lanes(load_##SUFFIX(g), load_##SUFFIX(u)));                                     \
            __builtin_memcpy(out + i, o, (n - i) * sizeof(float));                                            \
        }                                                                                                     \
    }                                                                                                         \
    ATTRIBUTES static void silu_mul_##SUFFIX(ptrdiff_t n, const float *gate, const float *up, float *out) {  \
        gated_##SUFFIX(n, gate, up, out, silu_mul_lanes_##SUFFIX);                                            \
    }                                                                                                         \
    ATTRIBUTES static void gelu_tanh_mul_##SUFFIX(ptrdiff_t n, const float *gate, const float *up, float *out) { \
        gated_##SUFFIX(n, gate, up, out, gelu_tanh_mul_lanes_##SUFFIX);                                       \
    }                                                                                                         \
    /* x[i] = exp(x[i] − shift); returns Σ x[i] (a softmax's numerators and their total). */                 \
    ATTRIBUTES static float exp_shifted_##SUFFIX(ptrdiff_t n, float *x, float shift) {                        \
        VF total = {0};                                                                                       \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + LANES <= n; i += LANES) {                                                                  \
            VF e = exp_##SUFFIX(load_##SUFFIX(x + i) - shift);                                                \
            store_##SUFFIX(x + i, e);                                                                         \
            total += e;                                                                                       \
        }                                                                                                     \
        float sum = 0;                                                                                        \
        for (int lane = 0; lane < LANES; lane++) sum += total[lane];                                          \
        if (i < n) {                                                                                          \
            float t[LANES] = {0};                                                                             \
            __builtin_memcpy(t, x + i, (n - i) * sizeof(float));                                              \
            store_##SUFFIX(t, exp_##SUFFIX(load_##SUFFIX(t) - shift));                                        \
            __builtin_memcpy(x + i, t, (n - i) * sizeof(float));                                              \
            for (ptrdiff_t j = 0; j < n - i; j++) sum += t[j];                                                \
        }                                                                                                     \
        return sum;                                                                                           \
    }

// MARK: - Baseline: 4-wide vectors, two chains for dot so the additions' latency hides.

typedef float v4 __attribute__((vector_size(16), aligned(4)));

static inline v4 load4(const float *p) { v4 v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void store4(float *p, v4 v) { __builtin_memcpy(p, &v, sizeof v); }
static inline float sum4(v4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }
static inline v4 load4_bf16(const uint16_t *p) {
    v4 v = {widen_bf16(p[0]), widen_bf16(p[1]), widen_bf16(p[2]), widen_bf16(p[3])};
    return v;
}

#define DOT_BASE(NAME, WTYPE, LOAD, WIDEN)                                                                    \
    static float NAME(const float *x, const WTYPE *y, ptrdiff_t n) {                                          \
        v4 s0 = {0}, s1 = {0};                                                                                \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 8 <= n; i += 8) {                                                                          \
            s0 += load4(x + i) * LOAD(y + i);                                                                 \
            s1 += load4(x + i + 4) * LOAD(y + i + 4);                                                         \
        }                                                                                                     \
        float sum = sum4(s0 + s1);                                                                            \
        for (; i < n; i++) sum += x[i] * WIDEN(y[i]);                                                         \
        return sum;                                                                                           \
    }

#define DOTS4_BASE(NAME, WTYPE, LOAD, WIDEN)                                                                  \
    static void NAME(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const WTYPE *w, ptrdiff_t n, float *sums) { \
        v4 s[4] = {{0}, {0}, {0}, {0}};                                                                       \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 4 <= n; i += 4) {                                                                          \
            v4 wv = LOAD(w + i);                                                                              \
            for (ptrdiff_t r = 0; r < rows; r++) s[r] += load4(x + r * ldx + i) * wv;                         \
        }                                                                                                     \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                                \
            float sum = sum4(s[r]);                                                                           \
            for (ptrdiff_t j = i; j < n; j++) sum += x[r * ldx + j] * WIDEN(w[j]);                            \
            sums[r] = sum;                                                                                    \
        }                                                                                                     \
    }
#define NO_WIDEN(value) (value)
DOT_BASE(dot_base, float, load4, NO_WIDEN)
DOT_BASE(dot_bf16_base, uint16_t, load4_bf16, widen_bf16)
GEMV(, gemv_base, dot_base, float)
GEMV(, gemv_bf16_base, dot_bf16_base, uint16_t)
DOTS4_BASE(dots4_base, float, load4, NO_WIDEN)
GEMV8(, gemv8_base, dots4_base, float)
DOTS4_BASE(dots4_bf16_base, uint16_t, load4_bf16, widen_bf16)
GEMV8(, gemv8_bf16_base, dots4_bf16_base, uint16_t)

#define AXPY_BASE(NAME, XTYPE, LOAD, WIDEN)                                                                    \
    static void NAME(ptrdiff_t n, float a, const XTYPE *x, float *y) {                                        \
        ptrdiff_t i = 0;                                                                                      \
        v4 av = {a, a, a, a};                                                                                 \
        for (; i + 4 <= n; i += 4) store4(y + i, load4(y + i) + av * LOAD(x + i));                            \
        for (; i < n; i++) y[i] += a * WIDEN(x[i]);                                                           \
    }
AXPY_BASE(axpy_base, float, load4, NO_WIDEN)
AXPY_BASE(axpy_bf16_base, uint16_t, load4_bf16, widen_bf16)
AXPY_ROWS(, axpy_rows_base, axpy_base, float)
AXPY_ROWS(, axpy_rows_bf16_base, axpy_bf16_base, uint16_t)

static void tile4x8_base(ptrdiff_t depth, const float *a, const float *b, float *tile) {
    v4 c[4][2] = {{{0}}};
    for (ptrdiff_t p = 0; p < depth; p++, a += 4, b += 8) {
        v4 b0 = load4(b), b1 = load4(b + 4);
        for (int r = 0; r < 4; r++) {
            v4 ar = {a[r], a[r], a[r], a[r]};
            c[r][0] += ar * b0;
            c[r][1] += ar * b1;
        }
    }
    for (int r = 0; r < 4; r++) {
        store4(tile + 8 * r, c[r][0]);
        store4(tile + 8 * r + 4, c[r][1]);
    }
}

#define FMA_BASE(a, b, s) ((s) + (a) * (b))
#define SUMS4_BASE(s, out) for (int c = 0; c < 4; c++) (out)[c] = sum4((s)[c])
GEMM_NT(, gemm_nt_base, v4, 4, ((v4){0, 0, 0, 0}), load4, FMA_BASE, 2, 4, SUMS4_BASE)

typedef int32_t v4i __attribute__((vector_size(16)));
VECTOR_MATH(, base, v4, v4i, 4)

static const punica_kernels baseline = {
#if defined(__aarch64__)
    "generic",
#else
    "sse2",
#endif
    dot_base, dot_bf16_base, gemv_base, gemv_bf16_base, gemv8_base, gemv8_bf16_base, axpy_base, axpy_rows_base, axpy_rows_bf16_base, tile4x8_base, gemm_nt_base,
    silu_mul_base, gelu_tanh_mul_base, exp_shifted_base,
};

#if defined(__x86_64__)
#include <immintrin.h>

// MARK: - AVX2 + FMA: 8-wide, fused multiply-add, four chains for dot (FMA latency 4 × 2 ports would want 8;
// from DRAM four is enough).

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline __m256 load8_bf16_avx2(const uint16_t *p) {
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

#define DOT_AVX2(NAME, WTYPE, LOAD, WIDEN)                                                                    \
    AVX2 static float NAME(const float *x, const WTYPE *y, ptrdiff_t n) {                                     \
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                                           \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 32 <= n; i += 32) {                                                                        \
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), LOAD(y + i), s0);                                    \
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), LOAD(y + i + 8), s1);                            \
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), LOAD(y + i + 16), s2);                          \
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), LOAD(y + i + 24), s3);                          \
        }                                                                                                     \
        for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), LOAD(y + i), s0);             \
        float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));                     \
        for (; i < n; i++) sum += x[i] * WIDEN(y[i]);                                                         \
        return sum;                                                                                           \
    }
DOT_AVX2(dot_avx2, float, _mm256_loadu_ps, NO_WIDEN)
DOT_AVX2(dot_bf16_avx2, uint16_t, load8_bf16_avx2, widen_bf16)
GEMV(AVX2, gemv_avx2, dot_avx2, float)
GEMV(AVX2, gemv_bf16_avx2, dot_bf16_avx2, uint16_t)

#define DOTS4_AVX2(NAME, WTYPE, LOAD, WIDEN)                                                                  \
    AVX2 static void NAME(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const WTYPE *w, ptrdiff_t n,        \
                          float *sums) {                                                                      \
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                                           \
        const float *x1 = x + (rows > 1) * ldx, *x2 = x + (rows > 2) * 2 * ldx, *x3 = x + (rows > 3) * 3 * ldx; \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 8 <= n; i += 8) {                                                                          \
            __m256 wv = LOAD(w + i);                                                                          \
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), wv, s0);                                             \
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + i), wv, s1);                                            \
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + i), wv, s2);                                            \
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + i), wv, s3);                                            \
        }                                                                                                     \
        float out[4] = {hsum256(s0), hsum256(s1), hsum256(s2), hsum256(s3)};                                  \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                                \
            for (ptrdiff_t j = i; j < n; j++) out[r] += x[r * ldx + j] * WIDEN(w[j]);                         \
            sums[r] = out[r];                                                                                 \
        }                                                                                                     \
    }
DOTS4_AVX2(dots4_avx2, float, _mm256_loadu_ps, NO_WIDEN)
GEMV8(AVX2, gemv8_avx2, dots4_avx2, float)
DOTS4_AVX2(dots4_bf16_avx2, uint16_t, load8_bf16_avx2, widen_bf16)
GEMV8(AVX2, gemv8_bf16_avx2, dots4_bf16_avx2, uint16_t)

#define AXPY_AVX2(NAME, XTYPE, LOAD, WIDEN)                                                                    \
    AVX2 static void NAME(ptrdiff_t n, float a, const XTYPE *x, float *y) {                                   \
        __m256 av = _mm256_set1_ps(a);                                                                        \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, LOAD(x + i), _mm256_loadu_ps(y + i))); \
        for (; i < n; i++) y[i] += a * WIDEN(x[i]);                                                           \
    }
AXPY_AVX2(axpy_avx2, float, _mm256_loadu_ps, NO_WIDEN)
AXPY_AVX2(axpy_bf16_avx2, uint16_t, load8_bf16_avx2, widen_bf16)
AXPY_ROWS(AVX2, axpy_rows_avx2, axpy_avx2, float)
AXPY_ROWS(AVX2, axpy_rows_bf16_avx2, axpy_bf16_avx2, uint16_t)

AVX2 static void tile4x8_avx2(ptrdiff_t depth, const float *a, const float *b, float *tile) {
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (ptrdiff_t p = 0; p < depth; p++, a += 4, b += 8) {
        __m256 row = _mm256_loadu_ps(b);
        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 0), row, c0);
        c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 1), row, c1);
        c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 2), row, c2);
        c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 3), row, c3);
    }
    _mm256_storeu_ps(tile, c0);
    _mm256_storeu_ps(tile + 8, c1);
    _mm256_storeu_ps(tile + 16, c2);
    _mm256_storeu_ps(tile + 24, c3);
}

// Four vectors' sums in one: pairwise adds within 128-bit lanes, then the two lanes added.
AVX2 static inline void sums4_avx2(const __m256 *s, float *out) {
    __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1)));
}
#define FMA_AVX2(a, b, s) _mm256_fmadd_ps(a, b, s)
// 3 × 4 tile: 12 sums, 3 + 1 operands of the 16 registers.
GEMM_NT(AVX2, gemm_nt_avx2, __m256, 8, _mm256_setzero_ps(), _mm256_loadu_ps, FMA_AVX2, 3, 4, sums4_avx2)

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32)));
VECTOR_MATH(AVX2, avx2, v8, v8i, 8)

static const punica_kernels avx2 = {"avx2", dot_avx2, dot_bf16_avx2, gemv_avx2, gemv_bf16_avx2, gemv8_avx2, gemv8_bf16_avx2, axpy_avx2, axpy_rows_avx2, axpy_rows_bf16_avx2, tile4x8_avx2, gemm_nt_avx2,
                                    silu_mul_avx2, gelu_tanh_mul_avx2, exp_shifted_avx2};

// MARK: - AVX-512: 16-wide with masked tails (no scalar loop). The 4×8 tile stays on AVX2 registers.

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

AVX512 static inline __mmask16 tail_mask(ptrdiff_t left) { return (__mmask16)((1u << left) - 1); }

AVX512 static inline __m512 load16_bf16_avx512(const uint16_t *p) {
    __m256i raw = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
AVX512 static inline __m512 load16_bf16_masked(const uint16_t *p, __mmask16 mask) {
    __m256i raw = _mm256_maskz_loadu_epi16(mask, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
AVX512 static inline __m512 load16_masked(const float *p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }

#define DOT_AVX512(NAME, WTYPE, LOAD, LOAD_MASKED)                                                            \
    AVX512 static float NAME(const float *x, const WTYPE *y, ptrdiff_t n) {                                   \
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                                           \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 64 <= n; i += 64) {                                                                        \
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), LOAD(y + i), s0);                                    \
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), LOAD(y + i + 16), s1);                          \
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), LOAD(y + i + 32), s2);                          \
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), LOAD(y + i + 48), s3);                          \
        }                                                                                                     \
        for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), LOAD(y + i), s0);           \
        if (i < n) {                                                                                          \
            __mmask16 mask = tail_mask(n - i);                                                                \
            s1 = _mm512_fmadd_ps(load16_masked(x + i, mask), LOAD_MASKED(y + i, mask), s1);                   \
        }                                                                                                     \
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));             \
    }
DOT_AVX512(dot_avx512, float, _mm512_loadu_ps, load16_masked)
DOT_AVX512(dot_bf16_avx512, uint16_t, load16_bf16_avx512, load16_bf16_masked)
GEMV(AVX512, gemv_avx512, dot_avx512, float)

#define DOTS4_AVX512(NAME, WTYPE, LOAD, LOAD_MASKED)                                                          \
    AVX512 static void NAME(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const WTYPE *w, ptrdiff_t n,      \
                            float *sums) {                                                                    \
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                                           \
        const float *x1 = x + (rows > 1) * ldx, *x2 = x + (rows > 2) * 2 * ldx, *x3 = x + (rows > 3) * 3 * ldx; \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 16 <= n; i += 16) {                                                                        \
            __m512 wv = LOAD(w + i);                                                                          \
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), wv, s0);                                             \
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x1 + i), wv, s1);                                            \
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(x2 + i), wv, s2);                                            \
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(x3 + i), wv, s3);                                            \
        }                                                                                                     \
        if (i < n) {                                                                                          \
            __mmask16 mask = tail_mask(n - i);                                                                \
            __m512 wv = LOAD_MASKED(w + i, mask);                                                             \
            s0 = _mm512_fmadd_ps(load16_masked(x + i, mask), wv, s0);                                         \
            s1 = _mm512_fmadd_ps(load16_masked(x1 + i, mask), wv, s1);                                        \
            s2 = _mm512_fmadd_ps(load16_masked(x2 + i, mask), wv, s2);                                        \
            s3 = _mm512_fmadd_ps(load16_masked(x3 + i, mask), wv, s3);                                        \
        }                                                                                                     \
        float out[4] = {_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(s1), _mm512_reduce_add_ps(s2),        \
                        _mm512_reduce_add_ps(s3)};                                                            \
        for (ptrdiff_t r = 0; r < rows; r++) sums[r] = out[r];                                                \
    }
DOTS4_AVX512(dots4_avx512, float, _mm512_loadu_ps, load16_masked)
GEMV8(AVX512, gemv8_by4_avx512, dots4_avx512, float)

DOTS4_AVX512(dots4_bf16_avx512, uint16_t, load16_bf16_avx512, load16_bf16_masked)
GEMV8(AVX512, gemv8_bf16_by4_avx512, dots4_bf16_avx512, uint16_t)

// A decode row against bfloat16 weights, 32 at a time: a 64-byte load holds 16 pairs, and shifting each 32-bit pair
// left by 16 gives the even weights as floats, masking off its low half the odd ones (a bfloat16 is the high half of
// a float32). x is split once per call into the matching even and odd halves of each 32, so the loop widens with two
// cheap ops and no shuffles: with the 16-wide zero-extension of `dot_bf16`, batch-1 decode was bound by those
// shuffles at about float32's speed. The last n % 32 weights take the 16-wide path. (Batches of 2-4 rows keep
// `dots4_bf16`: splitting x per call of 16 weight rows cost more than it saved.)
AVX512 static void gemv_bf16_avx512(const float *x, const uint16_t *w, ptrdiff_t ldw, ptrdiff_t rows, ptrdiff_t n, float *y) {
    const ptrdiff_t paired = n / 32 * 32;
    // 64 KiB on the stack covers rows up to 16384 wide; wider ones take the heap.
    float stack[16384], *heap = paired > 16384 ? malloc(paired * sizeof(float)) : NULL, *split = heap ? heap : stack;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (ptrdiff_t i = 0; i < paired; i += 32) {
        __m512 low = _mm512_loadu_ps(x + i), high = _mm512_loadu_ps(x + i + 16);
        _mm512_storeu_ps(split + i, _mm512_permutex2var_ps(low, even, high));
        _mm512_storeu_ps(split + i + 16, _mm512_permutex2var_ps(low, odd, high));
    }
    const __m512i highHalves = _mm512_set1_epi32((int)0xFFFF0000u);
    for (ptrdiff_t j = 0; j < rows; j++) {
        const uint16_t *row = w + j * ldw;
        __m512 sumEven = _mm512_setzero_ps(), sumOdd = sumEven;
        for (ptrdiff_t i = 0; i < paired; i += 32) {
            __m512i pairs = _mm512_loadu_si512(row + i);
            sumEven = _mm512_fmadd_ps(_mm512_loadu_ps(split + i), _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16)), sumEven);
            sumOdd = _mm512_fmadd_ps(_mm512_loadu_ps(split + i + 16), _mm512_castsi512_ps(_mm512_and_si512(pairs, highHalves)), sumOdd);
        }
        for (ptrdiff_t i = paired; i < n; i += 16) {
            __mmask16 mask = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
            sumEven = _mm512_fmadd_ps(load16_masked(x + i, mask), load16_bf16_masked(row + i, mask), sumEven);
        }
        y[j] = _mm512_reduce_add_ps(_mm512_add_ps(sumEven, sumOdd));
    }
    free(heap);
}

#define AXPY_AVX512(NAME, XTYPE, LOAD, LOAD_MASKED)                                                            \
    AVX512 static void NAME(ptrdiff_t n, float a, const XTYPE *x, float *y) {                                 \
        __m512 av = _mm512_set1_ps(a);                                                                        \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, LOAD(x + i), _mm512_loadu_ps(y + i))); \
        if (i < n) {                                                                                          \
            __mmask16 mask = tail_mask(n - i);                                                                \
            _mm512_mask_storeu_ps(y + i, mask, _mm512_fmadd_ps(av, LOAD_MASKED(x + i, mask), load16_masked(y + i, mask))); \
        }                                                                                                     \
    }
AXPY_AVX512(axpy_avx512, float, _mm512_loadu_ps, load16_masked)
AXPY_AVX512(axpy_bf16_avx512, uint16_t, load16_bf16_avx512, load16_bf16_masked)
AXPY_ROWS(AVX512, axpy_rows_avx512, axpy_avx512, float)
AXPY_ROWS(AVX512, axpy_rows_bf16_avx512, axpy_bf16_avx512, uint16_t)

// Eight vectors' sums in one: each folded to 8 lanes, then pairwise adds within 128-bit lanes, then the lanes added.
AVX512 static inline void sums8_avx512(const __m512 *s, float *out) {
    __m256 half[8];
    for (int c = 0; c < 8; c++)
        half[c] = _mm256_add_ps(_mm512_castps512_ps256(s[c]), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s[c]), 1)));
    __m256 low = _mm256_hadd_ps(_mm256_hadd_ps(half[0], half[1]), _mm256_hadd_ps(half[2], half[3]));
    __m256 high = _mm256_hadd_ps(_mm256_hadd_ps(half[4], half[5]), _mm256_hadd_ps(half[6], half[7]));
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(low, high, 0x20), _mm256_permute2f128_ps(low, high, 0x31)));
}
#define FMA_AVX512(a, b, s) _mm512_fmadd_ps(a, b, s)

// Five to eight rows of x against weight rows j < count (GEMV8's contract), in register tiles of 8 rows × 3 weight
// rows: 24 sums, 8 + 3 loads per 24 fused multiply-adds where two DOTS4 passes take 10 per 8, and loads bound DOTS4
// on the development machine's Zen 4 (86 against 52 GFLOP/s per core at 8 rows in cache). Rows past `rows` reread
// the last one (their sums are not stored). Three weight rows streaming together, the hardware prefetcher keeps up
// worse than with one: each load also prefetches the same line of the next tile's rows (8 rows from DRAM, one core:
// 1.2× float32, 1.7× bfloat16 over DOTS4). Up to four rows keep DOTS4, whose single stream is faster from DRAM there.
#define TILE8X3_AVX512(NAME, WTYPE, LOAD, LOAD_MASKED)                                                        \
    AVX512 static void NAME(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const WTYPE *w, ptrdiff_t ldw,     \
                            ptrdiff_t count, ptrdiff_t n, float *y) {                                         \
        const float *xr[8];                                                                                   \
        for (int r = 0; r < 8; r++) xr[r] = x + (r < rows ? r : rows - 1) * ldx;                              \
        for (ptrdiff_t j0 = 0; j0 < count; j0 += 3) {                                                         \
            const WTYPE *wr[3];                                                                               \
            for (int c = 0; c < 3; c++) wr[c] = w + (j0 + c < count ? j0 + c : count - 1) * ldw;              \
            __m512 s[3 * 8];  /* s[c·8 + r]: weight row c, x row r */                                         \
            for (int q = 0; q < 3 * 8; q++) s[q] = _mm512_setzero_ps();                                       \
            ptrdiff_t i = 0;                                                                                  \
            for (; i + 16 <= n; i += 16) {                                                                    \
                __m512 wv[3];                                                                                 \
                for (int c = 0; c < 3; c++) {                                                                 \
                    __builtin_prefetch(wr[c] + i + 3 * ldw);                                                  \
                    wv[c] = LOAD(wr[c] + i);                                                                  \
                }                                                                                             \
                for (int r = 0; r < 8; r++) {                                                                 \
                    __m512 xv = _mm512_loadu_ps(xr[r] + i);                                                   \
                    for (int c = 0; c < 3; c++) s[c * 8 + r] = _mm512_fmadd_ps(xv, wv[c], s[c * 8 + r]);      \
                }                                                                                             \
            }                                                                                                 \
            if (i < n) {                                                                                      \
                __mmask16 mask = tail_mask(n - i);                                                            \
                __m512 wv[3];                                                                                 \
                for (int c = 0; c < 3; c++) wv[c] = LOAD_MASKED(wr[c] + i, mask);                             \
                for (int r = 0; r < 8; r++) {                                                                 \
                    __m512 xv = load16_masked(xr[r] + i, mask);                                               \
                    for (int c = 0; c < 3; c++) s[c * 8 + r] = _mm512_fmadd_ps(xv, wv[c], s[c * 8 + r]);      \
                }                                                                                             \
            }                                                                                                 \
            for (int c = 0; c < 3 && j0 + c < count; c++) {                                                   \
                float out[8];                                                                                 \
                sums8_avx512(s + c * 8, out);                                                                 \
                for (ptrdiff_t r = 0; r < rows; r++) y[r * count + j0 + c] = out[r];                          \
            }                                                                                                 \
        }                                                                                                     \
    }
TILE8X3_AVX512(tile8x3_avx512, float, _mm512_loadu_ps, load16_masked)
TILE8X3_AVX512(tile8x3_bf16_avx512, uint16_t, load16_bf16_avx512, load16_bf16_masked)

AVX512 static void gemv8_avx512(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const float *w, ptrdiff_t ldw,
                                ptrdiff_t count, ptrdiff_t n, float *y) {
    (rows <= 4 ? gemv8_by4_avx512 : tile8x3_avx512)(x, ldx, rows, w, ldw, count, n, y);
}
AVX512 static void gemv8_bf16_avx512(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const uint16_t *w, ptrdiff_t ldw,
                                     ptrdiff_t count, ptrdiff_t n, float *y) {
    (rows <= 4 ? gemv8_bf16_by4_avx512 : tile8x3_bf16_avx512)(x, ldx, rows, w, ldw, count, n, y);
}
// 3 × 8 tile: 24 sums, 3 + 1 operands of the 32 registers.
GEMM_NT(AVX512, gemm_nt_avx512, __m512, 16, _mm512_setzero_ps(), _mm512_loadu_ps, FMA_AVX512, 3, 8, sums8_avx512)

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64)));
VECTOR_MATH(AVX512, avx512, v16, v16i, 16)

static const punica_kernels avx512 = {"avx512", dot_avx512, dot_bf16_avx512, gemv_avx512, gemv_bf16_avx512, gemv8_avx512, gemv8_bf16_avx512, axpy_avx512, axpy_rows_avx512, axpy_rows_bf16_avx512, tile4x8_avx2, gemm_nt_avx512,
                                      silu_mul_avx512, gelu_tanh_mul_avx512, exp_shifted_avx512};

const punica_kernels *const *punica_kernels_supported(ptrdiff_t *count) {
    static const punica_kernels *list[3];
    static ptrdiff_t listed = -1;
    if (listed < 0) {  // the first call comes from a Swift lazy global (run once); repeating it is harmless
        ptrdiff_t n = 0;
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
            list[n++] = &avx512;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) list[n++] = &avx2;
        list[n++] = &baseline;
        listed = n;
    }
    *count = listed;
    return list;
}

#elif defined(__aarch64__)
#include <arm_neon.h>

// MARK: - NEON (every arm64 CPU has it): 4-wide fused multiply-add, four chains for dot.

static inline float32x4_t load4_bf16_neon(const uint16_t *p) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

#define DOT_NEON(NAME, WTYPE, LOAD, WIDEN)                                                                    \
    static float NAME(const float *x, const WTYPE *y, ptrdiff_t n) {                                          \
        float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;                                           \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 16 <= n; i += 16) {                                                                        \
            s0 = vfmaq_f32(s0, vld1q_f32(x + i), LOAD(y + i));                                                \
            s1 = vfmaq_f32(s1, vld1q_f32(x + i + 4), LOAD(y + i + 4));                                        \
            s2 = vfmaq_f32(s2, vld1q_f32(x + i + 8), LOAD(y + i + 8));                                        \
            s3 = vfmaq_f32(s3, vld1q_f32(x + i + 12), LOAD(y + i + 12));                                      \
        }                                                                                                     \
        for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(x + i), LOAD(y + i));                         \
        float sum = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));                              \
        for (; i < n; i++) sum += x[i] * WIDEN(y[i]);                                                         \
        return sum;                                                                                           \
    }
DOT_NEON(dot_neon, float, vld1q_f32, NO_WIDEN)
DOT_NEON(dot_bf16_neon, uint16_t, load4_bf16_neon, widen_bf16)
GEMV(, gemv_neon, dot_neon, float)
GEMV(, gemv_bf16_neon, dot_bf16_neon, uint16_t)

#define DOTS4_NEON(NAME, WTYPE, LOAD, WIDEN)                                                                  \
    static void NAME(const float *x, ptrdiff_t ldx, ptrdiff_t rows, const WTYPE *w, ptrdiff_t n, float *sums) { \
        float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;                                           \
        const float *x1 = x + (rows > 1) * ldx, *x2 = x + (rows > 2) * 2 * ldx, *x3 = x + (rows > 3) * 3 * ldx; \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 4 <= n; i += 4) {                                                                          \
            float32x4_t wv = LOAD(w + i);                                                                     \
            s0 = vfmaq_f32(s0, vld1q_f32(x + i), wv);                                                         \
            s1 = vfmaq_f32(s1, vld1q_f32(x1 + i), wv);                                                        \
            s2 = vfmaq_f32(s2, vld1q_f32(x2 + i), wv);                                                        \
            s3 = vfmaq_f32(s3, vld1q_f32(x3 + i), wv);                                                        \
        }                                                                                                     \
        float out[4] = {vaddvq_f32(s0), vaddvq_f32(s1), vaddvq_f32(s2), vaddvq_f32(s3)};                      \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                                \
            for (ptrdiff_t j = i; j < n; j++) out[r] += x[r * ldx + j] * WIDEN(w[j]);                         \
            sums[r] = out[r];                                                                                 \
        }                                                                                                     \
    }
DOTS4_NEON(dots4_neon, float, vld1q_f32, NO_WIDEN)
GEMV8(, gemv8_neon, dots4_neon, float)
DOTS4_NEON(dots4_bf16_neon, uint16_t, load4_bf16_neon, widen_bf16)
GEMV8(, gemv8_bf16_neon, dots4_bf16_neon, uint16_t)

#define AXPY_NEON(NAME, XTYPE, LOAD, WIDEN)                                                                    \
    static void NAME(ptrdiff_t n, float a, const XTYPE *x, float *y) {                                        \
        ptrdiff_t i = 0;                                                                                      \
        for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), LOAD(x + i), a));           \
        for (; i < n; i++) y[i] += a * WIDEN(x[i]);                                                           \
    }
AXPY_NEON(axpy_neon, float, vld1q_f32, NO_WIDEN)
AXPY_NEON(axpy_bf16_neon, uint16_t, load4_bf16_neon, widen_bf16)
AXPY_ROWS(, axpy_rows_neon, axpy_neon, float)
AXPY_ROWS(, axpy_rows_bf16_neon, axpy_bf16_neon, uint16_t)

static void tile4x8_neon(ptrdiff_t depth, const float *a, const float *b, float *tile) {
    float32x4_t c[4][2];
    for (int r = 0; r < 4; r++) c[r][0] = c[r][1] = vdupq_n_f32(0);
    for (ptrdiff_t p = 0; p < depth; p++, a += 4, b += 8) {
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), av = vld1q_f32(a);
        c[0][0] = vfmaq_laneq_f32(c[0][0], b0, av, 0); c[0][1] = vfmaq_laneq_f32(c[0][1], b1, av, 0);
        c[1][0] = vfmaq_laneq_f32(c[1][0], b0, av, 1); c[1][1] = vfmaq_laneq_f32(c[1][1], b1, av, 1);
        c[2][0] = vfmaq_laneq_f32(c[2][0], b0, av, 2); c[2][1] = vfmaq_laneq_f32(c[2][1], b1, av, 2);
        c[3][0] = vfmaq_laneq_f32(c[3][0], b0, av, 3); c[3][1] = vfmaq_laneq_f32(c[3][1], b1, av, 3);
    }
    for (int r = 0; r < 4; r++) {
        vst1q_f32(tile + 8 * r, c[r][0]);
        vst1q_f32(tile + 8 * r + 4, c[r][1]);
    }
}

#define SUMS4_NEON(s, out) for (int c = 0; c < 4; c++) (out)[c] = vaddvq_f32((s)[c])
#define FMA_NEON(a, b, s) vfmaq_f32(s, a, b)
// 4 × 4 tile: 16 sums, 4 + 1 operands of the 32 registers.
GEMM_NT(, gemm_nt_neon, float32x4_t, 4, vdupq_n_f32(0), vld1q_f32, FMA_NEON, 4, 4, SUMS4_NEON)

VECTOR_MATH(, neon, float32x4_t, int32x4_t, 4)

static const punica_kernels neon = {"neon", dot_neon, dot_bf16_neon, gemv_neon, gemv_bf16_neon, gemv8_neon, gemv8_bf16_neon, axpy_neon, axpy_rows_neon, axpy_rows_bf16_neon, tile4x8_neon, gemm_nt_neon,
                                    silu_mul_neon, gelu_tanh_mul_neon, exp_shifted_neon};

const punica_kernels *const *punica_kernels_supported(ptrdiff_t *count) {
    static const punica_kernels *const list[] = {&neon, &baseline};
    *count = 2;
    return list;
}

#else

const punica_kernels *const *punica_kernels_supported(ptrdiff_t *count) {
    static const punica_kernels *const list[] = {&baseline};
    *count = 1;
    return list;
}

#endif
