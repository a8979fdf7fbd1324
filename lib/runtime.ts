/**
 * What coltrast runs on: libtorch version, devices, threads and the BLAS library actually loaded.
 * Debian's libtorch calls whatever libblas.so.3 the system selects; the reference BLAS is ~30x slower
 * than OpenBLAS, so we look at the mapped libraries and say so.
 */
import fs from 'node:fs';
import type { BinaryChoice } from './binary';
import { ColtrastError } from './errors';
import { booleanValue, checkOptions } from './validate';
import { binaryChoice, fromNative, native, packageRoot, type CpuMemory, type CudaMemory } from './native';

export type { CpuMemory, CudaMemory } from './native';

export interface BlasInfo {
  /** Paths of the BLAS libraries mapped into this process. */
  libraries: string[];
  /** True when the BLAS is linked into libtorch itself (a pip wheel's MKL), so no library of its own is mapped. */
  builtIn?: boolean;
  /** 'openblas', 'mkl', 'reference' (netlib, slow) or 'unknown'. */
  kind: 'openblas' | 'mkl' | 'reference' | 'unknown';
  warning?: string;
}

export interface RuntimeInfo {
  version: string;
  torchVersion: string;
  torchSource?: string;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  threads: number;
  /**
   * How the encoders' self-attention runs: libtorch's scaled_dot_product_attention (fused kernels; libtorch
   * 2.x) or 'eager' (matmul, softmax, matmul: libtorch 1.13, or COLTRAST_EAGER_ATTENTION=1).
   */
  attention: 'scaled_dot_product_attention' | 'eager';
  /**
   * Whether libtorch may run that attention on cuDNN's kernels on a GPU. coltrast turns them off (libtorch 2.5+):
   * cuDNN builds an execution plan for each new input shape, and coltrast's batches are padded to their own
   * lengths. COLTRAST_CUDNN_ATTENTION=1 leaves libtorch's choice. Always false before libtorch 2.5.
   */
  cudnnAttention: boolean;
  /**
   * Where CPU work runs: 'own' (one thread of coltrast's, so libtorch's OpenMP team stays warm; the faster
   * choice with MKL) or 'pool' (libuv's thread pool: when an OpenBLAS with threads of its own, such as
   * Debian's, is loaded, whose threads a warm OpenMP team would starve).
   */
  cpuWorkThread: 'own' | 'pool';
  blas: BlasInfo;
  /** Which addon is loaded (a local build or a prebuild), the libtorch it runs on, and why it was chosen. */
  binary: BinaryChoice;
  /** CUDA builds: the GPU architectures compiled in and each GPU's compute capability (86 = 8.6). */
  cudaArchs?: string;
  cudaCapabilities?: number[];
  /** CUDA builds: the CUDA runtime in use and the newest CUDA the driver supports ("13.0"). */
  cudaRuntime?: string;
  cudaDriver?: string;
  /** The NVIDIA kernel driver's version (from /proc/driver/nvidia/version) when one is loaded, on any build. */
  nvidiaDriver?: string;
  /** The config.json model_type values the addon runs (bert, roberta, ..., qwen3). */
  modelTypes: string[];
}

const cudaVersion = (v: number | undefined) => (v ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : undefined);

