#include "gemm.cuh"

namespace lima::cuda {

Gemm::Gemm() {
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
    return plans_.emplace(k, p).first->second;
}

void Gemm::run(void *C, bool c_f32, const bf16 *A, bool transA, const bf16 *B, bool transB, int M, int N, int K, float beta,
               cudaStream_t st) {
    if (M == 0 || N == 0) return;
    Plan &p = plan(Key{M, N, K, transA, transB, c_f32, beta != 0.0f});
    const float alpha = 1.0f;
    LIMA_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, B, p.b, A, p.a, &beta, C, p.c, C, p.c, &p.algo, workspace_,
                                     workspace_bytes_, st));
}

}  // namespace lima::cuda
