/* The AMX tier of rnnkit/kernels/bf16.c run on a scalar emulation of the tile instructions, so that
 * its tile configuration, strides and edge handling are checked on any x86-64 machine (CI has no AMX):
 * the _tile_* intrinsics are replaced, before bf16.c is included, by functions that keep eight tiles
 * in memory and check each instruction's operand shapes against the loaded configuration. Prints the
 * largest |C - reference| / (|A| |B|) over a set of odd shapes, or exits 1 on a shape violation.
 * Built and run by tests/test_bf16.py. */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define EXPORT
#define VEC
static int emu_rows[8], emu_colsb[8], emu_configured;
static uint8_t emu_tile[8][16][64];
static void emu_fail(const char *what) { fprintf(stderr, "tile fault: %s\n", what); exit(1); }
static float emu_bf(const uint8_t *p) {
    const uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void emu_loadconfig(const void *p) {
    const uint8_t *b = p;
    if (b[0] != 1) emu_fail("palette");
    for (int t = 0; t < 8; t++) {
        emu_colsb[t] = b[16 + 2 * t] | b[17 + 2 * t] << 8;
        emu_rows[t] = b[48 + t];
        if (emu_colsb[t] > 64 || emu_rows[t] > 16) emu_fail("config");
    }
    emu_configured = 1;
}
static void emu_loadd(int t, const void *base, long stride) {
    if (!emu_configured) emu_fail("load before config");
    for (int r = 0; r < emu_rows[t]; r++)
        memcpy(emu_tile[t][r], (const char *)base + r * stride, emu_colsb[t]);
}
static void emu_stored(int t, void *base, long stride) {
    if (!emu_configured) emu_fail("store before config");
    for (int r = 0; r < emu_rows[t]; r++)
        memcpy((char *)base + r * stride, emu_tile[t][r], emu_colsb[t]);
}
static void emu_zero(int t) { memset(emu_tile[t], 0, sizeof emu_tile[t]); }
static void emu_dp(int c, int a, int b) {
    if (emu_rows[c] != emu_rows[a] || emu_colsb[c] != emu_colsb[b] || emu_rows[b] != emu_colsb[a] / 4)
        emu_fail("dpbf16ps shapes");
    for (int m = 0; m < emu_rows[c]; m++)
        for (int n = 0; n < emu_colsb[c] / 4; n++) {
            float acc;
            memcpy(&acc, &emu_tile[c][m][4 * n], 4);
            for (int k = 0; k < emu_colsb[a] / 4; k++)
                acc += emu_bf(&emu_tile[a][m][4 * k]) * emu_bf(&emu_tile[b][k][4 * n])
                     + emu_bf(&emu_tile[a][m][4 * k + 2]) * emu_bf(&emu_tile[b][k][4 * n + 2]);
            memcpy(&emu_tile[c][m][4 * n], &acc, 4);
        }
}
#undef _tile_loadconfig
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbf16ps
#undef _tile_release
#define _tile_loadconfig(p) emu_loadconfig(p)
#define _tile_loadd(t, base, stride) emu_loadd(t, base, stride)
#define _tile_stored(t, base, stride) emu_stored(t, base, stride)
#define _tile_zero(t) emu_zero(t)
#define _tile_dpbf16ps(c, a, b) emu_dp(c, a, b)
#define _tile_release() (emu_configured = 0)

#include "bf16.c"

static float rnd(void) { return (float)rand() / RAND_MAX * 2 - 1; }
static float bfv(float x) {
    const uint32_t u = (uint32_t)bf_from_f32(x) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(void) {
    const long shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {37, 45, 70}, {33, 130, 129}, {100, 300, 17},
                              {17, 1100, 65}, {64, 128, 512}, {48, 2100, 300}};
    double worst = 0;
    for (unsigned s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const long M = shapes[s][0], K = shapes[s][1], N = shapes[s][2], ldc = N + 3;
        float *A = malloc(M * K * 4), *B = malloc(K * N * 4), *C = malloc(M * ldc * 4);
        uint16_t *Bp = malloc(rnnkit_bf16_packed_size(K, N) * 2);
        for (long i = 0; i < M * K; i++) A[i] = rnd();
        for (long i = 0; i < K * N; i++) B[i] = rnd();
        for (long i = 0; i < M * ldc; i++) C[i] = 0.25f;
        rnnkit_bf16_pack(K, N, B, N, Bp);
        for (int accumulate = 0; accumulate < 2; accumulate++) {
            if (rnnkit_bf16_gemm(2, M, N, K, A, NULL, K, Bp, C, ldc, accumulate)) return 2;
            for (long i = 0; i < M; i++) {
                for (long j = 0; j < N; j++) {
                    double sum = 0, mag = 0;
                    for (long k = 0; k < K; k++) {
                        sum += (double)bfv(A[i * K + k]) * bfv(B[k * N + j]);
                        mag += fabs((double)A[i * K + k] * B[k * N + j]);
                    }
                    /* after the first call C = P; after the second C = 2 P */
                    const double err = fabs(C[i * ldc + j] - (accumulate + 1) * sum) / (mag + 1e-30);
                    if (err > worst) worst = err;
                }
                for (long j = N; j < ldc; j++)
                    if (C[i * ldc + j] != 0.25f) { fprintf(stderr, "wrote past N\n"); return 3; }
            }
        }
        free(A); free(B); free(C); free(Bp);
    }
    printf("%.3e\n", worst);
    return 0;
}
