// Folders written atomically: complete or absent, and as readable as any folder mkdir makes; and what the command
// line needs of every writer (below).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from '../lib/errors';
import { atomicOutput, checkOutputFile, checkOutputFolder, checkWritable, fileSystemErrorMessage, nonEmptyFolder, removeFolder, removeTemporaryFiles, trackTemporaryFile, writeFolderAtomic, writeJsonAtomic, writeJsonLinesAtomic, writeLines, writeTextAtomic } from '../lib/files';
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
  t.is(a.status, "fulfilled", String((a as PromiseRejectedResult).reason));
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

// What the command line needs of every writer (lib/files.ts): output locations checked before the work,
// temporary files that a failure, abort() or removeTemporaryFiles (SIGINT, SIGTERM) leaves nowhere, file system
// errors in plain words.

// Serial: it replaces fs.renameSync for a moment, which the concurrent tests of this file also call.
test.serial('an overwrite whose new folder cannot be renamed into place puts the old folder back', async (t) => {
  const parent = tempDir();
  const target = path.join(parent, 'model');
  await writeFolderAtomic(target, false, async (dir) => fs.writeFileSync(path.join(dir, 'a.txt'), 'old'));
  const rename = fs.renameSync;
  // The rename of the staging folder onto the target fails once (as when another process made the target meanwhile).
  fs.renameSync = (from: fs.PathLike, to: fs.PathLike) => {
    if (String(to) === target && /saving-\d+-[^.]+$/.test(String(from))) throw Object.assign(new Error('EXDEV: cross-device link not permitted'), { code: 'EXDEV' });
    rename(from, to);
  };
  try {
    await t.throwsAsync(writeFolderAtomic(target, true, async (dir) => fs.writeFileSync(path.join(dir, 'b.txt'), 'new')), { message: /EXDEV/ });
  } finally {
    fs.renameSync = rename;
  }
  t.deepEqual(fs.readdirSync(parent), ['model'], 'no staging or old folder left');
  t.deepEqual(fs.readdirSync(target), ['a.txt']);
  t.is(fs.readFileSync(path.join(target, 'a.txt'), 'utf8'), 'old');
});

test('writeTextAtomic writes through a temporary file of its own, and leaves none when the rename fails', (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'state.json');
  writeTextAtomic(file, '{"a": 1}');
  t.is(fs.readFileSync(file, 'utf8'), '{"a": 1}');
  // A folder where the file goes: the rename fails (EISDIR).
  const blocked = path.join(dir, 'taken');
  fs.mkdirSync(path.join(blocked, 'inside'), { recursive: true });
  t.throws(() => writeTextAtomic(blocked, 'x'), { code: 'EISDIR' } as never);
  t.deepEqual(fs.readdirSync(dir).sort(), ['state.json', 'taken']);
});

test('checkWritable refuses a path through a file, a folder given for a file, and a folder that takes no files', (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'afile');
  fs.writeFileSync(file, 'x');
  t.throws(() => checkWritable(path.join(file, 'sub'), '--output', 'file'), { message: `--output: cannot write ${file}/sub: ${file} is a file, not a folder; give a path under a folder` });
  t.throws(() => checkWritable(path.join(file, 'a', 'b'), '--output', 'folder'), { message: /afile is a file, not a folder/ });
  t.throws(() => checkWritable(dir, '--output', 'file'), { message: `--output: ${dir} is a folder; give the path of the file to write` });
  if (fs.existsSync('/proc/self')) t.throws(() => checkWritable('/proc/x.sql', '--output', 'file'), { message: '--output: cannot write /proc/x.sql: /proc takes no new files; write elsewhere' });
  // Missing folders below one that exists pass (the writers make them), and the check leaves nothing behind.
  t.notThrows(() => checkWritable(path.join(dir, 'new', 'deeper', 'o.jsonl'), '--output', 'file'));
  t.notThrows(() => checkWritable(path.join(dir, 'model'), '--output', 'folder'));
  t.notThrows(() => checkWritable('/dev/null', '--output', 'file'));
  t.deepEqual(fs.readdirSync(dir), ['afile']);
});

