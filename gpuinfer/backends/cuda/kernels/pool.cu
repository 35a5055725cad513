// 2-D max pooling for the CUDA device (float32, NCHW); the output shape (ceil_mode included) is
// computed on the host.  NaN propagates as numpy's max does.  Twin: twins.maxpool_2d.
extern "C" __global__ void maxpool_2d(const float* __restrict__ x, float* __restrict__ y,
                                      int N, int C, int H, int W, int KH, int KW, int OH, int OW,
                                      int SH, int SW, int PH, int PW, int DH, int DW)
{
    const long long total = (long long)N * C * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long nc = i / ((long long)OW * OH);
        const float* plane = x + nc * H * (long long)W;
        float m = __int_as_float(0xff800000);  // -inf (NVRTC has no INFINITY macro)
        for (int kh = 0; kh < KH; ++kh) {
            const int h = oh * SH - PH + kh * DH;
            if (h < 0 || h >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int w = ow * SW - PW + kw * DW;
                if (w < 0 || w >= W) continue;
                const float v = plane[h * (long long)W + w];
                if (v > m || isnan(v)) m = v;
                if (isnan(m)) break;
            }
        }
        y[i] = m;
    }
}
