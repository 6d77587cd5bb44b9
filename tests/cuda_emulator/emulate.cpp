// Runs the CUDA kernels of src/model/ops/cuda/kernels.cu on the CPU, so that machines without
// a GPU execute their index arithmetic, padding, grid-stride loops and block reductions
// (tests/cuda_kernels_on_cpu.rs compares the results with the CPU ops). CUDA's built-ins are
// emulated: blocks run one after another, and the threads of a block run as OS threads that
// meet at a barrier for __syncthreads (so __shared__ arrays, `static` here, are the block's).
//
// Usage: emulate KERNEL CONFIG DIR ARGS...
//   KERNEL  a kernel of kernels.cu
//   CONFIG  `launch`: the grid cuda/mod.rs launches; `tiny`: a single small block, so that
//           every thread loops over many elements
//   DIR     holds the kernel's buffers as raw little-endian f32 files; the written ones are
//           read from and written back to the same files (named per kernel below)
//   ARGS    the kernel's integer and float arguments
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

static dim3 blockIdx, blockDim, gridDim;
static thread_local dim3 threadIdx;
static std::barrier<>* block_barrier = nullptr;
static std::mutex atomic_lock;

static void __syncthreads() { block_barrier->arrive_and_wait(); }

static float atomicAdd(float* address, float value) {
    std::lock_guard<std::mutex> guard(atomic_lock);
    float old = *address;
    *address = old + value;
    return old;
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

#include "../../src/model/ops/cuda/kernels.cu"

// Runs `kernel` over every thread of the grid. Kernels that synchronise need the threads of a
// block to run at once; the others run them in turn.
static void launch(dim3 grid, dim3 block, bool synchronises, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = block;
    unsigned threads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = {bx, by, bz};
                auto thread = [&](unsigned t) {
                    threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                    kernel();
                };
                if (!synchronises) {
                    for (unsigned t = 0; t < threads; ++t) thread(t);
                    continue;
                }
                std::barrier<> barrier((std::ptrdiff_t)threads);
                block_barrier = &barrier;
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; ++t) pool.emplace_back(thread, t);
                for (auto& th : pool) th.join();
            }
}

// The launch shapes of cuda/mod.rs (`elementwise`, `reduction`), or a single small block.
static const unsigned BLOCK = 256;
static bool tiny = false;

static void elementwise(long long total, const std::function<void()>& kernel) {
    unsigned blocks = (unsigned)std::min<long long>((total + BLOCK - 1) / BLOCK, 65535);
    if (tiny) launch({1, 1, 1}, {32, 1, 1}, false, kernel);
    else if (blocks > 0) launch({blocks, 1, 1}, {BLOCK, 1, 1}, false, kernel);
}

static void reduction(long long rows, int cols, const std::function<void()>& kernel) {
    unsigned col_blocks = (unsigned)((cols + REDUCE_X - 1) / REDUCE_X);
    long long row_blocks = std::clamp<long long>((rows + REDUCE_Y * 64 - 1) / (REDUCE_Y * 64), 1, 1024);
    if (col_blocks == 0) return;
    launch({col_blocks, tiny ? 1u : (unsigned)row_blocks, 1}, {REDUCE_X, REDUCE_Y, 1}, true, kernel);
}

static std::string dir;

static std::vector<float> load(const char* name) {
    std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) { std::fprintf(stderr, "cannot open %s\n", path.c_str()); std::exit(2); }
    std::vector<float> v;
    float x;
    while (std::fread(&x, sizeof x, 1, f) == 1) v.push_back(x);
    std::fclose(f);
    return v;
}

static void save(const char* name, const std::vector<float>& v) {
    std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), sizeof(float), v.size(), f) != v.size()) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

int main(int argc, char** argv) {
    if (argc < 4) { std::fprintf(stderr, "usage: emulate KERNEL launch|tiny DIR ARGS...\n"); return 2; }
    std::string kernel = argv[1];
    tiny = std::string(argv[2]) == "tiny";
    dir = argv[3];
    auto arg = [&](int i) { return std::atoll(argv[4 + i]); };
    auto argf = [&](int i) { return (float)std::atof(argv[4 + i]); };
    auto geometry = [&]() {
        return Geometry{(int)arg(0), (int)arg(1), (int)arg(2), (int)arg(3),
                        (int)arg(4), (int)arg(5), (int)arg(6), (int)arg(7)};
    };
    if (kernel == "depthwise3x3_forward") {  // ARGS: geometry (8 ints), act
        Geometry g = geometry();
        auto x = load("x"), w = load("weight"), b = load("bias");
        std::vector<float> out((size_t)g.n * g.ho * g.wo * g.c, NAN);
        elementwise((long long)out.size(), [&] {
            depthwise3x3_forward(x.data(), w.data(), b.data(), out.data(), g, (int)arg(8));
        });
        save("out", out);
    } else if (kernel == "depthwise3x3_grad_input") {  // ARGS: geometry
        Geometry g = geometry();
        auto grad = load("grad"), w = load("weight");
        std::vector<float> out((size_t)g.n * g.h * g.w * g.c, NAN);
        elementwise((long long)out.size(),
                    [&] { depthwise3x3_grad_input(grad.data(), w.data(), out.data(), g); });
        save("out", out);
    } else if (kernel == "depthwise3x3_grad_weight") {  // ARGS: geometry
        Geometry g = geometry();
        auto x = load("x"), grad = load("grad");
        std::vector<float> out((size_t)10 * g.c, 0.0f);
        reduction((long long)g.n * g.ho * g.wo, g.c,
                  [&] { depthwise3x3_grad_weight(x.data(), grad.data(), out.data(), g); });
        save("out", out);
    } else if (kernel == "column_sum") {  // ARGS: rows, cols
        long long rows = arg(0);
        int cols = (int)arg(1);
        auto x = load("x");
        std::vector<float> out((size_t)cols, 0.0f);
        reduction(rows, cols, [&] { column_sum(x.data(), out.data(), rows, cols); });
        save("out", out);
    } else if (kernel == "bias_act") {  // ARGS: cols, act; x is updated in place
        auto x = load("x"), b = load("bias");
        long long total = (long long)x.size();
        elementwise(total, [&] { bias_act(x.data(), b.data(), total, (int)arg(0), (int)arg(1)); });
        save("x", x);
    } else if (kernel == "act_mask") {  // ARGS: act
        auto grad = load("grad"), y = load("y");
        std::vector<float> out(grad.size(), NAN);
        long long total = (long long)grad.size();
        elementwise(total, [&] { act_mask(grad.data(), y.data(), out.data(), total, (int)arg(0)); });
        save("out", out);
    } else if (kernel == "adam_update") {  // ARGS: b1 b2 step_size eps; theta, m, v in place
        auto theta = load("theta"), grad = load("grad"), m = load("m"), v = load("v");
        long long total = (long long)theta.size();
        float b1 = argf(0), b2 = argf(1), step = argf(2), eps = argf(3);
        elementwise(total, [&] {
            adam_update(theta.data(), grad.data(), m.data(), v.data(), total, b1, b2, 1.0f - b1,
                        1.0f - b2, step, eps);
        });
        save("theta", theta);
        save("m", m);
        save("v", v);
    } else {
        std::fprintf(stderr, "unknown kernel %s\n", kernel.c_str());
        return 2;
    }
    return 0;
}