test('every writer refuses an output path under a file with INVALID_ARGUMENT naming the file, not a raw ENOTDIR', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'afile');
  fs.writeFileSync(file, 'x');
  const refused = (target: string, what = '') => ({
    instanceOf: ColtrastError,
    code: 'INVALID_ARGUMENT',
    message: `${what}cannot write ${target}: ${file} is a file, not a folder; give a path under a folder`,
  }) as never;
  // Right under the file, and folders deeper (which the writers would make).
  for (const target of [path.join(file, 'sub'), path.join(file, 'a', 'b', 'out.jsonl')]) {
    t.throws(() => writeTextAtomic(target, 'x'), refused(target));
    t.throws(() => writeJsonAtomic(target, { a: 1 }), refused(target));
    await t.throwsAsync(writeLines(target, ['a']), refused(target));
    await t.throwsAsync(writeJsonLinesAtomic(target, [{ a: 1 }]), refused(target));
    t.throws(() => atomicOutput(target), refused(target));
    for (const overwrite of [false, true]) {
      await t.throwsAsync(writeFolderAtomic(target, overwrite, async () => t.fail('filled')), refused(target, 'the output folder: '));
    }
    t.throws(() => checkOutputFile(target, '--output'), refused(target, '--output: '));
    t.throws(() => checkOutputFolder(target, 'options.output'), refused(target, 'options.output: '));
    t.throws(() => nonEmptyFolder(target, 'options.output'), refused(target, 'options.output: '));
  }
  // Nothing was written beside the file (no temporary file, no staging folder), and the file is as it was.
  t.deepEqual(fs.readdirSync(dir), ['afile']);
  t.is(fs.readFileSync(file, 'utf8'), 'x');
});

// Serial, as it calls removeTemporaryFiles() (every tracked file of the process: a concurrent test's staging folder too).
test.serial('atomicOutput replaces the file only at commit(); a failure or abort() leaves the old file and no temporary file', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'out', 'o.jsonl');
  const first = atomicOutput(file); // makes the missing folder
  await first.write('one\n');
  t.false(fs.existsSync(file), 'nothing at the target before commit()');
  await first.commit();
  t.is(fs.readFileSync(file, 'utf8'), 'one\n');
  const second = atomicOutput(file);
  await second.write('two\n');
  second.abort();
  t.is(fs.readFileSync(file, 'utf8'), 'one\n');
  t.deepEqual(fs.readdirSync(path.dirname(file)), ['o.jsonl']);
  // Interrupted (the command line's SIGINT handler calls removeTemporaryFiles): the temporary file is gone.
  const third = atomicOutput(file);
  await third.write('three\n');
  t.is(fs.readdirSync(path.dirname(file)).length, 2);
  removeTemporaryFiles();
  t.deepEqual(fs.readdirSync(path.dirname(file)), ['o.jsonl']);
  third.abort();
  // A registered folder (an atomic folder writer's staging folder) goes whole.
  const staging = path.join(dir, '.model.saving-x');
  fs.mkdirSync(staging);
  fs.writeFileSync(path.join(staging, 'a.txt'), 'x');
  trackTemporaryFile(staging);
  removeTemporaryFiles();
  t.false(fs.existsSync(staging));
  // A device is written in place (a rename would replace it): /dev/full fails as a full disk does, naming the file.
  // Through a link in a temporary folder: code that renamed over it would replace the link, not the device.
  if (fs.existsSync('/dev/full')) {
    const link = path.join(tempDir(), 'full');
    fs.symlinkSync('/dev/full', link);
    const full = atomicOutput(link);
    const failed = await t.throwsAsync(async () => {
      for (let i = 0; i < 64; i++) await full.write('x'.repeat(1 << 16));
      await full.commit();
    });
    t.like(failed as NodeJS.ErrnoException, { code: 'ENOSPC', path: link });
    full.abort();
    t.true(fs.lstatSync(link).isSymbolicLink());
    t.deepEqual(fs.readdirSync(path.dirname(link)), ['full']);
  }
});

