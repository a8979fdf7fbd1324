/** Atomic file and folder writes: readers see the old content or the new, never a half-written one. */
import fs from 'node:fs';

export function writeTextAtomic(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

/** JSON with Infinity kept as the string 'Infinity' (JSON has no infinities). */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeTextAtomic(file, JSON.stringify(value, (_, v) => (v === Infinity ? 'Infinity' : v), 2));
}

/** Puts the folder `staging` at `target` by renames (the old `target`, if any, is removed afterwards). */
export function replaceDir(staging: string, target: string): void {
  if (fs.existsSync(target)) {
    const old = `${staging}.old`;
    fs.renameSync(target, old);
    fs.renameSync(staging, target);
    fs.rmSync(old, { recursive: true, force: true });
  } else {
    fs.renameSync(staging, target);
  }
}
