// Convolution building blocks for the CUDA device (float32, NCHW, 2-D; 1-D runs as H = 1).
// A Conv is im2col_2d (one launch) + one batched cuBLAS matmul + bias_act (one launch).
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

// y[n, m, p] = act(y[n, m, p] + bias[m]) in place; act: 0 none, 1 relu, 2 sigmoid, 3 leaky relu (a),
// 4 clip [a, b], 5 tanh, 6 hard sigmoid (a*v + b clipped to [0, 1]), 7 hard swish.
extern "C" __global__ void bias_act(float* __restrict__ y, const float* __restrict__ bias,
                                    long long total, int M, long long P, int has_bias, int act,
                                    float a, float b)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        float v = y[i];
        if (has_bias) {
            v += bias[(int)((i / P) % M)];
        }
        switch (act) {
            case 1: v = v > 0.0f ? v : 0.0f; break;
            case 2: v = 1.0f / (1.0f + expf(-v)); break;
            case 3: v = v >= 0.0f ? v : a * v; break;
            case 4: v = fminf(fmaxf(v, a), b); break;
            case 5: v = tanhf(v); break;
            case 6: v = fminf(fmaxf(a * v + b, 0.0f), 1.0f); break;
            case 7: v = v * fminf(fmaxf(v / 6.0f + 0.5f, 0.0f), 1.0f); break;
            default: break;
        }
        y[i] = v;
    }
}
