/**
 * An index's documents (id, text, metadata), kept outside V8's heap where they can be: a corpus held as JavaScript
 * strings and objects counts against the heap limit (about 4 GiB by default) and slows every full garbage collection.
 * A million passages of MS MARCO's length took 458 MiB of heap as { id, text } objects in an array and a Map from id
 * to position, and MS MARCO's 8.8 million did not load (OUT_OF_MEMORY at 8.1 million); a Map that large also stops
 * the event loop for over a second each time it doubles.
 *
 * Here ids and texts are UTF-8 in Buffers (TextStore), decoded when asked for (a hit, a filter on `text`, a save), and
 * ids find their positions through an open-addressing hash table in typed arrays (DocStore). Metadata objects stay
 * JavaScript objects: filters read them, and most documents have none.
 *
 * Texts are appended into chunks that double from 64 KiB to 1 GiB (a text never spans two; a longer one gets a
 * chunk of its own), so a small index holds little slack and a large one few allocations: V8 starts a full garbage
 * collection for every 64 MiB or so of new memory outside its heap, and at millions of documents each takes most of a
 * second (64 MiB chunks made loading 8.8 million texts spend 25 of its 56 seconds in them). The part of a chunk not yet
 * written is address space, not resident memory. Text is stored as UTF-8, so a lone surrogate comes back as U+FFFD
 * (as it would from a file).
 */
import type { IndexDoc } from './search-index';
import { inTurns } from './turns';

const FIRST_CHUNK = 64 * 1024;
const LARGEST_CHUNK = 1024 * 1024 * 1024;

export class TextStore {
  private chunks: Buffer[] = [];
  /** Bytes used in the last chunk. */
  private used = 0;
  /** Text i: its chunk, its first byte there and its byte length. */
  private chunkOf: Uint32Array;
  private start: Uint32Array;
  private bytes: Uint32Array;
  private count = 0;

  /**
   * `expected`: the texts and bytes to make room for at once (loading: the documents and the size of the file they
   * come from). The first chunk takes that many bytes, up to 1 GiB, and the per-text arrays that many entries, so
   * that loading allocates once instead of doubling (doubling the arrays at 8 million texts held the event loop for
   * 0.2 s); pages never written are never resident. `largestChunk` only for tests (small chunks show boundaries).
   */
  constructor(expected: { texts?: number; bytes?: number } = {}, private readonly largestChunk = LARGEST_CHUNK) {
    if (expected.bytes) this.chunks.push(Buffer.allocUnsafeSlow(Math.min(expected.bytes, this.largestChunk)));
    const entries = Math.max(16, expected.texts ?? 0);
    this.chunkOf = new Uint32Array(entries);
    this.start = new Uint32Array(entries);
    this.bytes = new Uint32Array(entries);
  }

  get length(): number {
    return this.count;
  }

  /** Appends a text; its number is the length before. */
  push(text: string): void {
    // A UTF-16 unit takes at most 3 bytes of UTF-8: where that much room is left, write without measuring first.
    const last = this.chunks[this.chunks.length - 1];
    if (last && this.used + 3 * text.length <= last.length) {
      this.record(this.used, last.write(text, this.used, 'utf8'));
      return;
    }
    const size = Buffer.byteLength(text, 'utf8');
    const [chunk, at] = this.reserve(size);
    chunk.write(text, at, size, 'utf8');
  }

  /** Text i (0 ≤ i < length). */
  get(i: number): string {
    if (!(i >= 0 && i < this.count)) throw new RangeError(`no text ${i} (${this.count} texts)`);
    const at = this.start[i];
    return this.chunks[this.chunkOf[i]].toString('utf8', at, at + this.bytes[i]);
  }

