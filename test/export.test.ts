// Export to PostgreSQL + pgvector, checked against the real engine: a throwaway cluster (initdb into a temp
// folder, unix socket only, no TCP) loads the SQL file with psql, and its top-k by `<#>` must be
// Index.search's, scores to 1e-5, exact scans and the HNSW / IVFFlat index alike. Texts, ids and metadata
// with tabs, newlines, backslashes, quotes and non-ASCII characters must come back exactly. Without the
// PostgreSQL server binaries or pgvector the tests fail, naming the packages (scripts/setup.sh installs them).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index, SparseEncoder, exportIndex, type IndexDoc, type SparseVector } from '../lib';
import { CLI, FIXTURE, tempDir } from './helpers/fixture';

const PACKAGES =
  'PostgreSQL 15 and pgvector are needed: run `bash scripts/setup.sh` (Debian bookworm: apt-get install postgresql-15 ' +
  "postgresql-server-dev-15, then it builds Debian's pgvector source package; elsewhere install postgresql-15 and " +
  'postgresql-15-pgvector from apt.postgresql.org), or point COLTRAST_PG_BINDIR at a PostgreSQL bin folder';

const projects = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', 'examples', 'ai-projects.json'), 'utf8')).projects;
const DOCS: IndexDoc[] = projects.flatMap((p: any) =>
  p.readme_content.split(/\n\n+/).map((text: string, i: number) => ({ id: `${p.project_id}#${i}`, text, metadata: { project: p.project_id, paragraph: i } })),
);
const QUERIES = ['Which project uses reinforcement learning?', 'pneumonia x-ray', 'sentiment of reviews', DOCS[7].text, 'a question about nothing in particular'];

/** The PostgreSQL bin folder: $COLTRAST_PG_BINDIR, else the newest /usr/lib/postgresql/<v>/bin with initdb. */
function pgBinDir(): string | undefined {
  if (process.env.COLTRAST_PG_BINDIR) return process.env.COLTRAST_PG_BINDIR;
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) return undefined;
  const versions = fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? path.join(root, versions[0], 'bin') : undefined;
}

interface Server {
  base: string;
  data: string;
  socket: string;
  port: number;
  bin: string;
  asServer: string[];
}

let server: Server | undefined;
let startError: Error | undefined;

