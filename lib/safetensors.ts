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
 * a file shorter than its header says (`truncated`), or a header over `limit` bytes or not a JSON object (`damaged`).
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
    header = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { problem: 'damaged' };
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return { problem: 'damaged' };
  return { header: header as Record<string, TensorEntry>, dataStart: 8 + length };
}
