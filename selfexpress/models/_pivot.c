/* The whole-dictionary start of the certified EnSC solver, one point at a time, compiled.
 *
 * Same method as selfexpress.models.ensc._pivot_whole_dictionary (block principal pivoting on the Gram, faces
 * solved in float64, row sums of the float32 Gram choose the exchanges, a point that stops improving continues by
 * monotone steps), with the same outputs. The torch version runs it on padded batches of points; here each point
 * runs to its own end with no padding, gathers or copies, which is what makes it faster on the CPU.
 *
 * Called from Python with buffers (numpy arrays, C-contiguous), the GIL released: blocks of points run on threads.
 * No numpy C API, so the module builds with the Python headers alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Cholesky of the face matrix M[:k,:k] + l2 I (M row-major with leading dimension ld) into L, then the solution
 * of (M + l2 I) c = r. Returns 0, or -1 when the matrix is not numerically positive definite. */
static int chol_solve(const double *M, int64_t ld, int64_t k, double l2, double *L, const double *r, double *z,
                      double *c)
{
    for (int64_t u = 0; u < k; u++) {
        for (int64_t v = 0; v <= u; v++) {
            double t = M[u * ld + v] + (u == v ? l2 : 0.0);
            const double *Lu = L + u * ld, *Lv = L + v * ld;
            for (int64_t w = 0; w < v; w++)
                t -= Lu[w] * Lv[w];
            if (u == v) {
                if (!(t > 0.0))
                    return -1;
                L[u * ld + u] = sqrt(t);
            } else {
                L[u * ld + v] = t / L[v * ld + v];
            }
        }
    }
    for (int64_t u = 0; u < k; u++) {
        double t = r[u];
        for (int64_t v = 0; v < u; v++)
            t -= L[u * ld + v] * z[v];
        z[u] = t / L[u * ld + u];
    }
    for (int64_t u = k - 1; u >= 0; u--) {
        double t = z[u];
        for (int64_t v = u + 1; v < k; v++)
            t -= L[v * ld + u] * c[v];
        c[u] = t / L[u * ld + u];
    }
    return 0;
}

static inline double sgn(double x) { return (x > 0.0) - (x < 0.0); }

/* The step from the sign-consistent point cl towards the face solution cn at which a sign-flipping atom reaches
 * zero (a fresh atom, cl == 0, blocks at 0), as _first_crossing in the torch version. */
static inline double crossing_step(double cl, double cn)
{
    double den = cl - cn;
    double t = cl == 0.0 ? 0.0 : cl / (den == 0.0 ? 1.0 : den);
    return t < 0.0 ? 0.0 : t;
}

typedef struct {
    const float *G32;    /* (N, N) float32 Gram: row sums */
    const double *G64;   /* (N, N) float64 Gram: faces */
    const double *X64;   /* (N, D) float64 data: residuals */
    int64_t N, D;
    double gmax;         /* max_j G64[j, j]: bounds every |G_uj| (float32 error band of the row sums) */
    const int64_t *pts;  /* (B,) the points */
    const double *at, *l2, *thr;  /* (B,) alpha tau, alpha (1 - tau), the entering threshold */
    int64_t B, m, max_iter, patience, cap;
    int64_t *out_ids;    /* (B, cap) active atoms (0 on padding) */
    double *out_c;       /* (B, cap) their coefficients (0 on padding and for unfinished points) */
    int64_t *out_k;      /* (B,) number of active atoms */
    int64_t *cand;       /* (B, m) the non-active atoms of largest |g_j| at the last step */
    uint8_t *done;       /* (B,) finished */
    double *resid;       /* (B, D) x_i - sum_u c_u x_u in float64 (x_i for an unfinished point) */
} problem;

/* Work space of one call: per point arrays of the face (cap) and of the dictionary (N). */
typedef struct {
    int64_t *A, *A2, *old, *topj, *entj;
    double *s, *s2, *M, *M2, *L, *r, *z, *cn, *cur, *cur2, *topv, *sent;
    float *g;
    uint8_t *isact;
} work;

static void work_free(work *w)
{
    free(w->A); free(w->A2); free(w->old); free(w->topj); free(w->s); free(w->s2); free(w->M); free(w->M2); free(w->L);
    free(w->r); free(w->z); free(w->cn); free(w->cur); free(w->cur2); free(w->topv); free(w->entj);
    free(w->sent);
    free(w->g); free(w->isact);
}

