/**
 * Argument checks shared by the public API: every message names the parameter, what was expected
 * and what was received, before any native code runs.
 */
import { ColtrastError } from './errors';

function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 60 ? value.slice(0, 60) + '…' : value)}`;
  if (typeof value === 'object') {
    // A class instance by its class (an Encoder where a path belongs), a plain object as one.
    const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor?.name;
    // 'a Uint8Array', 'a URL': a U is said "you".
    const named = typeof name === 'string' && name !== 'Object' && name !== '' ? `${/^[AEIO]/.test(name) ? 'an' : 'a'} ${name}` : 'an object';
    return ArrayBuffer.isView(value) && 'length' in value ? `${named} of length ${(value as { length: number }).length}` : named;
  }
  return `${typeof value} ${String(value)}`;
}

export function invalid(name: string, expected: string, value: unknown): ColtrastError {
  return new ColtrastError('INVALID_ARGUMENT', `${name} must be ${expected}, got ${describe(value)}`);
}

/** Rejects keys that are not in `allowed`, so a misspelt option never passes silently. */
export function checkOptions<T extends object>(name: string, options: T | undefined, allowed: readonly string[]): T {
  if (options === undefined) return {} as T;
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalid(name, 'an object', options);
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `unknown option ${name}.${key} (known options: ${allowed.join(', ')})`,
      );
    }
  }
  return options;
}

/** An array of strings. */
export function stringList(name: string, value: unknown): string[] {
  if (!Array.isArray(value) || !value.every((w) => typeof w === 'string')) throw invalid(name, 'an array of strings', value);
  return value;
}

/** A finite number that passes `check`, else an error saying what was `expected`. */
export function numberValue(name: string, value: unknown, check: (x: number) => boolean, expected: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || !check(value)) throw invalid(name, expected, value);
  return value;
}

export function positiveInteger(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw invalid(name, 'a positive integer', value);
  return value;
}

export function oneOf<T extends string>(name: string, value: unknown, choices: readonly T[]): T {
  if (typeof value !== 'string' || !choices.includes(value as T)) {
    throw invalid(name, `one of ${choices.map((c) => `'${c}'`).join(', ')}`, value);
  }
  return value as T;
}

export function booleanValue(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalid(name, 'true or false', value);
  return value;
}

/**
 * float32's largest value and its smallest normal one. The native code takes learning rates, weight decays, clipping
 * norms and temperatures as float32: a larger number failed there with libtorch's "value cannot be converted to type
 * float without overflow", naming no option, and a temperature below the normal range rounds to 0 or makes 1/τ
 * overflow (NaN losses and gradients).
 */
export const FLOAT32_MAX = 3.4028234663852886e38;
export const FLOAT32_MIN_NORMAL = 1.1754943508222875e-38;

/** `x` (checked by numberValue already) within float32's range: at most its largest, and 0 or at least `least`. */
export function float32(name: string, x: number, least = 0): number {
  if (x > FLOAT32_MAX || (x !== 0 && x < least)) {
    throw invalid(name, least > 0 ? "from 1.2e-38 to 3.4e38 (float32's normal range)" : "at most 3.4e38 (float32's largest)", x);
  }
  return x;
}

/** A float32 matrix whose data holds dims[0] × dims[1] entries, else an error saying what was `expected`. */
export function floatMatrix(name: string, value: unknown, expected = 'a float32 matrix { dims: [rows, dim], data: Float32Array }'): { dims: [number, number]; data: Float32Array } {
  const m = value as { dims?: unknown; data?: unknown } | null | undefined;
  const dims = m?.dims;
  if (!Array.isArray(dims) || dims.length !== 2 || !dims.every((x) => Number.isInteger(x) && x >= 0) || !(m!.data instanceof Float32Array) || m!.data.length !== dims[0] * dims[1]) {
    throw invalid(name, expected, value);
  }
  return value as { dims: [number, number]; data: Float32Array };
}

export function nonEmptyString(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(name, 'a non-empty string', value);
  return value;
}

/** options.signal checked: undefined, or an AbortSignal. */
export function signalOption(value: unknown): AbortSignal | undefined {
  if (value !== undefined && !(value instanceof AbortSignal)) throw invalid('options.signal', 'an AbortSignal', value);
  return value as AbortSignal | undefined;
}

/**
 * `work`, with an ABORTED error from within it (an embed() or predict() that the caller's signal stopped) said as the
 * caller's own: `restate` throws the caller's ABORTED error (e.g. train()'s "before its first step"); any other
 * error, or one `restate` lets through, is rethrown as it is.
 */
export function abortedAs<T>(work: Promise<T>, restate: () => unknown): Promise<T> {
  return work.catch(async (error: unknown) => {
    if (error instanceof ColtrastError && error.code === 'ABORTED') await restate();
    throw error;
  });
}
