// Folders written atomically: complete or absent, and as readable as any folder mkdir makes.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { writeFolderAtomic } from '../lib/files';
import { tempDir } from './helpers/fixture';

test('a folder written atomically gets the permissions of an ordinary folder, not the private staging ones', async (t) => {
  const target = path.join(tempDir(), 'model');
  await writeFolderAtomic(target, false, async (dir) => fs.writeFileSync(path.join(dir, 'a.txt'), 'x'));
  const mode = fs.statSync(target).mode & 0o777;
  const umask = process.umask();
  t.is(mode, 0o777 & ~umask, `mode ${mode.toString(8)}`);
  t.is(fs.readFileSync(path.join(target, 'a.txt'), 'utf8'), 'x');
});

test('a failed fill leaves nothing behind, and an existing folder needs overwrite', async (t) => {
  const parent = tempDir();
  const target = path.join(parent, 'model');
  await t.throwsAsync(writeFolderAtomic(target, false, async () => {
    throw new Error('disk full');
  }), { message: 'disk full' });
  t.deepEqual(fs.readdirSync(parent), []);
  await writeFolderAtomic(target, false, async (dir) => fs.writeFileSync(path.join(dir, 'a.txt'), '1'));
  await t.throwsAsync(writeFolderAtomic(target, false, async () => undefined), { message: /exists and is not empty; pass \{ overwrite: true \}/ });
  await writeFolderAtomic(target, true, async (dir) => fs.writeFileSync(path.join(dir, 'b.txt'), '2'));
  t.deepEqual(fs.readdirSync(target), ['b.txt']);
});

test('two saves at once to one new folder without overwrite: one is kept whole, the other refused', async (t) => {
  // Both pass the emptiness check before either has renamed its staging folder into place; the last rename used to
  // replace the first save's folder silently.
  const parent = tempDir();
  const target = path.join(parent, 'index');
  const save = (name: string, files: number) =>
    writeFolderAtomic(target, false, async (dir) => {
      for (let i = 0; i < files; i++) {
        fs.writeFileSync(path.join(dir, `${name}${i}.txt`), name);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    });
  const [a, b] = await Promise.allSettled([save('a', 2), save('b', 4)]);
  t.is(a.status, 'fulfilled');
  t.is(b.status, 'rejected');
  t.regex(String((b as PromiseRejectedResult).reason.message), /was filled by another save while this one ran; pass \{ overwrite: true \}/);
  t.deepEqual(fs.readdirSync(target), ['a0.txt', 'a1.txt']);
  t.deepEqual(fs.readdirSync(parent), ['index'], 'the refused save leaves no staging folder');
  // An empty folder that is there already is no obstacle, with or without overwrite.
  const empty = path.join(parent, 'empty');
  fs.mkdirSync(empty);
  await writeFolderAtomic(empty, false, async (dir) => fs.writeFileSync(path.join(dir, 'c.txt'), 'c'));
  t.deepEqual(fs.readdirSync(empty), ['c.txt']);
});