/** The NVIDIA kernel module's version, e.g. "580.95.05", or undefined without one. */
export function nvidiaDriverVersion(file = '/proc/driver/nvidia/version'): string | undefined {
  try {
    return /Kernel Module(?: for [^ ]+)?\s+([0-9][0-9.]+)/.exec(fs.readFileSync(file, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * The BLAS in use: from the libraries mapped into the process, else from `built`, the BLAS libtorch was built
 * for (its BLAS_INFO), which tells a BLAS linked into libtorch itself.
 */
export function blasInfo(maps = '/proc/self/maps', built?: string): BlasInfo {
  const linkedIn = (): BlasInfo =>
    built === 'mkl' || built === 'open' || built === 'openblas'
      ? { libraries: [], kind: built === 'mkl' ? 'mkl' : 'openblas', builtIn: true }
      : { libraries: [], kind: 'unknown' };
  let text = '';
  try {
    text = fs.readFileSync(maps, 'utf8');
  } catch {
    return linkedIn();
  }
  const libraries = [...new Set(text.split('\n').map((l) => l.split(/\s+/)[5] ?? '').filter((p) => /lib(open)?blas|libmkl/.test(p)))];
  const resolved = libraries.map((p) => {
    try {
      return fs.realpathSync(p);
    } catch {
      return p;
    }
  });
  const all = resolved.join(' ');
  if (/openblas/.test(all)) return { libraries: resolved, kind: 'openblas' };
  if (/mkl/.test(all)) return { libraries: resolved, kind: 'mkl' };
  if (/libblas\.so/.test(all)) {
    return {
      libraries: resolved,
      kind: 'reference',
      warning:
        'libtorch is using the reference BLAS (very slow matrix products). Install OpenBLAS: ' +
        'sudo apt-get install libopenblas0-pthread',
    };
  }
  return resolved.length ? { libraries: resolved, kind: 'unknown' } : linkedIn();
}

export function runtimeInfo(): RuntimeInfo {
  const n = native().runtimeInfo();
  const pkg = JSON.parse(fs.readFileSync(`${packageRoot}/package.json`, 'utf8')) as { version: string };
  return {
    version: pkg.version,
    torchVersion: n.torchVersion,
    torchSource: n.torchSource,
    cudaAvailable: n.cudaAvailable,
    cudaDeviceCount: n.cudaDeviceCount,
    threads: n.numThreads,
    attention: n.attention,
    cudnnAttention: n.cudnnAttention,
    cpuWorkThread: n.cpuWorkThread,
    blas: blasInfo('/proc/self/maps', n.blasBuild),
    binary: binaryChoice()!,
    cudaArchs: n.cudaArchs,
    cudaCapabilities: n.cudaCapabilities,
    cudaRuntime: cudaVersion(n.cudaRuntimeVersion),
    cudaDriver: cudaVersion(n.cudaDriverVersion),
    nvidiaDriver: nvidiaDriverVersion(),
    modelTypes: [...native().supportedModelTypes],
  };
}

/**
 * GPU memory held by libtorch's CUDA caching allocator on `device` ('cuda' or 'cuda:N'), as
 * torch.cuda.memory_allocated / max_memory_allocated / memory_reserved / max_memory_reserved report it.
 * `resetPeak` starts a new peak after reading (torch.cuda.reset_peak_memory_stats); `emptyCache` releases
 * cached blocks no tensor uses (torch.cuda.empty_cache). Benchmarks measure peak GPU memory with it.
 */
export function cudaMemory(device = 'cuda:0', options: { resetPeak?: boolean; emptyCache?: boolean } = {}): CudaMemory {
  const match = /^cuda(?::(\d+))?$/.exec(device);
  if (!match) throw new ColtrastError('INVALID_ARGUMENT', `cudaMemory: device must be 'cuda' or 'cuda:N', got ${JSON.stringify(device)}`);
  try {
    return native().cudaMemory(Number(match[1] ?? 0), { resetPeak: options.resetPeak === true, emptyCache: options.emptyCache === true });
  } catch (error) {
    throw fromNative(error);
  }
}

/**
 * coltrast's cache of large CPU tensor blocks (see README "CPU memory"): bytes alive, the peak, bytes kept
 * for reuse and the cache's hits and misses. `resetPeak` starts a new peak after reading; `emptyCache` gives
 * the kept blocks back to the system.
 */
export function cpuMemory(options?: { resetPeak?: boolean; emptyCache?: boolean }): CpuMemory {
  const o = checkOptions('options', options, ['resetPeak', 'emptyCache']);
  const flag = (key: 'resetPeak' | 'emptyCache') => (o[key] === undefined ? false : booleanValue(`options.${key}`, o[key]));
  return native().cpuMemory({ resetPeak: flag('resetPeak'), emptyCache: flag('emptyCache') });
}
