// Convolution building blocks for the CUDA device (float32, NCHW, 2-D; 1-D runs as H = 1).
// A Conv is im2col_2d (one launch) + one batched cuBLAS matmul + bias_act (one launch), or, with few
// output channels a group, one conv2d_direct launch.
// Each kernel has a numpy twin in gpuinfer/backends/cuda/twins.py that the strict stand-in runs.

// The columns of output rows OH0 .. OH0+OH-1 (a band; OH0 = 0 and OH = all rows for a whole image):
// cols[n, (c*KH + kh)*KW + kw, oh*OW + ow] = x[n, c, (OH0 + oh)*SH - PH + kh*DH, ow*SW - PW + kw*DW] (0 outside)
extern "C" __global__ void im2col_2d(const float* __restrict__ x, float* __restrict__ cols,
                                     int N, int C, int H, int W, int KH, int KW, int OH0, int OH, int OW,
                                     int SH, int SW, int PH, int PW, int DH, int DW)
{
    const long long total = (long long)N * C * KH * KW * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(i % OW);
        long long t = i / OW;
        const int oh = (int)(t % OH); t /= OH;
        const int kw = (int)(t % KW); t /= KW;
        const int kh = (int)(t % KH); t /= KH;
        const int c = (int)(t % C);
        const long long n = t / C;
        const int h = (OH0 + oh) * SH - PH + kh * DH;
        const int w = ow * SW - PW + kw * DW;
        float v = 0.0f;
        if (h >= 0 && h < H && w >= 0 && w < W) {
            v = x[((n * C + c) * H + h) * (long long)W + w];
        }
        cols[i] = v;
    }
}

// act: 0 none, 1 relu, 2 sigmoid, 3 leaky relu (a), 4 clip [a, b], 5 tanh,
// 6 hard sigmoid (a*v + b clipped to [0, 1]), 7 hard swish, 8 PRelu with a slope per output
// channel (s: that channel's slope, read by the caller only for act 8), 9 SiLU (v * sigmoid(v), the
// fused Sigmoid+Mul step), 10 erf.
#define ACT_PRELU 8
__device__ __forceinline__ float activate(float v, int act, float a, float b, float s)
{
    switch (act) {
        case 1: return v > 0.0f ? v : 0.0f;
        case 2: return 1.0f / (1.0f + expf(-v));
        case 3: return v >= 0.0f ? v : a * v;
        case 4: return fminf(fmaxf(v, a), b);
        case 5: return tanhf(v);
        case 6: return fminf(fmaxf(a * v + b, 0.0f), 1.0f);
        case 7: return v * fminf(fmaxf(v / 6.0f + 0.5f, 0.0f), 1.0f);
        case ACT_PRELU: return v >= 0.0f ? v : s * v;
        case 9: return v * (1.0f / (1.0f + expf(-v)));
        case 10: return erff(v);
        default: return v;
    }
}

// y[n, m, p] = act(x[n, m, p] + bias[m]); x may be y (the conv epilogue, in place), or another
// tensor (a standalone activation op: one launch where CuPy's ufuncs take several).  slope: M
// per-channel PRelu slopes (read only when act is ACT_PRELU; any valid pointer otherwise).
extern "C" __global__ void bias_act(const float* x, float* y, const float* __restrict__ bias,
                                    const float* __restrict__ slope, long long total, int M, long long P,
                                    int has_bias, int act, float a, float b)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        float v = x[i];
        const int m = (int)((i / P) % M);
        if (has_bias) {
            v += bias[m];
        }
        y[i] = activate(v, act, a, b, act == ACT_PRELU ? slope[m] : 0.0f);
    }
}

// Direct convolution for narrow outputs (M / G <= CONV_DIRECT_MAX_M output channels a group):
// one thread per (n, g, oh, ow) keeps all the group's output channels in registers, reads each
// input value once and multiplies it by the group's weights (the same for a whole warp, so they
// are broadcast).  im2col would write C*KH*KW/M times the output as columns for such a conv;
// here there is no scratch, and bias and activation are applied on the way out: one launch.
#define CONV_DIRECT_MAX_M 16
extern "C" __global__ void conv2d_direct(const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ bias, const float* __restrict__ slope,
                                         float* __restrict__ y, int N, int C, int H, int W, int M, int G, int KH, int KW,
                                         int OH, int OW, int SH, int SW, int PH, int PW, int DH, int DW,
                                         int has_bias, int act, float a, float b)
{
    const int mg = M / G, cg = C / G;
    const long long wstride = (long long)cg * KH * KW;  // one output channel's weights
    const long long total = (long long)N * G * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(i % OW);
        long long t = i / OW;
        const int oh = (int)(t % OH); t /= OH;
        const int g = (int)(t % G);
        const long long n = t / G;
        float acc[CONV_DIRECT_MAX_M];
#pragma unroll
        for (int j = 0; j < CONV_DIRECT_MAX_M; ++j) acc[j] = 0.0f;
        for (int c = 0; c < cg; ++c) {
            const float* xp = x + ((n * C + (long long)g * cg + c) * H) * (long long)W;
            const float* wp = w + ((long long)g * mg * cg + c) * KH * KW;
            for (int kh = 0; kh < KH; ++kh) {
                const int h = oh * SH - PH + kh * DH;
                if (h < 0 || h >= H) continue;
                for (int kw = 0; kw < KW; ++kw) {
                    const int iw = ow * SW - PW + kw * DW;
                    if (iw < 0 || iw >= W) continue;
                    const float v = xp[(long long)h * W + iw];
                    const float* wk = wp + kh * KW + kw;
#pragma unroll
                    for (int j = 0; j < CONV_DIRECT_MAX_M; ++j) {
                        if (j < mg) acc[j] += v * wk[j * wstride];
                    }
                }
            }
        }
#pragma unroll
        for (int j = 0; j < CONV_DIRECT_MAX_M; ++j) {
            if (j < mg) {
                const int m = g * mg + j;
                const float v = acc[j] + (has_bias ? bias[m] : 0.0f);
                y[((n * M + m) * OH + oh) * (long long)OW + ow] =
                    activate(v, act, a, b, act == ACT_PRELU ? slope[m] : 0.0f);
            }
        }
    }
}
