/**
 * Every error coltrast raises on purpose is a ColtrastError: `code` is stable and machine-readable,
 * `message` names the problem and the fix.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT' // a wrong option, shape or type passed by the caller
  | 'MODEL_FILES' // a model directory that is missing files or holds malformed ones
  | 'UNSUPPORTED_MODEL' // a model type or setting coltrast cannot run yet
  | 'NATIVE_LOAD' // the native addon or libtorch could not be loaded
  | 'NATIVE' // an error raised inside native code
  | 'DEVICE' // a device that is not available (no GPU, no CUDA build)
  | 'DISPOSED' // a method called on an object after dispose()
  | 'ABORTED' // work stopped by the caller's AbortSignal
  | 'NETWORK' // a download that failed or is impossible offline
  | 'OUT_OF_MEMORY'; // memory ran out: the device's (batches too large) or Node's heap (a data file too large for it)

export class ColtrastError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ColtrastError';
    this.code = code;
  }
}
