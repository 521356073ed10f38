#include "gemm.cuh"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace lima::cuda {

Gemm::Choice Gemm::choice_from_env() {
    const char *env = std::getenv("LIMA_CUDA_GEMM");
    if (!env || !*env || std::strcmp(env, "heuristic") == 0) return Choice::heuristic;
    LIMA_REQUIRE(std::strcmp(env, "measured") == 0, LIMA_ERR_INVALID_ARGUMENT, "LIMA_CUDA_GEMM is '", env,
                 "': it must be 'heuristic' or 'measured' (how cuBLASLt's algorithm is chosen)");
    return Choice::measured;
}

bool Gemm::matvec_from_env() {
    const char *env = std::getenv("LIMA_CUDA_MATVEC");
    if (!env || !*env || std::strcmp(env, "0") == 0) return false;
    LIMA_REQUIRE(std::strcmp(env, "1") == 0, LIMA_ERR_INVALID_ARGUMENT, "LIMA_CUDA_MATVEC is '", env,
                 "': it must be 1 (decoding products on the matrix-vector kernel) or 0");
    return true;
}

namespace {

// y (M, N) = x (M, K) W^T for M <= Gemm::kMatvecRows, W (N, K) row-major: one warp an output column
// n, each lane reading 8 weights (16 bytes) of W's row n at a time and the same 8 of every x row,
// fp32 sums reduced with shuffles, then rounded once to TOut. Written here because decoding reads
// every weight once per token: the product is a pass over W, and this keeps it one.
template <typename TOut>
__global__ void matvec_k(TOut *y, const bf16 *x, const bf16 *W, int M, int N, int K) {
    constexpr int MAXM = Gemm::kMatvecRows;
    const int lane = threadIdx.x % 32, n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N) return;
    float acc[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) acc[m] = 0.0f;
    const bf16 *w = W + long(n) * K;
#pragma unroll 2
    for (int k = lane * 8; k < K; k += 32 * 8) {
        const uint4 wv = *reinterpret_cast<const uint4 *>(w + k);
        const __nv_bfloat162 *w2 = reinterpret_cast<const __nv_bfloat162 *>(&wv);
        float wf[8];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float2 f = __bfloat1622float2(w2[j]);
            wf[2 * j] = f.x;
            wf[2 * j + 1] = f.y;
        }
#pragma unroll
        for (int m = 0; m < MAXM; ++m) {
            if (m >= M) break;
            const uint4 xv = *reinterpret_cast<const uint4 *>(x + long(m) * K + k);
            const __nv_bfloat162 *x2 = reinterpret_cast<const __nv_bfloat162 *>(&xv);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float2 f = __bfloat1622float2(x2[j]);
                acc[m] = fmaf(f.x, wf[2 * j], acc[m]);
                acc[m] = fmaf(f.y, wf[2 * j + 1], acc[m]);
            }
        }
    }
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
        if (m >= M) break;
        float v = acc[m];
        for (int s = 16; s > 0; s /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, s);
        if (lane == 0) {
            if constexpr (std::is_same_v<TOut, float>)
                y[long(m) * N + n] = v;
            else
                y[long(m) * N + n] = __float2bfloat16(v);
        }
    }
}

bool aligned16(const void *p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool Gemm::takes_matvec(const bf16 *A, bool transA, const bf16 *B, bool transB, int M, int K, float beta) const {
    return matvec_ && !transA && transB && M <= kMatvecRows && beta == 0.0f && K % 8 == 0 && aligned16(A) && aligned16(B);
}

Gemm::Gemm() : choice_(choice_from_env()), matvec_(matvec_from_env()) {
    LIMA_CUBLAS_CHECK(cublasLtCreate(&handle_));
    LIMA_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

Gemm::~Gemm() {
    for (auto &[k, p] : plans_) {
        cublasLtMatrixLayoutDestroy(p.a);
        cublasLtMatrixLayoutDestroy(p.b);
        cublasLtMatrixLayoutDestroy(p.c);
        cublasLtMatmulDescDestroy(p.desc);
    }
    cudaFree(workspace_);
    cublasLtDestroy(handle_);
}

int Gemm::version() { return int(cublasLtGetVersion()); }

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the column-major view of a
// row-major matrix is its transpose, so cuBLASLt gets B first and A second with the same flags.
Gemm::Plan &Gemm::plan(const Key &k) {
    auto it = plans_.find(k);
    if (it != plans_.end()) return it->second;
    const auto [M, N, K, transA, transB, c_f32, accumulate] = k;
    Plan p;
    LIMA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opFirst = transB ? CUBLAS_OP_T : CUBLAS_OP_N, opSecond = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    LIMA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opFirst, sizeof opFirst));
    LIMA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opSecond, sizeof opSecond));
    // first operand: B stored row-major (K, N) or (N, K) -> column-major (N, K) or (K, N)
    const uint64_t b_rows = transB ? uint64_t(K) : uint64_t(N), b_cols = transB ? uint64_t(N) : uint64_t(K);
    const uint64_t a_rows = transA ? uint64_t(M) : uint64_t(K), a_cols = transA ? uint64_t(K) : uint64_t(M);
    LIMA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, b_rows, b_cols, int64_t(b_rows)));
    LIMA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, a_rows, a_cols, int64_t(a_rows)));
    LIMA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, c_f32 ? CUDA_R_32F : CUDA_R_16BF, uint64_t(N), uint64_t(M), int64_t(N)));
    cublasLtMatmulPreference_t pref;
    LIMA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LIMA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                                           sizeof workspace_bytes_));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.b, p.a, p.c, p.c, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    LIMA_REQUIRE(hs == CUBLAS_STATUS_SUCCESS && found > 0, LIMA_ERR_UNSUPPORTED, "cuBLASLt has no algorithm for a ", M, " x ",
                 N, " x ", K, " bf16 product (status ", int(hs), ")");
    p.algo = res.algo;
    p.measured = choice_ == Choice::heuristic;
    return plans_.emplace(k, p).first->second;
}

