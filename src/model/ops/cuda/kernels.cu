// CUDA versions of the custom ops in src/model/ops (NHWC, f32), compiled to PTX by build.rs
// under the `cuda` feature and launched from cuda/mod.rs. Each mirrors its CPU kernel:
// the same Keras padding, tap order and activation codes (0 identity, 1 ReLU, 2 ReLU6).
//
// Elementwise kernels use one thread per output element with channels fastest, so a warp reads
// 32 consecutive channels. Reductions (weight/bias gradients, column sums) give each thread one
// channel and a strided share of the rows, reduce the block in shared memory and add the
// block's total with one atomicAdd per value into an output the caller zeroed.

#define ACT_IDENTITY 0
#define ACT_RELU 1
#define ACT_RELU6 2

__device__ __forceinline__ float act_apply(float v, int act) {
    if (act == ACT_RELU) return fmaxf(v, 0.0f);
    // NaN passes through, as Rust's clamp on the CPU keeps it (fmaxf would turn it into 0).
    if (act == ACT_RELU6) return v != v ? v : fminf(fmaxf(v, 0.0f), 6.0f);
    return v;
}

// Whether the activation's derivative is 1 where its output is y.
__device__ __forceinline__ bool act_passes(float y, int act) {
    if (act == ACT_RELU) return y > 0.0f;
    if (act == ACT_RELU6) return y > 0.0f && y < 6.0f;
    return true;
}

// Sizes of a 3x3 conv over an NHWC input (the CPU's `Geometry`).
struct Geometry {
    int n, h, w, c, ho, wo, stride, pad;
};

// The coordinates of flat index i in an NHWC tensor [N, h, w, c].
struct Pixel {
    int n, y, x, c;
};

__device__ __forceinline__ Pixel unravel(long long i, int h, int w, int c) {
    Pixel p;
    p.c = (int)(i % c);
    long long r = i / c;
    p.x = (int)(r % w);
    r /= w;
    p.y = (int)(r % h);
    p.n = (int)(r / h);
    return p;
}

#define GRID_STRIDE(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)gridDim.x * blockDim.x)

// out[n,oh,ow,c] = act(bias[c] + sum over taps of x[n, oh*s+kh-pad, ow*s+kw-pad, c] * w[kh,kw,c])
extern "C" __global__ void depthwise3x3_forward(const float* x, const float* weight,
                                                const float* bias, float* out, Geometry g,
                                                int act) {
    long long total = (long long)g.n * g.ho * g.wo * g.c;
    GRID_STRIDE(i, total) {
        Pixel o = unravel(i, g.ho, g.wo, g.c);
        int n = o.n, oh = o.y, ow = o.x, ch = o.c;
        float acc = bias[ch];
        for (int kh = 0; kh < 3; ++kh) {
            int ih = oh * g.stride + kh - g.pad;
            if (ih < 0 || ih >= g.h) continue;
            const float* row = x + ((long long)n * g.h + ih) * g.w * g.c;
            for (int kw = 0; kw < 3; ++kw) {
                int iw = ow * g.stride + kw - g.pad;
                if (iw < 0 || iw >= g.w) continue;
                acc = fmaf(row[(long long)iw * g.c + ch], weight[(kh * 3 + kw) * g.c + ch], acc);
            }
        }
        out[i] = act_apply(acc, act);
    }
}

// Output coordinate that reads input coordinate `i` at tap `k`, or -1.
__device__ __forceinline__ int output_at(int i, int k, int len, const Geometry& g) {
    int t = i + g.pad - k;
    if (t < 0 || t % g.stride != 0) return -1;
    t /= g.stride;
    return t < len ? t : -1;
}

// grad_x[n,ih,iw,c] = sum over the outputs that read it of grad[n,oh,ow,c] * w[kh,kw,c]
extern "C" __global__ void depthwise3x3_grad_input(const float* grad, const float* weight,
                                                   float* out, Geometry g) {
    long long total = (long long)g.n * g.h * g.w * g.c;
    GRID_STRIDE(i, total) {
        Pixel in = unravel(i, g.h, g.w, g.c);
        int n = in.n, ih = in.y, iw = in.x, ch = in.c;
        float acc = 0.0f;
        for (int kh = 0; kh < 3; ++kh) {
            int oh = output_at(ih, kh, g.ho, g);
            if (oh < 0) continue;
            const float* row = grad + ((long long)n * g.ho + oh) * g.wo * g.c;
            for (int kw = 0; kw < 3; ++kw) {
                int ow = output_at(iw, kw, g.wo, g);
                if (ow < 0) continue;
                acc = fmaf(row[(long long)ow * g.c + ch], weight[(kh * 3 + kw) * g.c + ch], acc);
            }
        }
        out[i] = acc;
    }
}

