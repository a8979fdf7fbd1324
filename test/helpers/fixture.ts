/** Paths of the tiny BERT fixture and temp copies of it that tests may break. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const FIXTURE = path.resolve(__dirname, '..', 'fixtures', 'tiny-bert');
export const REFERENCE_FILE = path.resolve(__dirname, '..', 'fixtures', 'tiny-bert.reference.json');

export interface ReferenceItem {
  text: string;
  inputIds: number[];
  tokenStates: number[][];
  pooled: Record<'cls' | 'mean' | 'max' | 'mean_sqrt_len', number[]>;
}
export interface Reference {
  reference: string;
  maxSeqLength: number;
  hiddenSize: number;
  items: ReferenceItem[];
  variants: Record<string, number[][][]>;
}

export function loadReference(): Reference {
  return JSON.parse(fs.readFileSync(REFERENCE_FILE, 'utf8'));
}

export function tempDir(prefix = 'coltrast-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A writable copy of the fixture folder; `edit` may change files in it. */
export function fixtureCopy(edit?: (dir: string) => void): string {
  const dir = path.join(tempDir(), 'model');
  fs.cpSync(FIXTURE, dir, { recursive: true });
  edit?.(dir);
  return dir;
}

export function editJson(file: string, change: (value: any) => any): void {
  const value = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.writeFileSync(file, JSON.stringify(change(value) ?? value));
}

/** Largest absolute difference between two equally long arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