static int work_alloc(work *w, int64_t N, int64_t cap, int64_t m)
{
    memset(w, 0, sizeof(*w));
    size_t c = (size_t)cap, cc = (size_t)cap * (size_t)cap, mm = (size_t)(m > 0 ? m : 1);
    w->A = malloc(c * sizeof(int64_t)); w->A2 = malloc(c * sizeof(int64_t));
    w->old = malloc(c * sizeof(int64_t)); w->topj = malloc(mm * sizeof(int64_t));
    w->s = malloc(c * sizeof(double)); w->s2 = malloc(c * sizeof(double));
    w->M = malloc(cc * sizeof(double)); w->M2 = malloc(cc * sizeof(double)); w->L = malloc(cc * sizeof(double));
    w->r = malloc(c * sizeof(double)); w->z = malloc(c * sizeof(double)); w->cn = malloc(c * sizeof(double));
    w->cur = malloc(c * sizeof(double)); w->cur2 = malloc(c * sizeof(double)); w->topv = malloc(mm * sizeof(double));
    w->entj = malloc(mm * sizeof(int64_t)); w->sent = malloc(mm * sizeof(double));
    w->g = malloc((size_t)N * sizeof(float)); w->isact = calloc((size_t)N, 1);
    if (!w->A || !w->A2 || !w->old || !w->topj || !w->s || !w->s2 || !w->M || !w->M2 || !w->L || !w->r || !w->z ||
        !w->cn || !w->cur || !w->cur2 || !w->topv || !w->entj || !w->sent || !w->g || !w->isact) {
        work_free(w);
        return -1;
    }
    return 0;
}

/* The row sums are most of the kernel's time: on x86-64 Linux with GCC they are also compiled for AVX2 + FMA,
 * chosen at load time where the CPU has them (about 10 % on the whole start), with the baseline as fallback. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define ROW_SUMS_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ROW_SUMS_CLONES
#endif

/* g = G32[i] - sum_u c_u G32[A_u] in float32 (four rows per pass over g). */
ROW_SUMS_CLONES static void row_sums(const float *G32, int64_t N, int64_t i, const int64_t *A, const double *c,
                                     int64_t k, float *g)
{
    memcpy(g, G32 + i * N, (size_t)N * sizeof(float));
    int64_t u = 0;
    for (; u + 4 <= k; u += 4) {
        const float *r0 = G32 + A[u] * N, *r1 = G32 + A[u + 1] * N, *r2 = G32 + A[u + 2] * N,
                    *r3 = G32 + A[u + 3] * N;
        float c0 = (float)c[u], c1 = (float)c[u + 1], c2 = (float)c[u + 2], c3 = (float)c[u + 3];
        for (int64_t j = 0; j < N; j++)
            g[j] -= (c0 * r0[j] + c1 * r1[j]) + (c2 * r2[j] + c3 * r3[j]);
    }
    for (; u < k; u++) {
        const float *r0 = G32 + A[u] * N;
        float c0 = (float)c[u];
        for (int64_t j = 0; j < N; j++)
            g[j] -= c0 * r0[j];
    }
}

/* One point, to its end (finished, or left unfinished after max_iter steps, a face larger than cap or a face
 * that could not be factorised). */