#define REDUCE_X 32  // channels per block (one warp wide)
#define REDUCE_Y 8   // rows shared out within a block

// Adds `values[k]` (k < count) of every thread row into out[k * stride + ch], one atomicAdd
// per value per block.
template <int COUNT>
__device__ __forceinline__ void block_add(float (&values)[COUNT], float* out, int stride,
                                          int ch, bool active) {
    __shared__ float partial[REDUCE_Y][COUNT][REDUCE_X];
    for (int k = 0; k < COUNT; ++k) partial[threadIdx.y][k][threadIdx.x] = values[k];
    __syncthreads();
    if (threadIdx.y == 0 && active) {
        for (int k = 0; k < COUNT; ++k) {
            float sum = 0.0f;
            for (int y = 0; y < REDUCE_Y; ++y) sum += partial[y][k][threadIdx.x];
            atomicAdd(out + (long long)k * stride + ch, sum);
        }
    }
}

// out[10, C] (zeroed by the caller) += the 9 tap gradients then the bias gradient.
// Block (REDUCE_X, REDUCE_Y); grid (ceil(C / REDUCE_X), any).
extern "C" __global__ void depthwise3x3_grad_weight(const float* x, const float* grad,
                                                    float* out, Geometry g) {
    int ch = blockIdx.x * REDUCE_X + threadIdx.x;
    bool active = ch < g.c;
    float acc[10];
    for (int k = 0; k < 10; ++k) acc[k] = 0.0f;
    long long positions = (long long)g.n * g.ho * g.wo;
    if (active) {
        for (long long p = (long long)blockIdx.y * REDUCE_Y + threadIdx.y; p < positions;
             p += (long long)gridDim.y * REDUCE_Y) {
            Pixel o = unravel(p, g.ho, g.wo, 1);
            int n = o.n, oh = o.y, ow = o.x;
            float go = grad[p * g.c + ch];
            acc[9] += go;
            for (int kh = 0; kh < 3; ++kh) {
                int ih = oh * g.stride + kh - g.pad;
                if (ih < 0 || ih >= g.h) continue;
                const float* row = x + ((long long)n * g.h + ih) * g.w * g.c;
                for (int kw = 0; kw < 3; ++kw) {
                    int iw = ow * g.stride + kw - g.pad;
                    if (iw < 0 || iw >= g.w) continue;
                    acc[kh * 3 + kw] = fmaf(row[(long long)iw * g.c + ch], go, acc[kh * 3 + kw]);
                }
            }
        }
    }
    block_add<10>(acc, out, g.c, ch, active);
}

// out[cols] (zeroed by the caller) += the sum over rows of x[rows, cols].
// Block (REDUCE_X, REDUCE_Y); grid (ceil(cols / REDUCE_X), any).
extern "C" __global__ void column_sum(const float* x, float* out, long long rows, int cols) {
    int col = blockIdx.x * REDUCE_X + threadIdx.x;
    bool active = col < cols;
    float acc[1] = {0.0f};
    if (active) {
        for (long long r = (long long)blockIdx.y * REDUCE_Y + threadIdx.y; r < rows;
             r += (long long)gridDim.y * REDUCE_Y) {
            acc[0] += x[r * cols + col];
        }
    }
    block_add<1>(acc, out, 0, col, active);
}

// x[i] = act(x[i] + bias[i % cols]) in place: the epilogue after the cuBLAS GEMM of `dense`.
extern "C" __global__ void bias_act(float* x, const float* bias, long long total, int cols,
                                    int act) {
    GRID_STRIDE(i, total) { x[i] = act_apply(x[i] + bias[i % cols], act); }
}

// out[i] = grad[i] where the activation passes at its output y[i], else 0.
extern "C" __global__ void act_mask(const float* grad, const float* y, float* out,
                                    long long total, int act) {
    GRID_STRIDE(i, total) { out[i] = act_passes(y[i], act) ? grad[i] : 0.0f; }
}

// One fused Adam step in place (the CPU's AdamUpdate, bias corrections folded into
// step_size and eps by the caller).
extern "C" __global__ void adam_update(float* theta, const float* grad, float* m, float* v,
                                       long long total, float b1, float b2, float one_minus_b1,
                                       float one_minus_b2, float step_size, float eps) {
    GRID_STRIDE(i, total) {
        float g = grad[i];
        float mi = b1 * m[i] + one_minus_b1 * g;
        float vi = b2 * v[i] + one_minus_b2 * g * g;
        m[i] = mi;
        v[i] = vi;
        theta[i] -= step_size * mi / (sqrtf(vi) + eps);
    }
}