function run(command: string, args: string[], what: string): string {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 240_000 });
  if (r.status !== 0) throw new Error(`${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

function startServer(): Server {
  const bin = pgBinDir();
  for (const tool of ['initdb', 'pg_ctl', 'postgres', 'psql']) {
    if (!bin || !fs.existsSync(path.join(bin, tool))) throw new Error(`no PostgreSQL ${tool} found${bin ? ` in ${bin}` : ''}. ${PACKAGES}`);
  }
  const base = tempDir('coltrast-pg-');
  const data = path.join(base, 'data');
  const socket = path.join(base, 'socket');
  fs.mkdirSync(socket);
  // The server refuses to run as root: as root, run it as the postgres user the Debian packages create.
  let asServer: string[] = [];
  if (process.getuid?.() === 0) {
    const ids = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8', timeout: 240_000 });
    if (ids.status !== 0) throw new Error(`running as root and there is no postgres user to run the server as. ${PACKAGES}`);
    const uid = Number(ids.stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8', timeout: 240_000 }).stdout.trim());
    fs.chownSync(base, uid, gid);
    fs.chownSync(socket, uid, gid);
    asServer = ['runuser', '-u', 'postgres', '--'];
  }
  const exec = (tool: string, args: string[]) => {
    const [command, ...rest] = [...asServer, path.join(bin!, tool), ...args];
    return run(command, rest, tool);
  };
  exec('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  const port = 20000 + Math.floor(Math.random() * 40000);
  const options = `-c listen_addresses='' -k ${socket} -p ${port} -c fsync=off -c full_page_writes=off`;
  exec('pg_ctl', ['-D', data, '-l', path.join(base, 'server.log'), '-w', '-t', '60', '-o', options, 'start']);
  return { base, data, socket, port, bin: bin!, asServer };
}

let stopped = false;
function stopServer(s: Server): void {
  if (stopped) return;
  stopped = true;
  const [command, ...rest] = [...s.asServer, path.join(s.bin, 'pg_ctl'), '-D', s.data, '-m', 'immediate', '-w', 'stop'];
  spawnSync(command, rest, { encoding: 'utf8', timeout: 240_000 });
  fs.rmSync(s.base, { recursive: true, force: true });
}

test.before(() => {
  try {
    server = startServer();
    // Also when the worker exits early (a failed hook, an uncaught error): never leave a server running.
    process.once('exit', () => server && stopServer(server));
  } catch (error) {
    startError = error as Error;
  }
});

test.after.always(() => {
  if (server) stopServer(server);
});

/** The running server, or a failure (never a skip) saying what to install. */
function pg(): Server {
  if (!server) throw new Error(`could not start a PostgreSQL server for the test: ${startError?.message}`);
  return server;
}

function psql(args: string[]): string {
  const s = pg();
  return run(path.join(s.bin, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', s.socket, '-p', String(s.port), '-U', 'postgres', '-d', 'postgres', ...args], 'psql');
}

/** One SQL statement's single value. */
function value(sql: string): string {
  return psql(['-A', '-t', '-c', sql]).replace(/\n$/, '');
}

function pgvectorVersion(): string {
  try {
    value('CREATE EXTENSION IF NOT EXISTS vector');
  } catch (error) {
    throw new Error(`pgvector is not installed for ${pg().bin}: ${(error as Error).message.trim()}. ${PACKAGES}`);
  }
  return value("SELECT extversion FROM pg_extension WHERE extname = 'vector'");
}

function atLeast(version: string, minimum: number[]): boolean {
  const v = version.split('.').map(Number);
  for (let i = 0; i < minimum.length; i++) if ((v[i] ?? 0) !== minimum[i]) return (v[i] ?? 0) > minimum[i];
  return true;
}

/** pgvector's vector literal of a query vector. */
const vectorLiteral = (query: Float32Array) => `'[${Array.from(query).join(',')}]'`;

/** pgvector's top k for a query (a SQL literal), as [id, score] with score = -(column <#> q), i.e. the inner product. */
function pgTopK(table: string, literal: string, k: number, settings: string[], column = 'embedding'): { id: string; score: number }[] {
  const sql = `${settings.map((s) => `SET ${s};`).join(' ')} SELECT id, -(${column} <#> ${literal}) FROM ${table} ORDER BY ${column} <#> ${literal} LIMIT ${k};`;
  return psql(['-A', '-t', '-F', '\t', '-c', sql])
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => {
      const [id, score] = l.split('\t');
      return { id, score: Number(score) };
    });
}

function planOf(table: string, literal: string, settings: string[], column = 'embedding'): string {
  return psql(['-A', '-t', '-c', `${settings.map((s) => `SET ${s};`).join(' ')} EXPLAIN SELECT id FROM ${table} ORDER BY ${column} <#> ${literal} LIMIT 5;`]);
}

