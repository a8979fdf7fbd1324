/**
 * Vectors written as binary files that Python reads as they are: NumPy's `.npy` (np.load) and safetensors
 * (safetensors.numpy.load_file, torch's safetensors loaders). `coltrast embed --output vectors.npy` writes one
 * float32 row a text; `.safetensors` writes the rows as "embeddings", or with token vectors "tokens" (every text's
 * vectors one after another) and "offsets" (int64, the rows of text i are tokens[offsets[i]:offsets[i+1]]); a sparse
 * encoder's vectors are written in compressed sparse rows: "values" (float32), "indices" (int64, the vocabulary entries)
 * and "offsets" (int64: text i's entries are values[offsets[i]:offsets[i+1]]), with the vectors' width in the metadata's
 * "dimension" (scipy.sparse.csr_matrix((values, indices, offsets), shape=(texts, dimension))).
 *
 * Written here, not by a package: both headers are a few lines of a published format (numpy's NEP 1 "format.py"
 * version 1.0, safetensors' 8-byte length and JSON header), and the npm packages for them read whole arrays into memory,
 * where these files are written a part at a time, as the vectors come.
 */
import fs from 'node:fs';
import { ColtrastError } from './errors';
import { atomicOutput, temporaryFor, trackTemporaryFile, type AtomicOutput } from './files';
import { safetensorsHeaderBytes } from './safetensors';

export type VectorFormat = 'jsonl' | 'npy' | 'safetensors';

/** The format an output file's name asks for: `.npy`, `.safetensors`, else JSON lines. */
export function vectorFormat(file: string): VectorFormat {
  const lower = file.toLowerCase();
  return lower.endsWith('.npy') ? 'npy' : lower.endsWith('.safetensors') ? 'safetensors' : 'jsonl';
}

/** A little-endian machine's bytes of `v` (every platform coltrast builds for is one). */
function bytesOf(v: Float32Array | BigInt64Array): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * NumPy's .npy header, version 1.0, for a C-ordered float32 array of `shape`: the magic, the version, a 2-byte length
 * and a Python dict literal padded with spaces and a newline so that the data starts at a multiple of 64 bytes.
 */
export function npyHeader(shape: readonly number[]): Buffer {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  const unpadded = 10 + dict.length + 1;
  const text = dict + ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  if (text.length > 65535) throw new ColtrastError('INVALID_ARGUMENT', `a .npy header of ${text.length} bytes does not fit version 1.0's 2-byte length`);
  const out = Buffer.alloc(10 + text.length);
  out.write('\x93NUMPY', 0, 'latin1');
  out[6] = 1;
  out[7] = 0;
  out.writeUInt16LE(text.length, 8);
  out.write(text, 10, 'latin1');
  return out;
}

export interface SafetensorsEntry {
  name: string;
  dtype: 'F32' | 'I64';
  shape: number[];
  bytes: number;
}

/** A safetensors header for `tensors` stored one after another in the order given (safetensorsHeaderBytes). */
export function safetensorsHeader(tensors: readonly SafetensorsEntry[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let at = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + t.bytes] };
    at += t.bytes;
  }
  return safetensorsHeaderBytes(header);
}

/** Where `coltrast embed` puts each text's vectors, in order, and then commits or gives up. */
export interface VectorWriter {
  /** Pooled vectors: `rows.length / dim` texts' rows. */
  pooled(rows: Float32Array): Promise<void>;
  /** One text's token vectors, `rows.length / dim` of them. */
  tokens(rows: Float32Array): Promise<void>;
  commit(): Promise<void>;
  abort(): void;
}

/**
 * A writer of `texts` texts' vectors of width `dim` to `file` in `format` (npy or safetensors), written atomically.
 * Pooled rows go straight to the file behind a header that says their count. Token vectors' count is known only at the
 * end, and safetensors' header (which says it) comes first: they go to a temporary file beside the output, copied in
 * behind the header at commit().
 */
