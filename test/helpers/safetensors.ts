/**
 * A minimal safetensors reader/writer for tests: it builds valid files in other dtypes or with renamed
 * tensors, and deliberately broken ones, so the C++ reader's checks can be exercised.
 */
import fs from 'node:fs';

export interface RawTensor {
  dtype: string;
  shape: number[];
  data: Buffer;
}

export function readSafetensors(file: string): { tensors: Map<string, RawTensor>; metadata?: Record<string, string> } {
  const bytes = fs.readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8'));
  const base = 8 + headerLen;
  const tensors = new Map<string, RawTensor>();
  for (const [name, v] of Object.entries<any>(header)) {
    if (name === '__metadata__') continue;
    tensors.set(name, { dtype: v.dtype, shape: v.shape, data: bytes.subarray(base + v.data_offsets[0], base + v.data_offsets[1]) });
  }
  return { tensors, metadata: header.__metadata__ };
}

/** Serializes a header object and data exactly as given (no checks: tests use it to make bad files). */
export function rawSafetensors(header: object, data: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

/**
 * A valid safetensors file of `tensors`, in their order. `oddData`: the header padded with spaces (which the format
 * allows) so that the data section starts at an odd byte, where no tensor is aligned for its element type.
 */
export function writeSafetensors(file: string, tensors: Map<string, RawTensor>, options: { oddData?: boolean } = {}): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const parts: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    parts.push(t.data);
    offset += t.data.length;
  }
  const data = Buffer.concat(parts);
  if (!options.oddData) {
    fs.writeFileSync(file, rawSafetensors(header, data));
    return;
  }
  let json = JSON.stringify(header);
  if (json.length % 2 === 0) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json, 'utf8'), data]));
}

/** float32 -> bfloat16 by truncation; exact for the fixture, whose weights are bf16-representable. */
export function f32ToBf16(data: Buffer): Buffer {
  const out = Buffer.alloc(data.length / 2);
  for (let i = 0; i < data.length / 4; i++) out.writeUInt16LE(data.readUInt32LE(i * 4) >>> 16, i * 2);
  return out;
}

/** float32 -> float16 for normal, in-range values (round to nearest even); the fixture needs no more. */
export function f32ToF16(data: Buffer): Buffer {
  const out = Buffer.alloc(data.length / 2);
  for (let i = 0; i < data.length / 4; i++) {
    const bits = data.readUInt32LE(i * 4);
    const sign = (bits >>> 16) & 0x8000;
    const exp = ((bits >>> 23) & 0xff) - 127 + 15;
    let mant = bits & 0x7fffff;
    let half: number;
    if ((bits & 0x7fffffff) === 0) half = sign;
    else if (exp <= 0 || exp >= 31) throw new Error(`value ${data.readFloatLE(i * 4)} is outside float16's normal range`);
    else {
      const round = mant & 0x1fff;
      mant >>>= 13;
      if (round > 0x1000 || (round === 0x1000 && (mant & 1))) mant++;
      half = sign | ((exp << 10) + mant);
    }
    out.writeUInt16LE(half, i * 2);
  }
  return out;
}

/**
 * Splits `dir`'s model.safetensors into `parts` shards (model-00001-of-0000N.safetensors, the tensors dealt in
 * turn) with the model.safetensors.index.json transformers writes, and removes model.safetensors.
 */
export function shardWeights(dir: string, parts: number): string[] {
  const { tensors } = readSafetensors(`${dir}/model.safetensors`);
  const names = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(parts).padStart(5, '0')}.safetensors`;
  const shards = Array.from({ length: parts }, () => new Map<string, RawTensor>());
  const weightMap: Record<string, string> = {};
  [...tensors].forEach(([name, t], i) => {
    shards[i % parts].set(name, t);
    weightMap[name] = names(i % parts);
  });
  shards.forEach((shard, i) => writeSafetensors(`${dir}/${names(i)}`, shard));
  fs.writeFileSync(`${dir}/model.safetensors.index.json`, JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  fs.rmSync(`${dir}/model.safetensors`);
  return shards.map((_, i) => names(i));
}
