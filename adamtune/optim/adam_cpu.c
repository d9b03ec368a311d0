/* adamtune's native CPU Adam/AdamW step: one pass over memory, many tensors in one call.
 *
 * Every tensor i has rows: rows[i] rows of row_size[i] elements (rows = 1 unless the group has
 * per-row hyperparameters). Row r of tensor i uses coefficient row coef_index[i] + r of `coef`,
 * NCOEF doubles: step_size (lr / bias_correction1), bias_correction2_sqrt, beta1, beta2, eps,
 * l2 (weight decay added to the gradient: Adam) and decay (1 - lr * wd: AdamW).
 *
 * The work is cut into blocks of BLOCK elements over all tensors and shared out by OpenMP, so
 * a model with hundreds of small tensors costs one parallel region, not hundreds.
 * Per element, in PyTorch's order (torch/optim/adam.py, single-tensor path):
 *   g = maximize ? -g : g;  g += l2 * p;  p *= decay;
 *   m += (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g;
 *   vmax = max(vmax, v) (AMSGrad);  p -= step_size * (m / (sqrt(v or vmax) / bc2_sqrt + eps))
 * (the division by bc2_sqrt is done as a multiplication by its reciprocal).
 * Half types are computed in float and rounded to nearest even on store. The state (m, v, vmax)
 * may be float32 under half parameters (mixed precision: small updates survive in the state).
 * With stochastic rounding (bf16 parameters only) the new parameter is rounded up with the
 * probability of its distance from the lower bf16 neighbour: random 16 bits are added below
 * the bf16 mantissa before truncation. The bits are hash32(element index + salt), salt one
 * 32-bit value per tensor and step, so a step is reproducible whatever the thread count.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define NCOEF 7
#define BLOCK 16384

static inline float bf16_load(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t bf16_store(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* "lowbias32" (Chris Wellons' integer hash search): a counter-based hash, vectorisable. */
static inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

static inline uint16_t bf16_store_sr(float f, uint32_t random) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN */
    bits += random & 0xffffu;
    return (uint16_t)(bits >> 16);
}

#define IDENT(x) (x)
#define PSTORE_RNE(STORE, x, j) STORE(x)
#define PSTORE_SR(STORE, x, j) bf16_store_sr((x), hash32((uint32_t)(base + (j)) + salt))

/* One contiguous run of n elements that share one coefficient row, elements base.. of their
 * tensor. The body is instantiated for each (AMSGrad, lerp form) pair so the vector loop does
 * only the work its case needs: on two cores with AVX-512 the sqrt and the division already
 * cost about as much as the memory traffic. T is the parameter and gradient type, S the state
 * type, C the compute type; PSTORE stores the new parameter (to nearest, or stochastically).
 */
#define DEFINE_RUN(NAME, T, S, C, LOAD, STORE, SLOAD, SSTORE, PSTORE, SQRT)                  \
    static inline __attribute__((always_inline)) void NAME##_body(                           \
        T *restrict p, const T *restrict g, S *restrict m, S *restrict v, S *restrict vmax,  \
        int64_t n, const double *k, const int amsgrad, const int small_w1, int maximize,     \
        int64_t base, uint32_t salt) {                                                       \
        const C eps = (C)k[4], l2 = (C)k[5], decay = (C)k[6], beta1 = (C)k[2];               \
        const C beta2 = (C)k[3], inv_bc2_sqrt = (C)(1.0 / k[1]), neg_step = (C)(-k[0]);      \
        const C w1 = (C)(1.0 - k[2]), w2 = (C)(1.0 - k[3]);                                  \
        const C sign = maximize ? (C)-1 : (C)1;                                              \
        (void)base;                                                                          \
        (void)salt;                                                                          \
        _Pragma("omp simd")                                                                  \
        for (int64_t j = 0; j < n; j++) {                                                    \
            C pj = LOAD(p[j]);                                                               \
            C gj = sign * LOAD(g[j]) + l2 * pj;                                              \
            pj = pj * decay;                                                                 \
            C mj = SLOAD(m[j]);                                                              \
            mj = small_w1 ? mj + w1 * (gj - mj) : gj - (gj - mj) * beta1;                    \
            C vj = beta2 * SLOAD(v[j]) + w2 * (gj * gj);                                     \
            C vv = vj;                                                                       \
            if (amsgrad) {                                                                   \
                C vm = SLOAD(vmax[j]);                                                       \
                vv = vm > vj ? vm : vj;                                                      \
                vmax[j] = SSTORE(vv);                                                        \
            }                                                                                \
            C denom = SQRT(vv) * inv_bc2_sqrt + eps;                                         \
            p[j] = PSTORE(STORE, pj + neg_step * (mj / denom), j);                           \
            m[j] = SSTORE(mj);                                                               \
            v[j] = SSTORE(vj);                                                               \
        }                                                                                    \
    }                                                                                        \
    static void NAME(T *p, const T *g, S *m, S *v, S *vmax, int64_t n, const double *k,      \
                     int amsgrad, int maximize, int64_t base, uint32_t salt) {               \
        const int small_w1 = k[2] > 0.5; /* torch.lerp's two forms, picked by the weight */  \
        if (amsgrad && small_w1) NAME##_body(p, g, m, v, vmax, n, k, 1, 1, maximize, base, salt); \
        else if (amsgrad) NAME##_body(p, g, m, v, vmax, n, k, 1, 0, maximize, base, salt);   \
        else if (small_w1) NAME##_body(p, g, m, v, vmax, n, k, 0, 1, maximize, base, salt);  \
        else NAME##_body(p, g, m, v, vmax, n, k, 0, 0, maximize, base, salt);                \
    }