test('writeJsonLinesAtomic removes its temporary file when writing fails, and writes a device in place', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'rows.jsonl');
  fs.writeFileSync(file, 'old\n');
  const rows = function* () {
    yield { a: 1 };
    throw new Error('a bad row');
  };
  await t.throwsAsync(writeJsonLinesAtomic(file, rows()), { message: 'a bad row' });
  t.deepEqual(fs.readdirSync(dir), ['rows.jsonl']);
  t.is(fs.readFileSync(file, 'utf8'), 'old\n');
  const link = path.join(dir, 'null'); // a link to /dev/null: code that renamed over it would replace the link
  fs.symlinkSync('/dev/null', link);
  await writeJsonLinesAtomic(link, [{ a: 1 }]);
  t.true(fs.lstatSync(link).isSymbolicLink());
  t.deepEqual(fs.readdirSync(dir).sort(), ['null', 'rows.jsonl']);
});

test('two atomic writes of one file at once each write a temporary file of their own: the file is one of them, whole', async (t) => {
  // With one temporary name for the file, the second write truncated the first's temporary file, the first renamed
  // it into place and reported success with the other's rows in it, and the second failed (ENOENT) at its rename.
  const dir = tempDir();
  const file = path.join(dir, 'rows.jsonl');
  const rows = (tag: string) => Array.from({ length: 20000 }, (_, i) => ({ tag, i, pad: 'x'.repeat(100) }));
  const written = await Promise.allSettled([writeJsonLinesAtomic(file, rows('a')), writeJsonLinesAtomic(file, rows('b'))]);
  t.deepEqual(written.map((r) => r.status), ['fulfilled', 'fulfilled'], String(written.map((r) => (r as PromiseRejectedResult).reason)));
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  t.is(lines.pop(), '');
  t.is(lines.length, 20000);
  t.is(new Set(lines.map((l) => JSON.parse(l).tag)).size, 1, 'the rows of one write');
  t.deepEqual(fs.readdirSync(dir), ['rows.jsonl'], 'no temporary file left');
  // atomicOutput too (two exports of one file at once): each commit() puts its own file in place.
  const out = path.join(dir, 'o.sql');
  const [first, second] = [atomicOutput(out), atomicOutput(out)];
  for (let i = 0; i < 100; i++) {
    await first.write(`first ${i}\n`);
    await second.write(`second ${i}\n`);
  }
  await first.commit();
  t.is(fs.readFileSync(out, 'utf8'), Array.from({ length: 100 }, (_, i) => `first ${i}\n`).join(''));
  await second.commit();
  t.is(fs.readFileSync(out, 'utf8'), Array.from({ length: 100 }, (_, i) => `second ${i}\n`).join(''));
  t.deepEqual(fs.readdirSync(dir).sort(), ['o.sql', 'rows.jsonl']);
});

test('fileSystemErrorMessage words a file system error as "cannot write <path>: <reason>", and leaves other errors alone', (t) => {
  const error = (code: string, syscall: string, file?: string) => Object.assign(new Error(`${code}: something, ${syscall}`), { code, syscall, ...(file && { path: file }) });
  t.is(fileSystemErrorMessage(error('ENOSPC', 'write'), 'out.jsonl'), 'cannot write out.jsonl: no space left on the device (disk full?): free some space or write elsewhere');
  t.is(fileSystemErrorMessage(error('ENOTDIR', 'mkdir', 'a/b')), 'cannot write a/b: a part of the path is a file, not a folder');
  t.regex(fileSystemErrorMessage(error('EACCES', 'open', '/root/x'))!, /^cannot open \/root\/x: permission denied/);
  t.regex(fileSystemErrorMessage(error('EROFS', 'rename', '/ro/x'))!, /read-only/);
  t.is(fileSystemErrorMessage(error('ENOENT', 'read')), 'cannot read: no such file or folder');
  t.is(fileSystemErrorMessage(error('ENOTFOUND', 'getaddrinfo')), undefined, 'not a file system error');
  t.is(fileSystemErrorMessage(new Error('a bug')), undefined);
  t.is(fileSystemErrorMessage(new ColtrastError('INVALID_ARGUMENT', 'x')), undefined);
});