// Times the heuristic's first candidates on these operands and keeps the fastest. Inside a CUDA
// graph's capture nothing can be timed: the heuristic's choice stays. The products run into C when
// they overwrite it (the real product follows), else into a zeroed scratch of C's size.
void Gemm::measure(Plan &p, const Key &k, void *C, const void *A, const void *B, float beta, cudaStream_t st) {
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    LIMA_CUDA_CHECK(cudaStreamIsCapturing(st, &cap));
    if (cap != cudaStreamCaptureStatusNone) return;
    p.measured = true;
    const auto [M, N, K, transA, transB, c_f32, accumulate] = k;
    (void)transA, (void)transB, (void)accumulate;
    cublasLtMatmulPreference_t pref;
    LIMA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LIMA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                                           sizeof workspace_bytes_));
    cublasLtMatmulHeuristicResult_t res[kMeasuredCandidates] = {};
    int found = 0;
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.b, p.a, p.c, p.c, pref, kMeasuredCandidates, res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    last_candidates_ = hs == CUBLAS_STATUS_SUCCESS ? found : 0;
    if (last_candidates_ <= 1) return;
    void *out = C;
    if (beta != 0.0f) {  // the product accumulates into C: time it on a scratch copy's worth of zeros
        const size_t bytes = size_t(M) * size_t(N) * (c_f32 ? 4 : 2);
        // stream-ordered: no device-wide synchronisation, which could wait on a peer rank's collective
        if (cudaMallocAsync(&out, bytes, st) != cudaSuccess) {
            (void)cudaGetLastError();  // no room to time it: the heuristic's choice stays
            return;
        }
        LIMA_CUDA_CHECK(cudaMemsetAsync(out, 0, bytes, st));
    }
    cudaEvent_t ev[2];
    LIMA_CUDA_CHECK(cudaEventCreate(&ev[0]));
    LIMA_CUDA_CHECK(cudaEventCreate(&ev[1]));
    const float alpha = 1.0f;
    float best = INFINITY;
    for (int i = 0; i < found; ++i) {
        auto go = [&] {
            return cublasLtMatmul(handle_, p.desc, &alpha, B, p.b, A, p.a, &beta, out, p.c, out, p.c, &res[i].algo, workspace_,
                                  workspace_bytes_, st);
        };
        if (res[i].state != CUBLAS_STATUS_SUCCESS || go() != CUBLAS_STATUS_SUCCESS) continue;  // warm-up
        LIMA_CUDA_CHECK(cudaEventRecord(ev[0], st));
        bool ok = true;
        for (int r = 0; r < 3 && ok; ++r) ok = go() == CUBLAS_STATUS_SUCCESS;
        LIMA_CUDA_CHECK(cudaEventRecord(ev[1], st));
        LIMA_CUDA_CHECK(cudaEventSynchronize(ev[1]));
        float ms = 0.0f;
        LIMA_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[0], ev[1]));
        if (ok && ms < best) {
            best = ms;
            p.algo = res[i].algo;
        }
    }
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
    if (out != C) LIMA_CUDA_CHECK(cudaFreeAsync(out, st));
}

void Gemm::run(void *C, bool c_f32, const bf16 *A, bool transA, const bf16 *B, bool transB, int M, int N, int K, float beta,
               cudaStream_t st) {
    if (M == 0 || N == 0) return;
    if (takes_matvec(A, transA, B, transB, M, K, beta)) {
        const int warps = 8;
        if (c_f32)
            matvec_k<float><<<ceil_div(N, warps), 32 * warps, 0, st>>>(static_cast<float *>(C), A, B, M, N, K);
        else
            matvec_k<bf16><<<ceil_div(N, warps), 32 * warps, 0, st>>>(static_cast<bf16 *>(C), A, B, M, N, K);
        LIMA_CUDA_LAUNCHED("matvec");
        return;
    }
    const Key k{M, N, K, transA, transB, c_f32, beta != 0.0f};
    Plan &p = plan(k);
    if (!p.measured) measure(p, k, C, A, B, beta, st);
    const float alpha = 1.0f;
    LIMA_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, B, p.b, A, p.a, &beta, C, p.c, C, p.c, &p.algo, workspace_,
                                     workspace_bytes_, st));
}

}  // namespace lima::cuda