/* SQRT matches the compute type C: plain sqrt on a float widens it to double, and the loop then
 * runs at half the vector width with conversions in and out. */
#define F16_LOAD(x) ((float)(x))
#define F16_STORE(x) ((_Float16)(x))
DEFINE_RUN(run_f32, float, float, float, IDENT, IDENT, IDENT, IDENT, PSTORE_RNE, sqrtf)
DEFINE_RUN(run_f64, double, double, double, IDENT, IDENT, IDENT, IDENT, PSTORE_RNE, sqrt)
DEFINE_RUN(run_bf16, uint16_t, uint16_t, float, bf16_load, bf16_store, bf16_load, bf16_store,
           PSTORE_RNE, sqrtf)
DEFINE_RUN(run_f16, _Float16, _Float16, float, F16_LOAD, F16_STORE, F16_LOAD, F16_STORE,
           PSTORE_RNE, sqrtf)
DEFINE_RUN(run_bf16_f32, uint16_t, float, float, bf16_load, bf16_store, IDENT, IDENT,
           PSTORE_RNE, sqrtf)
DEFINE_RUN(run_f16_f32, _Float16, float, float, F16_LOAD, F16_STORE, IDENT, IDENT, PSTORE_RNE,
           sqrtf)
DEFINE_RUN(run_bf16_sr, uint16_t, uint16_t, float, bf16_load, bf16_store, bf16_load, bf16_store,
           PSTORE_SR, sqrtf)
DEFINE_RUN(run_bf16_f32_sr, uint16_t, float, float, bf16_load, bf16_store, IDENT, IDENT,
           PSTORE_SR, sqrtf)

typedef void (*run_fn)(void *, const void *, void *, void *, void *, int64_t, const double *,
                       int, int, int64_t, uint32_t);

/* The run for (parameter dtype, state dtype, stochastic rounding), or 0 when there is none.
 * dtype codes: 0 float32, 1 float64, 2 bfloat16, 3 float16. */
static run_fn pick_run(int dtype, int state_dtype, int stochastic) {
    if (stochastic) {
        if (dtype != 2) return 0;
        if (state_dtype == 2) return (run_fn)run_bf16_sr;
        if (state_dtype == 0) return (run_fn)run_bf16_f32_sr;
        return 0;
    }
    if (dtype == state_dtype) {
        static const run_fn same[] = {(run_fn)run_f32, (run_fn)run_f64, (run_fn)run_bf16,
                                      (run_fn)run_f16};
        return dtype >= 0 && dtype <= 3 ? same[dtype] : 0;
    }
    if (state_dtype == 0 && dtype == 2) return (run_fn)run_bf16_f32;
    if (state_dtype == 0 && dtype == 3) return (run_fn)run_f16_f32;
    return 0;
}