for (const storage of ['float32', 'float16'] as const) {
  test.serial(`a ${storage} index exported to pgvector answers queries as Index.search does`, async (t) => {
    const version = pgvectorVersion();
    t.log(`PostgreSQL ${value('SHOW server_version')}, pgvector ${version}`);
    const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
    t.teardown(() => enc.dispose());
    const index = await Index.build(enc, DOCS, { storage });
    const dir = path.join(tempDir(), 'ai.index');
    await index.save(dir);
    const table = `docs_${storage}`;
    const file = path.join(tempDir(), 'docs.sql');
    const result = await exportIndex(dir, file, { table });
    t.deepEqual(result, { output: file, table, rows: DOCS.length, dimension: enc.dimension });
    const sql = fs.readFileSync(file, 'utf8');
    t.regex(sql, new RegExp(`^-- model: ${FIXTURE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(fingerprint sha256 [0-9a-f]{64}\\)$`, 'm'));
    t.regex(sql, new RegExp(`^-- dimension: ${enc.dimension}, documents: ${DOCS.length}, stored as ${storage}$`, 'm'));
    t.deepEqual(fs.readdirSync(path.dirname(file)), ['docs.sql'], 'no temporary file is left behind');
    psql(['-f', file]);

    t.is(Number(value(`SELECT count(*) FROM ${table}`)), DOCS.length);
    t.is(value(`SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '${table}'::regclass AND attname = 'embedding'`), `vector(${enc.dimension})`);
    t.deepEqual(JSON.parse(value(`SELECT metadata FROM ${table} WHERE id = '${DOCS[3].id}'`)), DOCS[3].metadata);
    const method = atLeast(version, [0, 5, 0]) ? 'hnsw' : 'ivfflat';
    t.regex(value(`SELECT indexdef FROM pg_indexes WHERE tablename = '${table}'`), new RegExp(`USING ${method} \\(embedding vector_ip_ops\\)`));

    const k = 5;
    const q = await enc.embed(QUERIES, { normalize: true });
    const dim = enc.dimension;
    const ours = await index.search(QUERIES, { k });
    const all = await index.search(QUERIES, { k: DOCS.length });
    // Exact scans, then the approximate index (forced, searched wide enough to be exact on 30-odd rows).
    const exact = ['enable_indexscan = off', 'enable_bitmapscan = off'];
    const indexed = ['enable_seqscan = off', method === 'hnsw' ? 'hnsw.ef_search = 200' : `ivfflat.probes = 1000`];
    t.regex(planOf(table, vectorLiteral(q.data.subarray(0, dim)), indexed), /Index Scan using docs_\w+_embedding_idx/);
    t.notRegex(planOf(table, vectorLiteral(q.data.subarray(0, dim)), exact), /Index Scan/);
    for (const settings of [exact, indexed]) {
      QUERIES.forEach((query, i) => {
        const theirs = pgTopK(table, vectorLiteral(q.data.subarray(i * dim, (i + 1) * dim)), k, settings);
        const scoreOf = new Map(all[i].map((h) => [h.id, h.score]));
        t.is(theirs.length, k);
        theirs.forEach((h, r) => {
          const where = `${settings[0]}, query "${query.slice(0, 40)}", rank ${r + 1}`;
          t.true(Math.abs(h.score - ours[i][r].score) < 1e-5, `${where}: pgvector ${h.score}, coltrast ${ours[i][r].score}`);
          // Same document at each rank, unless two documents tie (then it must be one of them).
          if (h.id !== ours[i][r].id) t.true(Math.abs(scoreOf.get(h.id)! - ours[i][r].score) < 1e-6, `${where}: pgvector ${h.id}, coltrast ${ours[i][r].id}`);
        });
      });
    }
    t.is(ours[3][0].id, DOCS[7].id, 'a document finds itself');
  });
}

