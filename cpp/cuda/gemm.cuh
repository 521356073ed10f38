// Row-major matrix products on cuBLASLt: C (M, N) = op(A) op(B) (+ beta C), bf16 operands, fp32
// accumulation, C in bf16 or fp32 (fp32 for weight gradients accumulated over micro-batches and
// for the classifier's logits). Descriptors and the chosen algorithm are cached per shape.
//
// The algorithm: cuBLASLt's heuristic's first choice (the default), or, with LIMA_CUDA_GEMM=measured,
// the fastest of the heuristic's first kMeasuredCandidates, timed on the shape's first real operands
// (the usual autotuning; into a scratch output when the product accumulates). A measured choice can
// differ between processes when two algorithms time alike, so the last bits of a run can too;
// the heuristic's choice is fixed for a GPU and a cuBLASLt version.
//
// With LIMA_CUDA_MATVEC=1, products of at most kMatvecRows rows against a weight (decoding: y = x W^T,
// nothing accumulated) run on a matrix-vector kernel of this file instead, for timing against
// cuBLASLt: one warp an output row, 16-byte loads of W, fp32 sums (another order of the same sum).
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
    enum class Choice { heuristic, measured };
    // LIMA_CUDA_GEMM: unset or "heuristic", or "measured"; anything else is refused, naming it.
    static Choice choice_from_env();
    void set_choice(Choice c) { choice_ = c; }
    // How many algorithms the last measurement timed (0 before any; tests, benchmarks).
    int last_candidates() const { return last_candidates_; }
    static constexpr int kMeasuredCandidates = 8;
    // LIMA_CUDA_MATVEC: unset or "0", or "1"; anything else is refused, naming it.
    static bool matvec_from_env();
    void set_matvec(bool on) { matvec_ = on; }
    static constexpr int kMatvecRows = 8;
    // Whether run() would take the matrix-vector kernel for these operands (tests).
    bool takes_matvec(const bf16 *A, bool transA, const bf16 *B, bool transB, int M, int K, float beta) const;

private:
    struct Plan {
        cublasLtMatmulDesc_t desc = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
        cublasLtMatmulAlgo_t algo{};
        bool measured = false;  // the choice is final (the heuristic's is, unless measuring is asked for)
    };
    using Key = std::tuple<int, int, int, bool, bool, bool, bool>;
    Plan &plan(const Key &k);
    void measure(Plan &p, const Key &k, void *C, const void *A, const void *B, float beta, cudaStream_t st);
    Choice choice_ = Choice::heuristic;
    bool matvec_ = false;
    int last_candidates_ = 0;
    cublasLtHandle_t handle_ = nullptr;
    void *workspace_ = nullptr;
    size_t workspace_bytes_ = 32u << 20;
    std::map<Key, Plan> plans_;
};

}  // namespace lima::cuda