  /**
   * Keeps only the texts whose flag in `keep` (one per text) is 1, in order, in place. While the kept texts fill at
   * least half of the bytes written to the chunks, only the per-text arrays change (runs moved down with copyWithin) and the removed
   * texts' bytes stay as slack: copying the bytes into new chunks was what made removing a few documents from a
   * million hold the event loop for 0.3-0.7 s, most of it faulting in fresh pages (BENCHMARKS.md, "Removing
   * documents"). Below half, the kept bytes are copied into new chunks, so slack never exceeds the live text and the
   * copying is paid once per halving. Done in turns (inTurns over retaining()); nothing else may use the store until
   * it resolves.
   */
  async retain(keep: Uint8Array): Promise<void> {
    await inTurns(this.retaining(keep), () => {});
  }

  /** retain() in steps, yielding between runs of texts (every STEP texts where one pass goes over them all): for inTurns. */
  *retaining(keep: Uint8Array): Generator<void> {
    if (keep.length !== this.count) throw new RangeError(`keep has ${keep.length} flags for ${this.count} texts`);
    let texts = 0;
    let bytes = 0;
    for (let i = 0; i < this.count; i++) {
      if (keep[i]) (texts++, (bytes += this.bytes[i]));
      if (i % STEP === STEP - 1) yield;
    }
    // The bytes written so far: every chunk but the last whole, the last up to `used` (its rest is room to grow).
    let footprint = this.used;
    for (let c = 0; c + 1 < this.chunks.length; c++) footprint += this.chunks[c].length;
    if (2 * bytes >= footprint) {
      for (const [from, to, at] of runs(keep)) {
        if (from === at) continue;
        this.chunkOf.copyWithin(at, from, to);
        this.start.copyWithin(at, from, to);
        this.bytes.copyWithin(at, from, to);
        yield;
      }
      this.count = texts;
      return;
    }
    const out = new TextStore({ texts, bytes }, this.largestChunk);
    // A run of kept texts that lie one after the other in one chunk moves with one copy (one per text took most of
    // the time of removing a few documents from a million).
    for (let i = 0, since = 0; i < this.count; ) {
      if (!keep[i]) {
        i++;
        continue;
      }
      const [chunk, at] = out.reserve(this.bytes[i]);
      let end = this.start[i] + this.bytes[i];
      let j = i + 1;
      while (j < this.count && keep[j] && this.chunkOf[j] === this.chunkOf[i] && this.start[j] === end && out.used + this.bytes[j] <= chunk.length) {
        out.record(out.used, this.bytes[j]);
        end += this.bytes[j++];
      }
      this.chunks[this.chunkOf[i]].copy(chunk, at, this.start[i], end);
      since += j - i;
      i = j;
      if (since >= STEP) {
        since = 0;
        yield;
      }
    }
    this.chunks = out.chunks;
    this.used = out.used;
    this.chunkOf = out.chunkOf;
    this.start = out.start;
    this.bytes = out.bytes;
    this.count = out.count;
  }

  /** Room for one more text of `size` bytes, recorded as text `length`: its chunk and where its bytes go. */
  private reserve(size: number): [Buffer, number] {
    let last = this.chunks[this.chunks.length - 1];
    if (!last || this.used + size > last.length) {
      const next = Math.min(this.largestChunk, Math.max(FIRST_CHUNK, 2 * (last?.length ?? 0)));
      last = Buffer.allocUnsafeSlow(Math.max(next, size));
      this.chunks.push(last);
      this.used = 0;
    }
    const at = this.used;
    this.record(at, size);
    return [last, at];
  }

  /** Records text `length` as `size` bytes at `at` in the last chunk. */
  private record(at: number, size: number): void {
    if (this.count === this.chunkOf.length) this.grow();
    this.chunkOf[this.count] = this.chunks.length - 1;
    this.start[this.count] = at;
    this.bytes[this.count] = size;
    this.used = at + size;
    this.count++;
  }

  private grow(): void {
    this.chunkOf = doubled(this.chunkOf);
    this.start = doubled(this.start);
    this.bytes = doubled(this.bytes);
  }
}

/** A copy of `a` with twice the room (an array of per-item numbers that grows by doubling). */
export function doubled<A extends Uint32Array | Int32Array>(a: A): A {
  const b = new (a.constructor as new (length: number) => A)(2 * a.length);
  b.set(a);
  return b;
}

