/* Element-wise work of the fused scans (snnasr/models/native.py), one call per time step or per
 * sequence.  Compiled at first use by native.py with the system C compiler, flags there:
 * -ffp-contract=off (no implicit fused multiply-add: every product rounds as torch's separate ops
 * do), no -ffast-math; with libmvec (glibc, x86-64) exp is vectorised (-DVECTOR_MATH).  MULADD is
 * each torch.addcmul of the fused kernels: one rounding (fma) where torch's CPU kernels fuse it
 * (-DTORCH_FMA, detected at build time: its AVX2/AVX-512 kernels do), two otherwise.
 *
 * Every function mirrors, op for op and in the same order, what the fused kernels in
 * snnasr/models/bptt.py run (see that module for the equations); names follow them.  Layouts are
 * torch's contiguous [T, B, H]; a step's gate inputs g are [B, 2H] ([z | c] halves per row), the
 * saved gate derivatives [B, 2, H].  The range state rng = (M_min, M_max, R) is in doubles, as the
 * Python floats of RangeState; rs[t] receives the R step t quantised with.
 *
 * The file includes itself once per element type (float, double): the body below the #else is
 * written in terms of REAL and F(name). */
#ifndef REAL

#include <math.h>
#include <stddef.h>
#include <string.h>

#ifdef VECTOR_MATH
#pragma omp declare simd notinbranch
extern double exp(double);
#pragma omp declare simd notinbranch
extern float expf(float);
#endif

/* torch.lerp's formula on host floats (spikes._lerp). */
static double lerp_host(double a, double b, double w) { return w < 0.5 ? a + w * (b - a) : b - (b - a) * (1 - w); }

/* The quantiser's settings and the per-step plan of a range-tracking loop (spikes.StepMask). */
typedef struct {
  int n_bits, threshold, training;
  double momentum;
  const double *corr;          /* [T] bias corrections 1 - (1-mu)^n */
  const unsigned char *seen;   /* [T] step has a valid row */
  const unsigned char *rows;   /* [T, B] valid rows, or NULL: no padding */
  double *rng;                 /* (M_min, M_max, R), in and out */
  double *rs;                  /* [T] R used by each step, out */
} quant_t;

static int n_levels(int n_bits) { return n_bits > 1 ? 1 << (n_bits - 1) : 2; }

#ifdef TORCH_FMA
#define MULADD(a, b, c) FMA(a, b, c)
#else
#define MULADD(a, b, c) ((a) * (b) + (c))
#endif

#define REAL float
#define F(name) name##_f
#define EXP expf
#define ABS fabsf
#define TRUNC truncf
#define FMA fmaf
#include "native_scan.c"
#undef REAL
#undef F
#undef EXP
#undef ABS
#undef TRUNC
#undef FMA

#define REAL double
#define F(name) name##_d
#define EXP exp
#define ABS fabs
#define TRUNC trunc
#define FMA fma
#include "native_scan.c"

#else /* the body, once per REAL */

/* Output stage of step t on a[B*H] (holding r_{t-1} + x_t): range update from the batch min/max of
 * the valid rows (training, step seen), s = Q(a) into s, a <- a - s (the new residual), and with
 * qd, q' = 1[|a| <= R].  As spikes.quantize_at: trunc(a * scale) clamped, dead zone, / scale, with
 * scale and R rounded to REAL as torch rounds a Python float operand. */
