/* One compiled library of rnnkit: the source named by RNNKIT_BODY (a cell's loops, flat.c, or a cell
 * added from outside the package) instantiated for float and for double. Built by
 * rnnkit/kernels/build.py with -DRNNKIT_BODY="<path>"; its prototypes are read by cinterface.py.
 */
#include "rnnkit_kernels.h"

/* Subnormal floats (below 1.2e-38 in float32) take a slow microcode path, ~100x, in every product and
 * sum they enter; attention weights and softmax gradients reach them within a few dozen updates of a
 * translation model (measured: 15% of its training step). `on` = 1 flushes them to zero in this thread
 * (SSE's flush-to-zero and denormals-are-zero bits), 0 restores IEEE behaviour; returns the previous
 * setting, or -1 where the CPU has no such switch. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
EXPORT int rnnkit_flush_subnormals(int on) {
    const unsigned bits = 0x8040; /* FTZ (bit 15) | DAZ (bit 6) */
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | bits) : (csr & ~bits));
    return (csr & bits) == bits;
}
#else
EXPORT int rnnkit_flush_subnormals(int on) {
    (void)on;
    return -1;
}
#endif

#define R float
#define SFX _f32
#define GEMM sgemm
#define PACK spack
#define TANH tanh_f32
#define SQRT sqrtf
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#include RNNKIT_BODY
#undef R
#undef SFX
#undef GEMM
#undef PACK
#undef TANH
#undef SQRT
#undef EXP
#undef LOG
#undef LOG1P

#define R double
#define SFX _f64
#define GEMM dgemm
#define PACK dpack
#define TANH tanh
#define SQRT sqrt
#define EXP exp
#define LOG log
#define LOG1P log1p
#include RNNKIT_BODY
