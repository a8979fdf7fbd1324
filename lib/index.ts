export { Encoder, setThreads } from './encoder';
export type { Device, DType, Matrix, LoadOptions, EmbedOptions, SaveOptions } from './encoder';
export type { PoolingMode } from './model-dir';
export { ColtrastError } from './errors';
export type { ErrorCode } from './errors';
export { runtimeInfo } from './runtime';
export type { RuntimeInfo, BlasInfo } from './runtime';
export { resolveModelDir } from './hub';
export type { ResolveOptions } from './hub';