static void F(emit)(const quant_t *qc, long t, long B, long H, REAL *restrict a, REAL *restrict s,
                    REAL *restrict qd) {
  double *rng = qc->rng;
  if (qc->training && qc->seen[t]) {
    REAL mn = INFINITY, mx = -INFINITY;
    const unsigned char *rows = qc->rows ? qc->rows + t * B : NULL;
    for (long b = 0; b < B; b++) {
      if (rows && !rows[b]) continue;
      const REAL *ab = a + b * H;
      REAL rmn = ab[0], rmx = ab[0];
#pragma omp simd reduction(min : rmn) reduction(max : rmx)
      for (long i = 0; i < H; i++) {
        rmn = ab[i] < rmn ? ab[i] : rmn;
        rmx = ab[i] > rmx ? ab[i] : rmx;
      }
      mn = rmn < mn ? rmn : mn;
      mx = rmx > mx ? rmx : mx;
    }
    double lo = lerp_host(rng[0], (double)mn, qc->momentum), hi = lerp_host(rng[1], (double)mx, qc->momentum);
    double r = fmax(fabs(lo), fabs(hi)) / qc->corr[t];
    rng[0] = lo, rng[1] = hi, rng[2] = r > 0 ? r : (double)n_levels(qc->n_bits);
  }
  qc->rs[t] = rng[2];
  const int top = n_levels(qc->n_bits) - 1, low = qc->n_bits == 1 ? 0 : -top, k = qc->threshold;
  const REAL scale = (REAL)(n_levels(qc->n_bits) * (1 - 1e-4) / rng[2]), range = (REAL)rng[2];
  const REAL rtop = (REAL)top, rlow = (REAL)low, rk = (REAL)k;
  const long n = B * H;
#pragma omp simd
  for (long i = 0; i < n; i++) {
    REAL q = TRUNC(a[i] * scale);
    q = q > rtop ? rtop : q;
    q = q < rlow ? rlow : q;
    if (k > 0 && q >= -rk && q <= rk) q = 0;
    REAL si = q / scale;
    s[i] = si;
    if (qd) qd[i] = ABS(a[i]) <= range ? 1 : 0;
    a[i] = a[i] - si;
  }
}

/* Gated v1/v2 forward over n steps from t0 (bptt.GatedKernel.run): g [n, B, 2H] gate inputs
 * (v2: P_t + U s_{t-1}, one step per call); h, r [B, H] carried in place; out [n, B, H] spikes;
 * with keep, z [n, B, H], gate [n, B, 2, H] (dh/dg_z, dh/dg_c) and qd [n, B, H]. */
void F(gated_forward)(long t0, long n, long B, long H, int recurrent, const REAL *restrict g, REAL *restrict h,
                      REAL *restrict r, REAL *restrict out, const REAL *restrict drop, int keep, REAL *restrict zb,
                      REAL *restrict gate, REAL *restrict qd, const quant_t *qc) {
  const long bh = B * H;
  for (long t = 0; t < n; t++) {
    const REAL *gt = g + t * 2 * bh;
    for (long b = 0; b < B; b++) {
      const REAL *gz = gt + b * 2 * H, *gc = gz + H;
      const REAL *db = drop ? drop + b * H : NULL;
      REAL *hb = h + b * H, *rb = r + b * H;
      REAL *zo = keep ? zb + t * bh + b * H : NULL;
      REAL *go = keep ? gate + t * 2 * bh + b * 2 * H : NULL;
#pragma omp simd
      for (long i = 0; i < H; i++) {
        REAL z = 1 / (1 + EXP(-gz[i]));
        REAL c = gc[i] > 0 ? gc[i] : 0;
        if (db) c = c * db[i];
        REAL hp = hb[i], d = hp - c, hn;
        if (recurrent)
          hn = MULADD(z, d, c);
        else
          hn = MULADD(z, hp, (1 - z) * c);
        hb[i] = hn;
        rb[i] = rb[i] + hn;
        if (keep) {
          zo[i] = z;
          go[i] = d * MULADD(-z, z, z);
          REAL sc = c > 0 ? 1 : 0;
          REAL dc = MULADD(-sc, z, sc);
          go[H + i] = db ? dc * db[i] : dc;
        }
      }
    }
    F(emit)(qc, t0 + t, B, H, r, out + t * bh, keep ? qd + t * bh : NULL);
  }
}

/* Gated backward over steps n-1..0 (bptt.GatedKernel.backward): ds [n, B, H] the gradient at each
 * step's spikes (v2: one step per call, the recurrent GEMM added by the caller); dh, dr [B, H]
 * adjoints carried in place; dpre [n, B, 2H] out; cut [n]: truncate after step t. */