/* salts: NULL rounds parameters to nearest; else one salt per tensor, stochastic rounding. */
int adam_step(int dtype, int state_dtype, int64_t n_tensors, void **p, void **g, void **m,
              void **v, void **vmax, const int64_t *numel, const int64_t *row_size,
              const int64_t *coef_index, const double *coef, int amsgrad, int maximize,
              const uint32_t *salts, int n_threads) {
    static const int64_t sizes[] = {4, 8, 2, 2};
    const run_fn run = pick_run(dtype, state_dtype, salts != 0);
    if (!run) return -1;
    const int64_t size = sizes[dtype], state_size = sizes[state_dtype];

    int64_t total_blocks = 0;
    for (int64_t i = 0; i < n_tensors; i++) total_blocks += (numel[i] + BLOCK - 1) / BLOCK;

#pragma omp parallel num_threads(n_threads)
    {
        int64_t tensor = 0, first_block = 0; /* blocks before `tensor`, walked forward */
#pragma omp for schedule(static)
        for (int64_t b = 0; b < total_blocks; b++) {
            while (b >= first_block + (numel[tensor] + BLOCK - 1) / BLOCK) {
                first_block += (numel[tensor] + BLOCK - 1) / BLOCK;
                tensor++;
            }
            const int64_t start = (b - first_block) * BLOCK;
            const int64_t end = start + BLOCK < numel[tensor] ? start + BLOCK : numel[tensor];
            const int64_t rs = row_size[tensor];
            const uint32_t salt = salts ? salts[tensor] : 0;
            for (int64_t s = start; s < end;) {
                const int64_t row = s / rs;
                const int64_t e = (row + 1) * rs < end ? (row + 1) * rs : end;
                const int64_t off = s * size, state_off = s * state_size;
                run((char *)p[tensor] + off, (const char *)g[tensor] + off,
                    (char *)m[tensor] + state_off, (char *)v[tensor] + state_off,
                    amsgrad ? (char *)vmax[tensor] + state_off : 0, e - s,
                    coef + (coef_index[tensor] + row) * NCOEF, amsgrad, maximize, s, salt);
                s = e;
            }
        }
    }
    return 0;
}

/* Adds 1 to each of n float32 step counters (torch's state["step"] tensors) and writes the new
 * counts to `values`: one call instead of a torch op per parameter. */
void advance_steps(int64_t n, float **steps, double *values) {
    for (int64_t i = 0; i < n; i++) {
        *steps[i] += 1.0f;
        values[i] = *steps[i];
    }
}

/* Writes the coefficient table for n_steps step counts and n_rows hyperparameter rows to `out`
 * (n_steps * n_rows rows of NCOEF doubles, step-major: row k * n_rows + r is step steps[k] with
 * hyperparameter row r). Hyperparameter h (lr, beta1, beta2, eps, weight_decay) of row r is
 * rows[h][r], read as float32 (dtype[h] 0) or float64 (1), or scalar[h] when rows[h] is NULL.
 * The arithmetic is that of fused_adam._coefficients in Python floats, to the last bit. */
void adam_coefficients(int64_t n_steps, const double *steps, int64_t n_rows,
                       const double *scalar, const void *const *rows, const int *dtype,
                       int decoupled, double *out) {
    for (int64_t r = 0; r < n_rows; r++) {
        double h[5];
        for (int k = 0; k < 5; k++) {
            if (!rows[k]) h[k] = scalar[k];
            else if (dtype[k]) h[k] = ((const double *)rows[k])[r];
            else h[k] = ((const float *)rows[k])[r];
        }
        const double lr = h[0], beta1 = h[1], beta2 = h[2], eps = h[3], wd = h[4];
        /* volatile: keeps 1 - lr * wd two roundings, as in Python (no fused multiply-add) */
        volatile double lr_wd = lr * wd;
        const double l2 = decoupled ? 0.0 : wd, decay = decoupled ? 1.0 - lr_wd : 1.0;
        for (int64_t s = 0; s < n_steps; s++) {
            double *k = out + (s * n_rows + r) * NCOEF;
            k[0] = lr / (1.0 - pow(beta1, steps[s]));
            k[1] = sqrt(1.0 - pow(beta2, steps[s]));
            k[2] = beta1;
            k[3] = beta2;
            k[4] = eps;
            k[5] = l2;
            k[6] = decay;
        }
    }
}