test.serial('texts, ids and metadata with tabs, newlines, backslashes, quotes and unicode round-trip exactly (CLI)', async (t) => {
  pgvectorVersion();
  const docs: IndexDoc[] = [
    { id: 'tab\there', text: 'a\ttab, a\nnewline, a\r\ncarriage return and a \\ backslash', metadata: { note: 'ünïcödé ✓ 日本語 🚀', path: 'C:\\temp\\new', quote: `it's "quoted"` } },
    { id: "o'brien \"quoted\"", text: 'backslash-n written out: \\n, backslash-t: \\t, \\N alone, and \\. too', metadata: { nested: { list: [1, 2.5, null, true, 'x\ty'], empty: {} }, '\\key\n': 'v' } },
    { id: '\\.', text: '\\.\nstarts a line with backslash-dot', metadata: { emoji: '👩‍💻', rtl: 'שלום', zero: 0 } },
    { id: 'plain', text: 'no metadata at all' },
    { id: 'ünïcödé-id ✓', text: 'Ελληνικά, русский, 中文; $$ dollar quotes $$ and -- not a comment; COPY end \\.\n\\.' , metadata: { s: '$coltrast$ DO' } },
  ];
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.teardown(() => enc.dispose());
  const index = await Index.build(enc, docs);
  const dir = path.join(tempDir(), 'odd.index');
  await index.save(dir);
  const file = path.join(tempDir(), 'odd.sql');
  const cli = CLI;
  const exportCli = (...args: string[]) => spawnSync(process.execPath, [cli, 'export', ...args], { encoding: 'utf8', timeout: 240_000 });
  const r = exportCli('--index', dir, '--format', 'pgvector', '--output', file, '--table', 'public.odd_docs', '--replace', '--json');
  t.is(r.status, 0, r.stderr);
  t.like(JSON.parse(r.stdout), { rows: docs.length, table: 'public.odd_docs', dimension: enc.dimension });
  psql(['-f', file]);
  psql(['-f', file]); // --replace: loading again replaces the table

  const back = JSON.parse(value(`SELECT json_agg(json_build_object('id', id, 'text', text, 'metadata', metadata, 'embedding', embedding::real[]) ORDER BY id) FROM public.odd_docs`));
  t.is(back.length, docs.length);
  const vectors = await enc.embed(docs.map((d) => d.text), { normalize: true });
  const dim = enc.dimension;
  for (const row of back) {
    const i = docs.findIndex((d) => d.id === row.id);
    t.true(i >= 0, `unexpected id ${JSON.stringify(row.id)}`);
    t.is(row.text, docs[i].text);
    t.deepEqual(row.metadata, docs[i].metadata ?? null);
    // float4 text goes both ways exactly: every component is the stored float32.
    t.deepEqual(row.embedding.map((x: number) => Math.fround(x)), Array.from(vectors.data.subarray(i * dim, (i + 1) * dim)), row.id);
  }

  const help = spawnSync(process.execPath, [cli, 'export', '--help'], { encoding: 'utf8', timeout: 240_000 });
  t.regex(help.stdout, /ORDER BY embedding <#> '\[/);
  const bad = exportCli('--index', dir, '--output', file, '--table', 'Odd-Name');
  t.is(bad.status, 2);
  t.regex(bad.stderr, /table name "Odd-Name"/);
  const badFormat = exportCli('--index', dir, '--output', file, '--format', 'qdrant');
  t.is(badFormat.status, 2);
  t.regex(badFormat.stderr, /--format must be pgvector/);
});

/** pgvector's sparsevec text of a sparse vector: {index:value,...}/width, indices from 1. */
const sparsevec = (v: SparseVector, width: number) => `'{${Array.from(v.indices, (t, k) => `${t + 1}:${v.values[k]}`).join(',')}}/${width}'`;

test.serial('an index with sparse vectors, a second sparse model\'s or a sparse encoder\'s alone, exports them as sparsevec and answers as Index.search does', async (t) => {
  const version = pgvectorVersion();
  if (!atLeast(version, [0, 7, 0])) return t.fail(`pgvector ${version} has no sparsevec (0.7.0 and later). ${PACKAGES}`);
  const splade = await SparseEncoder.load(path.join(FIXTURE, '..', 'tiny-sparse', 'bert'), { device: 'cpu' });
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.teardown(() => {
    enc.dispose();
    splade.dispose();
  });
  const width = splade.dimension;
  const k = 5;
  const queries = await splade.encode(QUERIES, { task: 'query' });
  const exact = ['enable_indexscan = off', 'enable_bitmapscan = off'];
  const indexed = ['enable_seqscan = off', 'hnsw.ef_search = 200'];
  for (const [name, index, column] of [
    ['hybrid', await Index.build(enc, DOCS, { sparseEncoder: splade }), 'sparse_embedding'],
    ['sparse', await Index.build(splade, DOCS), 'embedding'],
  ] as const) {
    const dir = path.join(tempDir(), `${name}.index`);
    await index.save(dir);
    const file = path.join(tempDir(), `${name}.sql`);
    const table = `docs_${name}`;
    const result = await exportIndex(dir, file, { table });
    t.deepEqual(result, { output: file, table, rows: DOCS.length, dimension: name === 'hybrid' ? enc.dimension : 0, sparseDimension: width });
    psql(['-f', file]);
    const types = value(`SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '${table}'::regclass AND attnum > 0`);
    t.is(types, `id text, text text, metadata jsonb, ${name === 'hybrid' ? `embedding vector(${enc.dimension}), ` : ''}${column} sparsevec(${width})`);
    t.regex(value(`SELECT string_agg(indexdef, ';') FROM pg_indexes WHERE tablename = '${table}'`), new RegExp(`USING hnsw \\(${column} sparsevec_ip_ops\\)`));
    // Every stored vector is the model's, entry for entry.
    const stored = await splade.encode([DOCS[2].text], { task: 'document' });
    const text = /^\{(.*)\}\/(\d+)$/.exec(value(`SELECT ${column}::text FROM ${table} WHERE id = '${DOCS[2].id}'`))!;
    t.is(Number(text[2]), width);
    const entries = text[1].split(',').map((e) => e.split(':').map(Number));
    t.deepEqual(entries.map(([i]) => i - 1), Array.from(stored[0].indices));
    t.deepEqual(entries.map(([, x]) => Math.fround(x)), Array.from(stored[0].values), 'each weight the stored float32');
    t.regex(planOf(table, sparsevec(queries[0], width), indexed, column), new RegExp(`Index Scan using ${table}_${column}_idx`));
    t.notRegex(planOf(table, sparsevec(queries[0], width), exact, column), /Index Scan/);
    const ours = await index.search(QUERIES, { k, ...(name === 'hybrid' && { mode: 'sparse' as const }) });
    for (const settings of [exact, indexed]) {
      QUERIES.forEach((query, i) => {
        const theirs = pgTopK(table, sparsevec(queries[i], width), k, settings, column);
        t.is(theirs.length, Math.min(k, ours[i].length), `${name}, ${settings[0]}, "${query.slice(0, 30)}"`);
        theirs.forEach((h, r) => {
          const where = `${name}, ${settings[0]}, query "${query.slice(0, 30)}", rank ${r + 1}`;
          t.true(Math.abs(h.score - ours[i][r].score) < 1e-5 * Math.max(1, Math.abs(h.score)), `${where}: pgvector ${h.score}, coltrast ${ours[i][r].score}`);
          if (h.id !== ours[i][r].id) t.true(Math.abs(h.score - ours[i][r].score) < 1e-6 * Math.max(1, Math.abs(h.score)), `${where}: pgvector ${h.id}, coltrast ${ours[i][r].id}`);
        });
      });
    }
  }
});

test('a document PostgreSQL cannot store is refused by name, and a failed export leaves the old file alone', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.teardown(() => enc.dispose());
  const dir = path.join(tempDir(), 'nul.index');
  await (await Index.build(enc, [{ id: 'fine', text: 'fine' }, { id: 'bad', text: 'a NUL \0 here' }])).save(dir);
  const out = path.join(tempDir(), 'out');
  fs.mkdirSync(out);
  const file = path.join(out, 'docs.sql');
  fs.writeFileSync(file, 'old');
  await t.throwsAsync(exportIndex(dir, file), { message: /document "bad" \(docs\.jsonl:2\) holds a NUL character/ });
  t.is(fs.readFileSync(file, 'utf8'), 'old');
  t.deepEqual(fs.readdirSync(out), ['docs.sql']);
  const meta = path.join(tempDir(), 'meta.index');
  await (await Index.build(enc, [{ id: 'm', text: 'x', metadata: { a: ['\0'] } }])).save(meta);
  await t.throwsAsync(exportIndex(meta, file), { message: /metadata holds a NUL character/ });
  await t.throwsAsync(exportIndex(meta, file, { table: 'a.b.c' }), { message: /table name/ });
  await t.throwsAsync(exportIndex(meta, file, { vectorIndex: 'flat' as 'none' }), { message: /options\.vectorIndex/ });
  await t.throwsAsync(exportIndex(path.join(out, 'missing'), file), { message: /no index\.json/ });
  // A damaged vectors file is caught before anything replaces the output.
  fs.truncateSync(path.join(dir, 'vectors.safetensors'), 200);
  await t.throwsAsync(exportIndex(dir, file), { message: /vectors\.safetensors is truncated/ });
  t.is(fs.readFileSync(file, 'utf8'), 'old');
});

test.serial('--vector-index ivfflat and none load too', async (t) => {
  pgvectorVersion();
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.teardown(() => enc.dispose());
  const dir = path.join(tempDir(), 'small.index');
  await (await Index.build(enc, DOCS.slice(0, 12))).save(dir);
  for (const kind of ['ivfflat', 'none'] as const) {
    const file = path.join(tempDir(), `${kind}.sql`);
    await exportIndex(dir, file, { table: `small_${kind}`, vectorIndex: kind });
    psql(['-f', file]);
    const defs = value(`SELECT coalesce(string_agg(indexdef, ';'), '') FROM pg_indexes WHERE tablename = 'small_${kind}' AND indexname LIKE '%embedding%'`);
    if (kind === 'ivfflat') t.regex(defs, /USING ivfflat \(embedding vector_ip_ops\) WITH \(lists='?1'?\)/);
    else t.is(defs, '');
    t.is(Number(value(`SELECT count(*) FROM small_${kind}`)), 12);
  }
});