/** Whether `s` holds a lone surrogate, which UTF-8 cannot keep (a TextStore gives it back as U+FFFD): ids must not. */
export function hasLoneSurrogate(s: string): boolean {
  return LONE_SURROGATE.test(s);
}
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Each run [from, to) of flags that are 1, with `at`, how many came before it: [from, to, at]. */
function* runs(keep: Uint8Array): Generator<[number, number, number]> {
  let at = 0;
  for (let i = 0; i < keep.length; ) {
    if (!keep[i]) {
      i++;
      continue;
    }
    let end = i + 1;
    while (end < keep.length && keep[end]) end++;
    yield [i, end, at];
    at += end - i;
    i = end;
  }
}

/** Items a step of work done in turns goes over before it yields (a million take some 10-30 ms in one go). */
const STEP = 65536;

/**
 * Puts `at` into an open-addressing table (a power of two in size, -1 for an empty slot, linear probing) at the first
 * free slot from hash `h`: DocStore's ids, BM25's terms.
 */
export function insertSlot(table: Int32Array, h: number, at: number): void {
  const mask = table.length - 1;
  let slot = h & mask;
  while (table[slot] !== -1) slot = (slot + 1) & mask;
  table[slot] = at;
}

/** FNV-1a over a string's UTF-16 code units. */
export function hashOf(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Unique ids in the order pushed, with lookup by id: UTF-8 in a TextStore, found through an open-addressing hash table
 * in typed arrays (at most half full, linear probing). An index's documents (DocStore) and a BM25 index's.
 */
export class IdStore {
  private ids: TextStore;
  /** Each id's hash (hashOf), kept for growing the table. */
  private hashes: Uint32Array;
  /** An id's position, or -1 where the slot is empty. */
  private table: Int32Array;

  /** `expected`: ids to make room for at once (loading a saved index). */
  constructor(expected = 0) {
    this.ids = new TextStore({ texts: expected, bytes: expected * 16 });
    this.hashes = new Uint32Array(Math.max(16, expected));
    this.table = new Int32Array(tableSize(expected)).fill(-1);
  }

  get length(): number {
    return this.ids.length;
  }

  /** Id i (0 ≤ i < length). */
  get(i: number): string {
    return this.ids.get(i);
  }

  /** The position of `id`, or undefined. */
  position(id: string): number | undefined {
    const h = hashOf(id);
    const mask = this.table.length - 1;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const at = this.table[slot];
      if (at === -1) return undefined;
      if (this.hashes[at] === h && this.ids.get(at) === id) return at;
    }
  }

  has(id: string): boolean {
    return this.position(id) !== undefined;
  }

  /** Appends an id; it must be new (the caller checks). */
  push(id: string): void {
    const at = this.length;
    if (at === this.hashes.length) this.hashes = doubled(this.hashes);
    const h = hashOf(id);
    this.hashes[at] = h;
    this.ids.push(id);
    if (2 * (at + 1) > this.table.length) this.rehash(tableSize(at + 1));
    else insertSlot(this.table, h, at);
  }

  /** Keeps the ids whose flag in `keep` is 1, in order (TextStore.retain; the table rebuilt), in turns. */
  async retain(keep: Uint8Array): Promise<void> {
    await inTurns(this.retaining(keep), () => {});
  }

  /** retain() in steps, for inTurns. */
  *retaining(keep: Uint8Array): Generator<void> {
    yield* this.ids.retaining(keep);
    for (const [from, to, at] of runs(keep)) if (from !== at) this.hashes.copyWithin(at, from, to);
    yield* this.rehashing(tableSize(this.length));
  }

  /** Every id into a table of `size` slots: the table itself where it has that size (a new one would be fresh pages to fault in). */
  private rehash(size: number): void {
    for (const _ of this.rehashing(size));
  }

  private *rehashing(size: number): Generator<void> {
    if (size === this.table.length) this.table.fill(-1);
    else this.table = new Int32Array(size).fill(-1);
    for (let i = 0; i < this.length; i++) {
      insertSlot(this.table, this.hashes[i], i);
      if (i % STEP === STEP - 1) yield;
    }
  }
}