static void solve_point(const problem *P, work *w, int64_t q)
{
    const int64_t N = P->N, m = P->m, cap = P->cap, i = P->pts[q];
    const double at = P->at[q], l2 = P->l2[q], thr = P->thr[q];
    const double *G64 = P->G64;
    int64_t k = 0, best = N + 1, patience = P->patience, it;
    int mono = 0, fin = 0;
    int64_t nb = 0;
    for (it = 0; it <= P->max_iter; it++) {
        /* the face solution with the current signs */
        if (k > 0) {
            for (int64_t u = 0; u < k; u++)
                w->r[u] = G64[i * N + w->A[u]] - at * w->s[u];
            if (chol_solve(w->M, cap, k, l2, w->L, w->r, w->z, w->cn) != 0)
                break;  /* not expected (G_AA + l2 I is positive definite): left to the monotone rounds */
        }
        row_sums(P->G32, N, i, w->A, w->cn, k, w->g);
        /* the m non-active atoms of largest |g_j| (self and active atoms count as -1, as in the torch version),
         * and the count of violators */
        int64_t nviol = 0;
        nb = 0;
        for (int64_t j = 0; j < N; j++) {
            double v = (j == i || w->isact[j]) ? -1.0 : fabs((double)w->g[j]);
            if (v > thr)
                nviol++;
            int64_t pos;
            if (nb < m) {
                pos = nb++;
            } else if (m > 0 && v > w->topv[m - 1]) {
                pos = m - 1;
            } else {
                continue;
            }
            while (pos > 0 && w->topv[pos - 1] < v) {
                w->topv[pos] = w->topv[pos - 1];
                w->topj[pos] = w->topj[pos - 1];
                pos--;
            }
            w->topv[pos] = v;
            w->topj[pos] = j;
        }
        int64_t nwrong = 0;
        for (int64_t u = 0; u < k; u++)
            nwrong += sgn(w->cn[u]) != w->s[u];
        /* a monotone point whose face solution flips signs takes a line-search step below, and nothing enters */
        const int blocked = mono && nwrong > 0;
        /* the entering atoms: the float32 violators, where those within the float32 rounding error of the row sums
         * (bound below) must also be violators in float64 (k products on the float64 Gram each). Without this
         * check a non-violator that float32 puts just above the threshold would enter, take the wrong sign, leave,
         * and enter again until max_iter. Kept in float32 order. */
        double csum = 0.0;
        for (int64_t u = 0; u < k; u++)
            csum += fabs(w->cn[u]);
        /* |g32 - g64| <= (k + 3) 2^-24 gmax (1 + sum |c_u|) to first order (G and c rounded to float32, k + 1
         * float32 operations per entry, |G_uj| <= gmax); twice that as the band */
        const double band = (double)(k + 3) * 0x1p-23 * P->gmax * (1.0 + csum);
        int64_t nent = 0;
        for (int64_t t = 0; !blocked && t < nb && w->topv[t] > thr; t++) {
            int64_t j = w->topj[t];
            double sj = sgn((double)w->g[j]);  /* |g32| > thr + band: g64 has the same sign */
            if (w->topv[t] <= thr + band) {
                const double *Gj = G64 + j * N;
                double gj = G64[i * N + j];
                for (int64_t u = 0; u < k; u++)
                    gj -= w->cn[u] * Gj[w->A[u]];  /* row j: G64 is symmetric (to rounding), one row read */
                if (!(fabs(gj) > thr))
                    continue;
                sj = sgn(gj);
            }
            w->entj[nent] = j;
            w->sent[nent++] = sj;
        }
        fin = nwrong == 0 && nent == 0;
        /* safeguard against cycling, as in the torch version */
        int64_t ninf = nwrong + nviol;
        if (ninf < best) {
            best = ninf;
            patience = P->patience;
        } else {
            patience--;
        }
        if (fin || it == P->max_iter)
            break;
        /* the next point on the kept atoms: the face solution, or (blocked) the first zero crossing on the segment
         * from cur, where the atoms that reach zero leave */
        double tmin = 2.0;
        if (blocked) {
            for (int64_t u = 0; u < k; u++) {
                if (sgn(w->cn[u]) == w->s[u])
                    continue;
                double tk = crossing_step(w->cur[u], w->cn[u]);
                if (tk < tmin)
                    tmin = tk;
            }
        }
        if (patience <= 0)
            mono = 1;
        /* compact: kept atoms first in their order (their face block carried over), then the entering ones */
        int64_t kk = 0;
        for (int64_t u = 0; u < k; u++) {
            int wrong = sgn(w->cn[u]) != w->s[u];
            int keep;
            double xn;
            if (blocked) {
                double cl = w->cur[u];
                keep = !wrong || !(crossing_step(cl, w->cn[u]) <= tmin + 1e-14);
                xn = cl + tmin * (w->cn[u] - cl);
            } else {
                keep = !wrong;
                xn = w->cn[u];
            }
            if (!keep) {
                w->isact[w->A[u]] = 0;
                continue;
            }
            w->A2[kk] = w->A[u];
            w->s2[kk] = w->s[u];
            w->cur2[kk] = xn;
            w->old[kk] = u;  /* for the face block */
            kk++;
        }
        if (kk + nent > cap) {  /* face too large for the work space: left to the monotone rounds */
            for (int64_t u = 0; u < k; u++)
                w->isact[w->A[u]] = 0;
            k = 0;  /* the unfinished point's output below has no atoms */
            break;
        }
        for (int64_t u = 0; u < kk; u++) {
            const double *Mu = w->M + w->old[u] * cap;
            for (int64_t v = 0; v < kk; v++)
                w->M2[u * cap + v] = Mu[w->old[v]];
        }
        for (int64_t t = 0; t < nent; t++) {
            int64_t j = w->entj[t];
            w->A2[kk + t] = j;
            w->s2[kk + t] = w->sent[t];
            w->cur2[kk + t] = 0.0;
            w->isact[j] = 1;
        }
        k = kk + nent;
        for (int64_t u = kk; u < k; u++) {
            const double *Gu = G64 + w->A2[u] * N;
            for (int64_t v = 0; v < k; v++) {
                double val = Gu[w->A2[v]];
                w->M2[u * cap + v] = val;
                w->M2[v * cap + u] = val;
            }
        }
        /* swap in the new face */
        int64_t *ti = w->A; w->A = w->A2; w->A2 = ti;
        double *td = w->s; w->s = w->s2; w->s2 = td;
        td = w->cur; w->cur = w->cur2; w->cur2 = td;
        td = w->M; w->M = w->M2; w->M2 = td;
    }
    P->done[q] = (uint8_t)fin;
    P->out_k[q] = k;
    for (int64_t u = 0; u < k; u++) {
        P->out_ids[q * cap + u] = w->A[u];
        P->out_c[q * cap + u] = fin ? w->cn[u] : 0.0;
        w->isact[w->A[u]] = 0;
    }
    for (int64_t t = 0; t < m; t++)
        P->cand[q * m + t] = t < nb ? w->topj[t] : 0;
    double *r = P->resid + q * P->D;
    memcpy(r, P->X64 + i * P->D, (size_t)P->D * sizeof(double));
    for (int64_t u = 0; fin && u < k; u++) {
        const double *xu = P->X64 + w->A[u] * P->D;
        double cu = w->cn[u];
        for (int64_t d = 0; d < P->D; d++)
            r[d] -= cu * xu[d];
    }
}

