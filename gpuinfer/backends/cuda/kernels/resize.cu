// Resize of the last two axes by separable tap tables (float32, NCHW-like: any leading axes).
// The tables (input row/column and weight of every tap of every output row/column) are computed
// on the host by the same code as the CPU path, once per node and shape, and uploaded once.
// y[p, oh, ow] = sum_i sum_j wh[oh, i] * ww[ow, j] * x[p, ih[oh, i], iw[ow, j]].  Twin: twins.resize_taps_2d.
extern "C" __global__ void resize_taps_2d(const float* __restrict__ x, float* __restrict__ y,
                                          const long long* __restrict__ ih, const float* __restrict__ wh,
                                          const long long* __restrict__ iw, const float* __restrict__ ww,
                                          long long planes, int H, int W, int OH, int OW, int TH, int TW)
{
    const long long total = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long p = i / ((long long)OW * OH);
        const float* plane = x + p * H * (long long)W;
        float acc = 0.0f;
        for (int a = 0; a < TH; ++a) {
            const float wa = wh[oh * TH + a];
            const long long row = ih[oh * TH + a] * (long long)W;
            float inner = 0.0f;
            for (int b = 0; b < TW; ++b) {
                inner += ww[ow * TW + b] * plane[row + iw[ow * TW + b]];
            }
            acc += wa * inner;
        }
        y[i] = acc;
    }
}
