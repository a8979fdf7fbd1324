/**
 * The JSON header of a .safetensors file, read without its tensors: 8 bytes of little-endian header length, then the
 * header (tensor name -> { dtype, shape, data_offsets }, and an optional __metadata__). The native side reads the
 * tensors; JavaScript reads the header where it checks a file before that (an adapter's ranks) or streams its data
 * itself (an index's vectors, exported a block at a time).
 */
import fs from 'node:fs';

export interface TensorEntry {
  dtype?: unknown;
  shape?: unknown;
  data_offsets?: unknown;
}

/**
 * The header of the open file `fd` and where its data starts (8 + the header's length), or a reason it cannot be read:
 * a file shorter than its header says (`truncated`), or a header over `limit` bytes, not UTF-8 or not a JSON object (`damaged`).
 */
export function readSafetensorsHeader(
  fd: number,
  limit: number,
): { header: Record<string, TensorEntry>; dataStart: number } | { problem: 'truncated' | 'damaged' } {
  const size = fs.fstatSync(fd).size;
  const lengthBytes = Buffer.alloc(8);
  if (size < 8 || fs.readSync(fd, lengthBytes, 0, 8, 0) !== 8) return { problem: 'truncated' };
  const length = Number(lengthBytes.readBigUInt64LE(0));
  if (length > limit) return { problem: 'damaged' };
  if (8 + length > size) return { problem: 'truncated' };
  const bytes = Buffer.alloc(length);
  if (fs.readSync(fd, bytes, 0, length, 8) !== length) return { problem: 'truncated' };
  let header: unknown;
  try {
    // A fatal decoder: the format requires UTF-8, and toString() would read other bytes as U+FFFD (the Rust reader
    // and the native one refuse such a header).
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return { problem: 'damaged' };
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return { problem: 'damaged' };
  return { header: header as Record<string, TensorEntry>, dataStart: 8 + length };
}

/**
 * A header entry's dtype, shape and data offsets when they are well formed: a dtype string, a shape of whole numbers, and
 * offsets [begin, end] of whole numbers with 0 <= begin <= end (relative to the data section); undefined otherwise.
 */
export function tensorInfo(entry: TensorEntry | undefined): { dtype: string; shape: number[]; begin: number; end: number } | undefined {
  const whole = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
  const { dtype, shape, data_offsets: offsets } = entry ?? {};
  if (typeof dtype !== 'string' || !Array.isArray(shape) || !shape.every(whole) || !Array.isArray(offsets) || offsets.length !== 2) return undefined;
  const [begin, end] = offsets;
  if (!whole(begin) || !whole(end) || end < begin) return undefined;
  return { dtype, shape, begin, end };
}