static int check(Py_buffer *b, Py_ssize_t n, Py_ssize_t itemsize, const char *name)
{
    if (b->len != n * itemsize) {
        PyErr_Format(PyExc_ValueError, "_pivot.pivot: buffer %s has %zd bytes, expected %zd", name, b->len,
                     n * itemsize);
        return -1;
    }
    return 0;
}

static PyObject *pivot(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer bG32, bG64, bX64, bpts, bat, bl2, bthr, bids, bc, bk, bcand, bdone, bres;
    Py_ssize_t m, max_iter, patience, cap, D;
    if (!PyArg_ParseTuple(args, "y*y*y*ny*y*y*y*nnnnw*w*w*w*w*w*", &bG32, &bG64, &bX64, &D, &bpts, &bat, &bl2,
                          &bthr, &m, &max_iter, &patience, &cap, &bids, &bc, &bk, &bcand, &bdone, &bres))
        return NULL;
    Py_buffer *all[] = {&bG32, &bG64, &bX64, &bpts, &bat, &bl2, &bthr, &bids, &bc, &bk, &bcand, &bdone, &bres};
    PyObject *ret = NULL;
    Py_ssize_t B = bpts.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t N = (Py_ssize_t)llround(sqrt((double)(bG32.len / (Py_ssize_t)sizeof(float))));
    if (m < 0 || max_iter < 0 || cap < 1 || N < 1 || D < 1) {
        PyErr_SetString(PyExc_ValueError, "_pivot.pivot: invalid sizes");
        goto out;
    }
    if (check(&bG32, N * N, 4, "G32") || check(&bG64, N * N, 8, "G64") || check(&bX64, N * D, 8, "X64") ||
        check(&bpts, B, 8, "pts") ||
        check(&bat, B, 8, "at") || check(&bl2, B, 8, "l2") || check(&bthr, B, 8, "thr") ||
        check(&bids, B * cap, 8, "ids") || check(&bc, B * cap, 8, "c") || check(&bk, B, 8, "k") ||
        check(&bcand, B * m, 8, "cand") || check(&bdone, B, 1, "done") ||
        check(&bres, B * D, 8, "r"))
        goto out;
    for (Py_ssize_t q = 0; q < B; q++) {
        int64_t i = ((const int64_t *)bpts.buf)[q];
        if (i < 0 || i >= N) {
            PyErr_Format(PyExc_ValueError, "_pivot.pivot: point %lld out of range", (long long)i);
            goto out;
        }
    }
    double gmax = 0.0;
    for (Py_ssize_t j = 0; j < N; j++) {
        double d = ((const double *)bG64.buf)[j * N + j];
        if (d > gmax)
            gmax = d;
    }
    problem P = {bG32.buf, bG64.buf, bX64.buf, N, D, gmax, bpts.buf, bat.buf, bl2.buf, bthr.buf, B, m, max_iter,
                 patience, cap, bids.buf, bc.buf, bk.buf, bcand.buf, bdone.buf, bres.buf};
    work w;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    if (work_alloc(&w, N, cap, m) != 0) {
        failed = 1;
    } else {
        for (Py_ssize_t q = 0; q < B; q++)
            solve_point(&P, &w, q);
        work_free(&w);
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto out;
    }
    Py_INCREF(Py_None);
    ret = Py_None;
out:
    for (size_t t = 0; t < sizeof(all) / sizeof(all[0]); t++)
        PyBuffer_Release(all[t]);
    return ret;
}

static PyMethodDef methods[] = {
    {"pivot", pivot, METH_VARARGS,
     "pivot(G32, G64, X64, D, pts, at, l2, thr, m, max_iter, patience, cap, ids, c, k, cand, done, r)\n\n"
     "The whole-dictionary start of the certified EnSC solver for points pts (see "
     "selfexpress.models.ensc._pivot_whole_dictionary); outputs are written into the last six buffers."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pivot",
                                    "Compiled kernel of the certified EnSC solver's whole-dictionary start.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__pivot(void) { return PyModule_Create(&module); }
