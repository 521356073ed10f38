// Row-major matrix products on cuBLASLt: C (M, N) = op(A) op(B) (+ beta C), bf16 operands, fp32
// accumulation, C in bf16 or fp32 (fp32 for weight gradients accumulated over micro-batches and
// for the classifier's logits). Descriptors and the heuristic's algorithm are cached per shape.
#pragma once
#include <map>
#include <tuple>

#include "cuda_common.cuh"

namespace lima::cuda {

class Gemm {
public:
    Gemm();
    ~Gemm();
    Gemm(const Gemm &) = delete;
    Gemm &operator=(const Gemm &) = delete;
    // A is stored (M, K) or, transA, (K, M); B is stored (K, N) or, transB, (N, K).
    void run(void *C, bool c_f32, const bf16 *A, bool transA, const bf16 *B, bool transB, int M, int N, int K, float beta,
             cudaStream_t st);
    static int version();

private:
    struct Plan {
        cublasLtMatmulDesc_t desc = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
        cublasLtMatmulAlgo_t algo{};
    };
    using Key = std::tuple<int, int, int, bool, bool, bool, bool>;
    Plan &plan(const Key &k);
    cublasLtHandle_t handle_ = nullptr;
    void *workspace_ = nullptr;
    size_t workspace_bytes_ = 32u << 20;
    std::map<Key, Plan> plans_;
};

}  // namespace lima::cuda
