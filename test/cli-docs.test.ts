// The help text and the README against what the code takes: the README's first command and walkthrough run;
// every flag a command's parser accepts is in its help, every flag the help or the README gives a command is one
// it accepts, the benchmark suites named are the ones scripts/bench/run.js has, every export of the package is
// named in the README, and the README's TypeScript examples type-check against the package.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import ts from 'typescript';
import { COMMAND_FLAGS, USAGE, commandHelp } from '../lib/cli';
import * as coltrast from '../lib';
import { tempDir } from './helpers/fixture';

const root = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const COMMANDS = Object.keys(COMMAND_FLAGS);

const flagsIn = (text: string): string[] => [...new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((m) => m[1]))];

// Flags a command's help names that belong to another command, on purpose (what to do next, or where a
// setting lives elsewhere).
const HELP_MENTIONS: Record<string, string[]> = {
  train: ['truncate-dim'], // Matryoshka vectors are cut with embed/index/serve --truncate-dim
  'generate-queries': ['cross-encoder', 'output-scores'], // GPL's next step: mine --cross-encoder --output-scores
};

test('each command\'s help names every flag its parser takes, and no other', (t) => {
  for (const command of COMMANDS) {
    const help = commandHelp(command);
    t.true(help.startsWith(`usage: coltrast ${command} `), `${command} has a section in USAGE`);
    const named = flagsIn(help);
    const accepted = COMMAND_FLAGS[command];
    // info takes --json but its one-line help does not need it; every other command lists each flag.
    const unlisted = accepted.filter((f) => !named.includes(f) && !(command === 'info' && f === 'json'));
    t.deepEqual(unlisted, [], `coltrast ${command} takes flags its help does not name`);
    const unknown = named.filter((f) => !accepted.includes(f)).sort();
    t.deepEqual(unknown, (HELP_MENTIONS[command] ?? []).slice().sort(), `coltrast ${command}'s help names flags it does not take`);
  }
});

/** The README's `coltrast <command> ...` invocations: shell code blocks, and inline code that starts with coltrast. */
function readmeInvocations(): { command: string; flags: string[]; where: string }[] {
  const found: { command: string; flags: string[]; where: string }[] = [];
  const pattern = new RegExp(`^(?:npx )?coltrast (${COMMANDS.join('|')})(?= |$)(.*)$`);
  const lines = readme.split('\n');
  let block: string | undefined;
  lines.forEach((line, i) => {
    const fence = /^```(\w*)/.exec(line);
    if (fence) {
      block = block === undefined ? fence[1] : undefined;
      return;
    }
    const candidates = block === 'sh' ? [line.replace(/\s+#.*$/, '')] : block === undefined ? [...line.matchAll(/`((?:npx )?coltrast [^`]+)`/g)].map((m) => m[1]) : [];
    for (const candidate of candidates) {
      const m = pattern.exec(candidate.trim());
      // a shell line ends its command at a pipe, && or & (the next command's flags are not coltrast's)
      if (m) found.push({ command: m[1], flags: flagsIn(m[2].split(/\s(?:\||&&|&)(?:\s|$)/)[0]), where: `README.md:${i + 1}` });
    }
  });
  return found;
}

test('coltrast --version prints the package version, without the native addon', (t) => {
  const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  // COLTRAST_BINARY naming a build that is not there: loading the addon would fail.
  for (const flag of ['--version', '-V', 'version']) {
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'cli.js'), flag], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_BINARY: 'no-such-binary' } });
    t.is(r.status, 0, r.stderr);
    t.is(r.stdout, `${version}\n`);
  }
  t.regex(USAGE, /--version\s+coltrast's version/);
});

test('every coltrast command the README shows uses flags the command takes', (t) => {
  const invocations = readmeInvocations();
  t.true(invocations.length >= 20, `found ${invocations.length} invocations`);
  for (const { command, flags, where } of invocations) {
    const unknown = flags.filter((f) => !COMMAND_FLAGS[command].includes(f));
    t.deepEqual(unknown, [], `${where}: coltrast ${command} does not take these flags`);
  }
});