/** The documents of an index in position order: ids (unique), texts and metadata, with lookup by id. */
export class DocStore {
  private ids: IdStore;
  private texts: TextStore;
  private meta: (Record<string, unknown> | undefined)[] = [];
  /** Counts push() and retain() calls: work that yields between slices checks that the documents stayed the same. */
  private changeCount = 0;

  /** `expected`: documents and text bytes to make room for at once (loading a saved index). */
  constructor(expected: { docs?: number; textBytes?: number } = {}) {
    const docs = expected.docs ?? 0;
    this.ids = new IdStore(docs);
    this.texts = new TextStore({ texts: docs, bytes: expected.textBytes });
  }

  get length(): number {
    return this.texts.length;
  }

  /** Changes so far (documents added or removed): equal before and after a stretch of work, nothing changed. */
  get changes(): number {
    return this.changeCount;
  }

  id(i: number): string {
    return this.ids.get(i);
  }

  text(i: number): string {
    return this.texts.get(i);
  }

  metadata(i: number): Record<string, unknown> | undefined {
    return this.meta[i];
  }

  /** Document i as { id, text, metadata? } (a new object each time). */
  doc(i: number): IndexDoc {
    const metadata = this.meta[i];
    return metadata === undefined ? { id: this.id(i), text: this.text(i) } : { id: this.id(i), text: this.text(i), metadata };
  }

  /**
   * Document i for a filter that reads `fields` (lib/filter.ts: filterFields): its metadata, and its id and text
   * only where the filter reads them (at a million documents a filter that gets both takes 300-420 ms, one on
   * metadata 120-140 ms: BENCHMARKS.md).
   */
  view(i: number, fields: { id: boolean; text: boolean }): Partial<IndexDoc> {
    const view: Partial<IndexDoc> = {};
    if (fields.id) view.id = this.id(i);
    if (fields.text) view.text = this.texts.get(i);
    const metadata = this.meta[i];
    if (metadata !== undefined) view.metadata = metadata;
    return view;
  }

  /** The position of the document with this id, or undefined. */
  position(id: string): number | undefined {
    return this.ids.position(id);
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Appends a document; its id must be new (the caller checks). */
  push(doc: IndexDoc): void {
    const at = this.length;
    this.changeCount++;
    this.ids.push(doc.id);
    this.texts.push(doc.text);
    // Metadata up to the last document that has some: a corpus without any keeps none (no array of 8.8M undefineds).
    // Null (JSON's "no metadata") is none.
    if (doc.metadata !== undefined && doc.metadata !== null) {
      while (this.meta.length < at) this.meta.push(undefined);
      this.meta.push(doc.metadata);
    }
  }

  /**
   * Keeps only the documents whose flag in `keep` is 1, in order, in place (TextStore.retain; the id table rebuilt),
   * letting the event loop run every few milliseconds: at a million documents this took 40-100 ms in one go. Nothing
   * else may use the store until it resolves (Index holds its write lock).
   */
  async retain(keep: Uint8Array): Promise<void> {
    await inTurns(this.retaining(keep), () => {});
  }

  private *retaining(keep: Uint8Array): Generator<void> {
    if (keep.length !== this.length) throw new RangeError(`keep has ${keep.length} flags for ${this.length} documents`);
    this.changeCount++;
    yield* this.ids.retaining(keep);
    yield* this.texts.retaining(keep);
    if (this.meta.length > 0) {
      this.meta = this.meta.filter((_, i) => keep[i]);
      while (this.meta.length > 0 && this.meta[this.meta.length - 1] === undefined) this.meta.pop();
    }
  }
}

/** The table's size for `docs` documents: a power of two, at least twice as many slots. */
function tableSize(docs: number): number {
  let size = 16;
  while (size < 2 * docs) size *= 2;
  return size;
}

