/**
 * The JSON header of a .safetensors file, read without its tensors: 8 bytes of little-endian header length, then the
 * header (tensor name -> { dtype, shape, data_offsets }, and an optional __metadata__). The native side reads the
 * tensors; JavaScript reads the header where it checks a file before that (an adapter's ranks) or streams its data
 * itself (an index's vectors, exported a block at a time).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { atomicOutput } from './files';

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

/**
 * The sha256 (hex) of bytes [begin, end) of the open file `handle`, read 8 MiB at a time: each read waits off the
 * event loop, and each hash update is milliseconds, so hashing a large model's tensors does not hold it.
 */
export async function sha256OfRange(handle: fs.promises.FileHandle, begin: number, end: number): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(Math.min(8 * 2 ** 20, Math.max(end - begin, 1)));
  for (let at = begin; at < end; ) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, end - at), at);
    if (bytesRead === 0) throw new Error(`the file ends at byte ${at}, before the tensor's end (${end})`);
    hash.update(buffer.subarray(0, bytesRead));
    at += bytesRead;
  }
  return hash.digest('hex');
}

/**
 * A safetensors file's first bytes for `header` (its tensors' entries, and __metadata__): the JSON's length as 8 bytes
 * little-endian, then the JSON, padded with spaces to a multiple of 8 bytes so that the data after it starts aligned,
 * as the format's own writers (and the native one) pad it.
 */
export function safetensorsHeaderBytes(header: Record<string, unknown>): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Buffer.alloc(8 + Math.ceil(json.length / 8) * 8, ' ');
  padded.writeBigUInt64LE(BigInt(padded.length - 8), 0);
  json.copy(padded, 8);
  return padded;
}

/**
 * Rewrites the safetensors file `file` with `metadata` added to its header's __metadata__ (a string -> string map, as
 * the format has it; keys it had stay unless `metadata` gives them again), its tensors as they were. The data
 * section stays 8-byte aligned (the header padded with spaces, as the native writer pads it). Written through a
 * temporary file renamed over `file` (atomicOutput).
 */
export async function addSafetensorsMetadata(file: string, metadata: Record<string, string>): Promise<void> {
  const source = await fs.promises.open(file, 'r');
  try {
    const read = readSafetensorsHeader(source.fd, 100 * 2 ** 20);
    if ('problem' in read) throw new Error(`${file}: its safetensors header is ${read.problem}`);
    const { __metadata__: old, ...tensors } = read.header as Record<string, unknown>;
    const merged = { ...(typeof old === 'object' && old !== null && !Array.isArray(old) ? (old as Record<string, string>) : {}), ...metadata };
    const out = atomicOutput(file);
    try {
      await out.write(safetensorsHeaderBytes({ __metadata__: merged, ...tensors }));
      const size = (await source.stat()).size;
      const buffer = Buffer.allocUnsafe(8 * 2 ** 20);
      for (let at = read.dataStart; at < size; ) {
        const { bytesRead } = await source.read(buffer, 0, Math.min(buffer.length, size - at), at);
        if (bytesRead === 0) throw new Error(`${file} ended while it was being copied`);
        // A copy: the stream may still hold the chunk when the buffer is read into again.
        await out.write(Buffer.from(buffer.subarray(0, bytesRead)));
        at += bytesRead;
      }
      await out.commit();
    } catch (error) {
      out.abort();
      throw error;
    }
  } finally {
    await source.close();
  }
}

/** An IEEE float16 (its 16 bits) as a number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