// Serial: removeTemporaryFiles() removes every tracked file of the process, the other tests' too (ava runs serial tests first).
test.serial("a staging folder is a tracked temporary file: the CLI's signal handler removes a save interrupted mid-way", async (t) => {
  const parent = tempDir();
  let staged = '';
  await t.throwsAsync(
    writeFolderAtomic(path.join(parent, 'model'), false, async (dir) => {
      staged = dir;
      fs.writeFileSync(path.join(dir, 'half.safetensors'), 'x');
      removeTemporaryFiles(); // what SIGINT's handler runs
    }),
  );
  t.false(fs.existsSync(staged));
  t.deepEqual(fs.readdirSync(parent), []);
  // A save that ends is no longer tracked: the handler leaves its folder alone.
  await writeFolderAtomic(path.join(parent, 'kept'), false, async (dir) => fs.writeFileSync(path.join(dir, 'a.txt'), 'a'));
  removeTemporaryFiles();
  t.deepEqual(fs.readdirSync(path.join(parent, 'kept')), ['a.txt']);
});

test('a save first removes what a killed process left beside its target (its staging folders, a folder it was removing), nothing of a live one', async (t) => {
  const parent = tempDir();
  const target = path.join(parent, 'run.checkpoint');
  // A pid that was a process and has ended.
  const { spawnSync } = await import('node:child_process');
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  const live = process.ppid; // running (ava's main process)
  const names = [
    `.run.checkpoint.saving-${dead}-a1b2c3`, // killed mid-save: a model and an optimizer state
    `.run.checkpoint.saving-${dead}-d4e5f6.old`, // killed after the renames, before the old one was deleted
    `.run.checkpoint.removing-${dead}-g7h8i9`, // killed while removing a finished run's checkpoint
    `.run.checkpoint.saving-${live}-j1k2l3`, // another process saving now
    '.run.checkpoint.saving-m4n5o6', // a name from before staging folders carried their process id: left alone
    '.other.saving-0-p7q8r9', // another target's
  ];
  for (const name of names) {
    fs.mkdirSync(path.join(parent, name));
    fs.writeFileSync(path.join(parent, name, 'trainer.safetensors'), 'x');
  }
  await writeFolderAtomic(target, true, async (dir) => fs.writeFileSync(path.join(dir, 'state.json'), '{}'));
  t.deepEqual(fs.readdirSync(parent).sort(), [names[3], names[4], names[5], 'run.checkpoint'].sort());
});

test("an atomic write of a file removes the temporary files a killed process left beside it, not a live one's", async (t) => {
  const parent = tempDir();
  const { spawnSync } = await import('node:child_process');
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  const live = process.ppid;
  for (const [file, write] of [
    ['out.jsonl', (f: string) => writeJsonLinesAtomic(f, [{ a: 1 }])],
    ['vectors.jsonl', async (f: string) => {
      const out = atomicOutput(f);
      await out.write('{"a":1}\n');
      await out.commit();
    }],
  ] as const) {
    const names = [`.${file}.${dead}-3.tmp`, `.${file}.${live}-1.tmp`, `.${file}.tmp`];
    for (const name of names) fs.writeFileSync(path.join(parent, name), 'partial');
    await write(path.join(parent, file));
    const left = fs.readdirSync(parent).filter((name) => name.includes(file));
    t.deepEqual(left.sort(), [names[1], names[2], file].sort(), file);
  }
});

test('removeFolder renames the folder out of the way at once, then deletes it off the event loop', async (t) => {
  const parent = tempDir();
  const dir = path.join(parent, 'run.checkpoint');
  fs.mkdirSync(path.join(dir, 'model'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'model', 'model.safetensors'), Buffer.alloc(1 << 20));
  const removing = removeFolder(dir);
  t.false(fs.existsSync(dir), 'gone from its name before the delete has run (a resume cannot read it half removed)');
  t.is(fs.readdirSync(parent).length, 1);
  t.regex(fs.readdirSync(parent)[0], new RegExp(`^\\.run\\.checkpoint\\.removing-${process.pid}-`));
  await removing;
  t.deepEqual(fs.readdirSync(parent), []);
  await removeFolder(dir); // already gone: nothing to do
});