test('the README\'s command-line reference gives each command only flags it takes, and every command', (t) => {
  const section = /\n## Command line\n+```\n([\s\S]*?)\n```\n/.exec(readme)?.[1];
  t.truthy(section, 'README.md has a "## Command line" section with a code block');
  const entries = new Map<string, string>();
  let current: string | undefined;
  for (const line of section!.split('\n')) {
    const m = /^coltrast ([a-z-]+)/.exec(line);
    if (m) entries.set((current = m[1]), line.slice(m[0].length));
    else if (current && /^\s/.test(line)) entries.set(current, `${entries.get(current)}\n${line}`);
  }
  // build and bench pass their arguments on (cmake-js, scripts/bench/run.js); --version is no command's flag.
  const other = (c: string) => c === 'build' || c === 'bench' || c === '--version';
  const described = [...entries.keys()].filter((c) => !other(c)).sort();
  t.deepEqual(described, COMMANDS.slice().sort(), 'one entry per command');
  t.true(entries.has('--version'));
  for (const [command, text] of entries) {
    if (other(command)) continue;
    const unknown = flagsIn(text).filter((f) => !COMMAND_FLAGS[command].includes(f));
    t.deepEqual(unknown, [], `README's coltrast ${command} entry names flags it does not take`);
  }
});

test('the benchmark suites named in the help and the README are those scripts/bench/run.js runs', (t) => {
  const run = spawnSync(process.execPath, [path.join(root, 'scripts', 'bench', 'run.js'), '--suites', 'no-such-suite', '--out', tempDir()], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 2, run.stderr);
  const suites = /unknown suite 'no-such-suite' \(([^)]*)\)/.exec(run.stderr)?.[1].split(', ');
  t.truthy(suites, run.stderr);
  const listed = (text: string) => /--suites ([a-z,]+)/.exec(text)?.[1].split(',');
  t.deepEqual(listed(USAGE), suites, 'coltrast help');
  t.deepEqual(listed(readme.split('\n## Command line\n')[1] ?? ''), suites, 'README.md, "Command line"');
});

/**
 * The README's first command (its main job on the bundled example data) and its walkthrough, run as a reader would
 * (`npx coltrast` is the package's bin, dist/cli.js), their models and index written to a temporary folder. The
 * walkthrough's server lines are left to test/serve.test.ts.
 */