void F(gated_backward)(long n, long B, long H, const REAL *restrict ds, const REAL *restrict qd,
                       const REAL *restrict gate, const REAL *restrict zb, REAL *restrict dh, REAL *restrict dr,
                       REAL *restrict dpre, const unsigned char *cut) {
  const long bh = B * H;
  for (long t = n - 1; t >= 0; t--) {
    const int c = cut[t];
    for (long b = 0; b < B; b++) {
      const long o = t * bh + b * H;
      const REAL *gt = gate + t * 2 * bh + b * 2 * H;
      REAL *dp = dpre + t * 2 * bh + b * 2 * H, *dhb = dh + b * H, *drb = dr + b * H;
#pragma omp simd
      for (long i = 0; i < H; i++) {
        REAL da = MULADD(ds[o + i] - drb[i], qd[o + i], drb[i]);
        REAL dht = dhb[i] + da;
        dp[i] = gt[i] * dht;
        dp[H + i] = gt[H + i] * dht;
        dhb[i] = c ? 0 : dht * zb[o + i];
        drb[i] = c ? 0 : da;
      }
    }
  }
}

/* LIF forward over n steps (bptt.LIFKernel.run): j [n, B, H]; decay [H]; cur, v [B, H] in place;
 * out [n, B, H]; with keep, cur_out [n, B, H] (I_t) and qd. */
void F(lif_forward)(long t0, long n, long B, long H, const REAL *restrict j, const REAL *restrict decay,
                    REAL *restrict cur, REAL *restrict v, REAL *restrict out, int keep, REAL *restrict cur_out,
                    REAL *restrict qd, const quant_t *qc) {
  const long bh = B * H;
  for (long t = 0; t < n; t++) {
    for (long b = 0; b < B; b++) {
      const REAL *jb = j + t * bh + b * H;
      REAL *cb = cur + b * H, *vb = v + b * H;
#pragma omp simd
      for (long i = 0; i < H; i++) {
        REAL ci = MULADD(decay[i], cb[i], jb[i]);
        cb[i] = ci;
        vb[i] = vb[i] + ci;
      }
    }
    if (keep) memcpy(cur_out + t * bh, cur, bh * sizeof(REAL));
    F(emit)(qc, t0 + t, B, H, v, out + t * bh, keep ? qd + t * bh : NULL);
  }
}

/* LIF backward over steps n-1..0 (bptt.LIFKernel.backward): dcur, dv in place, dj [n, B, H] out. */
void F(lif_backward)(long n, long B, long H, const REAL *restrict gout, const REAL *restrict qd,
                     const REAL *restrict decay, REAL *restrict dcur, REAL *restrict dv, REAL *restrict dj,
                     const unsigned char *cut) {
  const long bh = B * H;
  for (long t = n - 1; t >= 0; t--) {
    const int c = cut[t];
    for (long b = 0; b < B; b++) {
      const long o = t * bh + b * H;
      REAL *dcb = dcur + b * H, *dvb = dv + b * H;
#pragma omp simd
      for (long i = 0; i < H; i++) {
        REAL dvp = MULADD(gout[o + i] - dvb[i], qd[o + i], dvb[i]);
        REAL dit = dcb[i] + dvp;
        dj[o + i] = dit;
        dcb[i] = c ? 0 : dit * decay[i];
        dvb[i] = c ? 0 : dvp;
      }
    }
  }
}

/* Sigma-delta encoder forward over n steps (bptt.SigmaDeltaKernel.run): x [n, B, F], r [B, F]. */
void F(sigma_delta_forward)(long t0, long n, long B, long H, const REAL *restrict x, REAL *restrict r,
                            REAL *restrict out, int keep, REAL *restrict qd, const quant_t *qc) {
  const long bh = B * H;
  for (long t = 0; t < n; t++) {
    const REAL *xt = x + t * bh;
#pragma omp simd
    for (long i = 0; i < bh; i++) r[i] = r[i] + xt[i];
    F(emit)(qc, t0 + t, B, H, r, out + t * bh, keep ? qd + t * bh : NULL);
  }
}

/* Sigma-delta backward over steps n-1..0: dr in place, dx [n, B, F] out. */
void F(sigma_delta_backward)(long n, long B, long H, const REAL *restrict gout, const REAL *restrict qd,
                             REAL *restrict dr, REAL *restrict dx, const unsigned char *cut) {
  const long bh = B * H;
  for (long t = n - 1; t >= 0; t--) {
    const int c = cut[t];
    const long o = t * bh;
#pragma omp simd
    for (long i = 0; i < bh; i++) {
      REAL da = MULADD(gout[o + i] - dr[i], qd[o + i], dr[i]);
      dx[o + i] = da;
      dr[i] = c ? 0 : da;
    }
  }
}

#endif