export function vectorWriter(file: string, format: 'npy' | 'safetensors', texts: number, dim: number, kind: 'pooled' | 'tokens'): VectorWriter {
  if (kind === 'tokens' && format === 'npy') {
    throw new ColtrastError('INVALID_ARGUMENT', `${file}: a .npy file holds one array of rows, so one vector a text; token vectors (--tokens, or a multi-vector model) need .safetensors ("tokens" and "offsets") or .jsonl`);
  }
  const out: AtomicOutput = atomicOutput(file);
  const rowBytes = dim * 4;
  let written = 0;
  if (kind === 'pooled') {
    const header =
      format === 'npy'
        ? npyHeader([texts, dim])
        : safetensorsHeader([{ name: 'embeddings', dtype: 'F32', shape: [texts, dim], bytes: texts * rowBytes }], { format: 'np' });
    let started = false;
    return {
      async pooled(rows) {
        if (!started) {
          await out.write(header);
          started = true;
        }
        written += rows.length / dim;
        if (written > texts) throw new Error(`vectorWriter: more than the ${texts} texts announced`);
        await out.write(bytesOf(rows));
      },
      async tokens() {
        throw new Error('vectorWriter: token vectors given to a writer of pooled ones');
      },
      async commit() {
        if (written !== texts) throw new Error(`vectorWriter: ${written} of ${texts} texts written`);
        if (!started) await out.write(header);
        await out.commit();
      },
      abort: () => out.abort(),
    };
  }
  const side = sideFile(file);
  const offsets = new BigInt64Array(texts + 1);
  let total = 0;
  return {
    async pooled() {
      throw new Error('vectorWriter: pooled vectors given to a writer of token ones');
    },
    async tokens(rows) {
      if (written >= texts) throw new Error(`vectorWriter: more than the ${texts} texts announced`);
      await side.write(bytesOf(rows));
      total += rows.length / dim;
      offsets[++written] = BigInt(total);
    },
    async commit() {
      try {
        if (written !== texts) throw new Error(`vectorWriter: ${written} of ${texts} texts written`);
        await out.write(
          safetensorsHeader(
            [
              { name: 'tokens', dtype: 'F32', shape: [total, dim], bytes: total * rowBytes },
              { name: 'offsets', dtype: 'I64', shape: [texts + 1], bytes: offsets.byteLength },
            ],
            { format: 'np' },
          ),
        );
        await side.copyTo(out);
        await out.write(bytesOf(offsets));
        await out.commit();
      } finally {
        side.drop();
      }
    },
    abort() {
      out.abort();
      side.drop();
    },
  };
}

/** Where `coltrast embed` puts a sparse encoder's vectors, a part of the texts at a time, in order. */
export interface SparseVectorWriter {
  write(vectors: readonly { indices: Int32Array; values: Float32Array }[]): Promise<void>;
  commit(): Promise<void>;
  abort(): void;
}

/**
 * A writer of `texts` texts' sparse vectors of width `dimension` to the .safetensors `file` (see the file comment),
 * written atomically. The entries' count is known only at the end, and the header that says it comes first: values and
 * indices go to two temporary files beside the output, copied in behind the header at commit().
 */
export function sparseVectorWriter(file: string, texts: number, dimension: number): SparseVectorWriter {
  const out = atomicOutput(file);
  const values = sideFile(file);
  const indices = sideFile(file);
  const offsets = new BigInt64Array(texts + 1);
  let written = 0;
  let total = 0;
  const drop = () => {
    values.drop();
    indices.drop();
  };
  return {
    async write(vectors) {
      if (written + vectors.length > texts) throw new Error(`sparseVectorWriter: more than the ${texts} texts announced`);
      const count = vectors.reduce((n, v) => n + v.indices.length, 0);
      const v = new Float32Array(count);
      const i = new BigInt64Array(count);
      let at = 0;
      for (const vector of vectors) {
        v.set(vector.values, at);
        for (let k = 0; k < vector.indices.length; k++) i[at + k] = BigInt(vector.indices[k]);
        at += vector.indices.length;
        total += vector.indices.length;
        offsets[++written] = BigInt(total);
      }
      await values.write(bytesOf(v));
      await indices.write(bytesOf(i));
    },
    async commit() {
      try {
        if (written !== texts) throw new Error(`sparseVectorWriter: ${written} of ${texts} texts written`);
        await out.write(
          safetensorsHeader(
            [
              { name: 'values', dtype: 'F32', shape: [total], bytes: total * 4 },
              { name: 'indices', dtype: 'I64', shape: [total], bytes: total * 8 },
              { name: 'offsets', dtype: 'I64', shape: [texts + 1], bytes: offsets.byteLength },
            ],
            { format: 'np', dimension: String(dimension) },
          ),
        );
        await values.copyTo(out);
        await indices.copyTo(out);
        await out.write(bytesOf(offsets));
        await out.commit();
      } finally {
        drop();
      }
    },
    abort() {
      out.abort();
      drop();
    },
  };
}

/**
 * A temporary file beside `file` (same folder, so the same disk) that bytes are appended to, then copied into an
 * output; removed however the process ends: by this process, or, where it was killed, by a later write of the output
 * (named as its temporary files are, for that sweep).
 */
function sideFile(file: string): { write(bytes: Buffer): Promise<void>; copyTo(out: AtomicOutput): Promise<void>; drop(): void } {
  const side = temporaryFor(file);
  const untrack = trackTemporaryFile(side);
  let fd: number | undefined = fs.openSync(side, 'w');
  const close = () => {
    if (fd !== undefined) fs.closeSync(fd);
    fd = undefined;
  };
  return {
    write: (bytes) => new Promise<void>((resolve, reject) => fs.write(fd!, bytes, 0, bytes.length, null, (error) => (error ? reject(error) : resolve()))),
    async copyTo(out) {
      close();
      for await (const chunk of fs.createReadStream(side, { highWaterMark: 1 << 22 })) await out.write(chunk as Buffer);
    },
    drop() {
      close();
      fs.rmSync(side, { force: true });
      untrack();
    },
  };
}
