// Row-major GEMMs on cuBLAS for the CUDA loss wrappers (compiled only with COLTRAST_WITH_CUDA): tensor-core
// products of float32/float16/bfloat16 inputs with float32 accumulation and float32 output, which ATen's
// mm cannot produce from half inputs. cuBLAS is column-major; a row-major C = A . B^T is the column-major
// C^T = B . A^T, which is how each call below is written.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <cublas_v2.h>

#include <string>

#include "error.h"

namespace coltrast::ops::cuda {

inline cudaDataType_t cudaType(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return CUDA_R_32F;
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    default:
      throw invalidArgument(std::string("no CUDA kernel for dtype ") + c10::toString(t));
  }
}

inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw Error("NATIVE", std::string(what) + " failed: cuBLAS status " + std::to_string(int(status)));
}

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw Error("NATIVE", std::string(what) + " failed: " + cudaGetErrorString(status));
}

inline cublasHandle_t handle() {
  cublasHandle_t h = at::cuda::getCurrentCUDABlasHandle();
  check(cublasSetStream(h, at::cuda::getCurrentCUDAStream()), "cublasSetStream");
  return h;
}

// C[M, Nc] (float32, row stride ldc) = alpha * A[M, K] . B[Nc, K]^T + beta * C; A and B row-major with
// row strides lda, ldb and the same dtype.
inline void gemmNT(const void* A, int64_t lda, const void* B, int64_t ldb, at::ScalarType type, int64_t M, int64_t Nc,
                   int64_t K, float alpha, float beta, float* C, int64_t ldc) {
  check(cublasGemmEx(handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(Nc), int(M), int(K), &alpha, B, cudaType(type), int(ldb), A,
                     cudaType(type), int(lda), &beta, C, CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx (A.B^T)");
}

// C[M, Nc] (float32) = alpha * A[M, K] . B[K, Nc] + beta * C, all row-major.
inline void gemmNN(const void* A, int64_t lda, const void* B, int64_t ldb, at::ScalarType type, int64_t M, int64_t Nc,
                   int64_t K, float alpha, float beta, float* C, int64_t ldc) {
  check(cublasGemmEx(handle(), CUBLAS_OP_N, CUBLAS_OP_N, int(Nc), int(M), int(K), &alpha, B, cudaType(type), int(ldb), A,
                     cudaType(type), int(lda), &beta, C, CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx (A.B)");
}

// C[M, Nc] (float32) = alpha * A[K, M]^T . B[K, Nc] + beta * C, all row-major.
inline void gemmTN(const void* A, int64_t lda, const void* B, int64_t ldb, at::ScalarType type, int64_t M, int64_t Nc,
                   int64_t K, float alpha, float beta, float* C, int64_t ldc) {
  check(cublasGemmEx(handle(), CUBLAS_OP_N, CUBLAS_OP_T, int(Nc), int(M), int(K), &alpha, B, cudaType(type), int(ldb), A,
                     cudaType(type), int(lda), &beta, C, CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx (A^T.B)");
}

// count independent products C_p[M, Nc] = A_p[M, K] . B_p[Nc, K]^T, strides between consecutive p.
inline void gemmNTBatched(const void* A, int64_t lda, int64_t strideA, const void* B, int64_t ldb, int64_t strideB,
                          at::ScalarType type, int64_t M, int64_t Nc, int64_t K, float* C, int64_t ldc, int64_t strideC,
                          int64_t count) {
  const float alpha = 1.0f, beta = 0.0f;
  check(cublasGemmStridedBatchedEx(handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(Nc), int(M), int(K), &alpha, B, cudaType(type),
                                   int(ldb), strideB, A, cudaType(type), int(lda), strideA, &beta, C, CUDA_R_32F, int(ldc),
                                   strideC, int(count), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
}

}  // namespace coltrast::ops::cuda