test('the README\'s first command and its walkthrough run on the bundled example data', (t) => {
  const main = /^```sh\n(.*)\n/m.exec(readme)?.[1].replace(/^bash scripts\/setup\.sh && /, '');
  t.regex(main ?? '', /^npx coltrast train --data examples\/ai-projects\.json /, 'the first line sets up, then trains');
  const walkthrough = /\n## Walkthrough[^\n]*\n+```sh\n([\s\S]*?)\n```/.exec(readme)?.[1].split('\n') ?? [];
  const commands = [main!, ...walkthrough.map((l) => l.replace(/\s+#.*$/, '')).filter((l) => l.startsWith('npx coltrast ') && !l.startsWith('npx coltrast serve '))];
  t.true(commands.length >= 8, `${commands.length} commands`);
  const dir = tempDir();
  const outputs = commands.map((command) => {
    const line = command.replace(/^npx coltrast /, `${JSON.stringify(process.execPath)} dist/cli.js `).replace(/(^| )models\//g, `$1${dir}/models/`);
    const run = spawnSync('bash', ['-c', line], { cwd: root, encoding: 'utf8', timeout: 240_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
    t.is(run.status, 0, `${command}\n${run.stderr}`);
    return run.stdout;
  });
  t.regex(outputs[0], /^before training: Recall@1 [\d.]+, MRR@10 [\d.]+ \(11 questions\)$/m);
  t.regex(outputs[0], /^model saved to .*models\/ai-projects$/m);
  const searches = commands.flatMap((c, i) => (c.startsWith('npx coltrast search ') ? [{ command: c, hits: [...outputs[i].matchAll(/^ {2}\d+\. (\S+)#\d+ /gm)].map((m) => m[1]) }] : []));
  t.is(searches.length, 3);
  for (const { command, hits } of searches) {
    t.is(hits.length, 3, command);
    // The reinforcement-learning questions find the trading bot first; the filtered one, only its project.
    t.is(hits[0], command.includes('medical-diagnosis') ? 'medical-diagnosis' : 'trading-bot', command);
    if (command.includes('--filter')) t.deepEqual([...new Set(hits)], ['medical-diagnosis'], command);
  }
});

test('the README names every function, class and constant the package exports', (t) => {
  const unnamed = Object.keys(coltrast).filter((name) => !new RegExp(`\\b${name}\\b`).test(readme));
  t.deepEqual(unnamed, []);
});

/**
 * The README's TypeScript blocks, each compiled as a module: its imports on top, the rest in an async function
 * (the examples await at top level), the names an example takes from an earlier one declared.
 */
test('the README\'s TypeScript examples type-check against the package', (t) => {
  const dir = tempDir();
  const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => ({ code: m[1], line: readme.slice(0, m.index).split('\n').length + 1 }));
  t.true(blocks.length >= 8, `found ${blocks.length} blocks`);
  // What the examples use without making it: data and objects a reader has (typed as the API takes them).
  const given = [
    "declare const documents: string[];",
    "declare const index: import('coltrast').Index;",
    "declare const docs: import('coltrast').IndexDoc[];",
    "declare const moreDocs: import('coltrast').IndexDoc[];",
    "declare const changedDocs: import('coltrast').IndexDoc[];",
    "declare const prompts: string[];",
    "declare const question: string;",
    "declare const q: import('coltrast').Tensor, c: import('coltrast').Tensor, d: import('coltrast').Tensor;",
    "declare const qmask: import('coltrast').Mask, dmask: import('coltrast').Mask;",
    "declare const gradOutput: Float32Array; // dL/dS, one per score",
  ].join('\n');
  const exported = Object.keys(coltrast);
  const files = blocks.map(({ code }, n) => {
    const lines = code.split('\n');
    const imports = lines.filter((l) => /^import /.test(l));
    const body = lines.filter((l) => !/^import /.test(l)).join('\n');
    const imported = new Set(imports.flatMap((l) => /\{([^}]*)\}/.exec(l)?.[1].split(',').map((s) => s.trim()) ?? []));
    // A block that continues an earlier one uses its imports: import what it names from the package.
    const names = exported.filter((name) => !imported.has(name) && new RegExp(`\\b${name}\\b`).test(body));
    const file = path.join(dir, `example-${n}.ts`);
    const text = [...imports, ...(names.length ? [`import { ${names.join(', ')} } from 'coltrast';`] : []), given, `export async function example(): Promise<void> {`, body, '}', ''].join('\n');
    fs.writeFileSync(file, text);
    return file;
  });
  fs.writeFileSync(path.join(dir, 'openai.d.ts'), "declare module 'openai';\n");
  const program = ts.createProgram([...files, path.join(dir, 'openai.d.ts')], {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    esModuleInterop: true,
    skipLibCheck: true,
    types: ['node'],
    typeRoots: [path.join(root, 'node_modules', '@types')],
    baseUrl: dir,
    paths: { coltrast: [path.join(root, 'lib', 'index.ts')] },
  });
  const problems = ts.getPreEmitDiagnostics(program).map((d) => {
    const file = d.file ? files.indexOf(d.file.fileName) : -1;
    const where = file >= 0 ? `README.md block at line ${blocks[file].line}, line ${d.file!.getLineAndCharacterOfPosition(d.start ?? 0).line + 1} of the compiled example` : d.file?.fileName ?? '';
    return `${where}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
  t.deepEqual(problems, []);
});
