/**
 * Model arguments: a local folder, or a Hugging Face id downloaded once into the Hugging Face cache.
 *
 * The cache layout is the one Python's huggingface_hub and @huggingface/hub use
 * (`models--org--name/{blobs,snapshots/<commit>,refs/<revision>}`), so a model downloaded by either is
 * found here and the other way round.
 *
 * Why not @huggingface/hub (checked in 2.17.5, src/lib/download-file-to-cache-dir.ts and
 * snapshot-download.ts): `downloadFileToCacheDir` writes `blobs/<etag>.incomplete` and renames it (atomic),
 * but truncates a partial file instead of resuming it, reports no byte progress and logs through
 * console.debug; without a commit id it files each file under the snapshot of the file's own last commit.
 * `snapshotDownload` fetches every file of the repository (pickles, ONNX, OpenVINO exports: gigabytes
 * coltrast never reads), writes refs/<revision> before the files, and always asks the hub first, so it
 * does not work offline. Wrapping it would leave only the cache-path helpers, so we use two documented,
 * stable endpoints instead (`/api/models/{id}/revision/{rev}?blobs=true` for the file list with sizes
 * and hashes, and `/{id}/resolve/{commit}/{file}`) with Node's own fetch, and keep the same cache layout.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ColtrastError } from './errors';
import { moduleClass, parseModules, readJson, transformerFolder, weightFiles } from './model-dir';
import { booleanValue, checkOptions, invalid } from './validate';

export interface DownloadProgress {
  /** Path of the file in the repository, e.g. 'model.safetensors'. */
  file: string;
  /** Bytes of this file on disk so far (a resumed download starts above 0). */
  downloaded: number;
  /** Size of the file, when the hub reports it. */
  total: number | undefined;
  /** 0-based index of this file among those being downloaded. */
  fileIndex: number;
  fileCount: number;
}

export interface ResolveOptions {
  /** Cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Branch, tag or commit (default 'main', or the `@revision` suffix of the id). */
  revision?: string;
  /** Hub address (default: $HF_ENDPOINT, else https://huggingface.co). */
  endpoint?: string;
  /** Access token for gated or private models (default: $HF_TOKEN). */
  token?: string;
  /** Never use the network; only the cache (default: $HF_HUB_OFFLINE is 1 or true). */
  offline?: boolean;
  /** Called as bytes arrive. */
  onProgress?: (progress: DownloadProgress) => void;
  /** The fetch to use (default: the global one), e.g. one that goes through a proxy. */
  fetch?: typeof fetch;
}

const RESOLVE_KEYS = ['cacheDir', 'revision', 'endpoint', 'token', 'offline', 'onProgress', 'fetch'] as const;

/** Downloads whose caller gave no onProgress report here: nowhere in a library call; the command line sets bars. */
let defaultOnProgress: ResolveOptions['onProgress'];

/** @internal Sets the progress callback of downloads whose caller gives none (the CLI: a bar per file, on stderr). */
export function setDefaultDownloadProgress(onProgress: ResolveOptions['onProgress']): void {
  defaultOnProgress = onProgress;
}

/** Files coltrast reads from a model repository; everything else (pickles, ONNX, …) is never fetched. */
const WANTED = new Set([
  'config.json',
  'model.safetensors',
  'model.safetensors.index.json',
  'generation_config.json',
  'chat_template.jinja',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.txt',
  'modules.json',
  'sentence_bert_config.json',
  'config_sentence_transformers.json',
  // A sentence-transformers model saved with a LoRA adapter (its base model named in adapter_config.json, loaded too).
  'adapter_config.json',
  'adapter_model.safetensors',
]);
/** sentence-transformers module files: configs such as 1_Pooling/config.json, and a Dense head's weights. */
const MODULE_FILE = /^\d+_[A-Za-z]+\/(config\.json|model\.safetensors)$/;
/** The shards of sharded weights, as transformers names them (model-00001-of-00004.safetensors). */
const SHARD = /^model-\d+-of-\d+\.safetensors$/;
const PICKLE = /\.(bin|pt|pth|ckpt|pkl)$/;
const COMMIT = /^[0-9a-f]{40}$/;
const NAME = '[A-Za-z0-9_][A-Za-z0-9._-]*';
const HUB_ID = new RegExp(`^(?:${NAME}/)?${NAME}(?:@[A-Za-z0-9._/-]+)?$`);

const FOLDER_HINT =
  'pass a local folder instead (a directory holding config.json, model.safetensors and tokenizer.json, ' +
  'e.g. one saved by Encoder.save or by sentence-transformers)';

/** True for `name`, `org/name` and either with `@revision`; paths such as `./x` or `/a/b` are not ids. */
export function looksLikeHubId(value: string): boolean {
  return HUB_ID.test(value) && !value.split('@')[0].split('/').some((part) => part.includes('..'));
}

/** The default cache folder, as Python's huggingface_hub computes it. */
export function defaultCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  const home = process.env.HF_HOME || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

/** The folder of one repository in the cache: models--org--name. */
export function repoCacheDir(cacheDir: string, repoId: string): string {
  return path.join(cacheDir, `models--${repoId.replace(/\//g, '--')}`);
}

/** The model coltrast ships (made by scripts/pretrain/run.js); the name 'default' stands for it. */
export const DEFAULT_MODEL_DIR = path.resolve(__dirname, '..', 'default-model');

/**
 * Returns a local folder for `modelOrPath`: 'default' (the shipped model), the folder itself, or the cached
 * snapshot of a Hugging Face id, downloading the files coltrast needs first if they are not cached.
 */
export async function resolveModelDir(modelOrPath: string, options?: ResolveOptions): Promise<string> {
  const o = checkOptions('options', options, RESOLVE_KEYS);
  if (typeof modelOrPath !== 'string' || modelOrPath.length === 0) throw invalid('model', 'a folder path or a Hugging Face id', modelOrPath);
  if (modelOrPath === 'default') {
    if (!fs.existsSync(path.join(DEFAULT_MODEL_DIR, 'model.safetensors'))) {
      throw new ColtrastError('MODEL_FILES', `the default model is missing from this installation (${DEFAULT_MODEL_DIR}); reinstall coltrast, or rebuild it with node scripts/pretrain/run.js`);
    }
    return DEFAULT_MODEL_DIR;
  }
  const local = localFolder(modelOrPath);
  if (local) return local;

  const [repoId, idRevision] = modelOrPath.split('@');
  const revision = o.revision ?? idRevision ?? 'main';
  for (const [key, value] of Object.entries({ cacheDir: o.cacheDir, revision, endpoint: o.endpoint, token: o.token })) {
    if (value !== undefined && (typeof value !== 'string' || value.length === 0)) throw invalid(`options.${key}`, 'a non-empty string', value);
  }
  // A revision names a ref file under refs/ (a branch may hold '/', as refs/pr/1): '..' would read files outside the cache.
  if (revision.split('/').some((part) => part === '' || part === '.' || part === '..') || revision.includes('\\')) {
    throw invalid(o.revision !== undefined ? 'options.revision' : 'model', 'a branch, tag or commit id (org/name@revision)', o.revision ?? modelOrPath);
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
  if (o.fetch !== undefined && typeof o.fetch !== 'function') throw invalid('options.fetch', 'a function', o.fetch);
  const envOffline = /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? '');
  const hub: Hub = {
    repoId,
    revision,
    repoDir: repoCacheDir(path.resolve(o.cacheDir ?? defaultCacheDir()), repoId),
    endpoint: (o.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    token: o.token ?? (process.env.HF_TOKEN || undefined),
    offline: booleanValue('options.offline', o.offline ?? envOffline),
    onProgress: o.onProgress ?? defaultOnProgress,
    fetch: o.fetch ?? fetch,
  };

  const cached = cachedSnapshot(hub);
  if (cached) return cached;
  if (hub.offline) {
    throw new ColtrastError(
      'NETWORK',
      `model ${repoId}@${revision} is not in the cache (${hub.repoDir}) and offline mode is on ` +
        `(options.offline or HF_HUB_OFFLINE); download it once with network access, or ${FOLDER_HINT}`,
    );
  }
  return download(hub);
}

interface Hub {
  repoId: string;
  revision: string;
  repoDir: string;
  endpoint: string;
  token: string | undefined;
  offline: boolean;
  onProgress: ResolveOptions['onProgress'];
  fetch: typeof fetch;
}

interface RepoFile {
  name: string;
  /** Blob name in the cache: the LFS sha256 for LFS files, the git blob id otherwise. */
  etag: string;
  size: number | undefined;
  sha256: string | undefined;
}

/** An existing folder, or undefined when `value` should be read as a hub id. Throws for bad paths. */
function localFolder(value: string): string | undefined {
  const full = path.resolve(value.startsWith('~/') ? path.join(os.homedir(), value.slice(2)) : value);
  if (fs.existsSync(full)) {
    if (!fs.statSync(full).isDirectory()) {
      throw new ColtrastError('MODEL_FILES', `${full} is a file; a model is a folder holding config.json, model.safetensors and tokenizer.json`);
    }
    return full;
  }
  if (!looksLikeHubId(value) || /^[.~/]/.test(value) || value.includes('\\')) {
    throw new ColtrastError('MODEL_FILES', `model folder ${full} does not exist (and "${value}" is not a Hugging Face id such as org/name)`);
  }
  return undefined;
}

/** The snapshot folder when refs/<revision> (or the commit itself) is cached with config and weights (or an adapter's). */
function cachedSnapshot(hub: Hub): string | undefined {
  let commit = hub.revision;
  if (!COMMIT.test(commit)) {
    const ref = path.join(hub.repoDir, 'refs', hub.revision);
    if (!fs.existsSync(ref)) return undefined;
    commit = fs.readFileSync(ref, 'utf8').trim();
    // huggingface_hub writes a commit id there; anything else is no snapshot of ours (nor a path to follow).
    if (!COMMIT.test(commit)) return undefined;
  }
  const dir = path.join(hub.repoDir, 'snapshots', commit);
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  // An older sentence-transformers save keeps the Transformer's files in a subfolder (0_Transformer).
  // Offline, a modules.json that is malformed or names paths outside the folder is the model's fault, said as loading
  // would say it ("not cached" would send the user looking for a download); online the snapshot is fetched again (the
  // repository may have fixed it). A Transformer subfolder not there yet is an incomplete snapshot.
  if (hub.offline && has('modules.json')) parseModules(readJson(path.join(dir, 'modules.json'), 'modules.json'), path.join(dir, 'modules.json'));
  let transformer: string;
  try {
    transformer = has('modules.json') ? transformerFolder(dir) : dir;
  } catch {
    return undefined;
  }
  const inTransformer = (f: string) => fs.existsSync(path.join(transformer, f));
  // A model, or an adapter with no model of its own (its base is cached or fetched by name when it loads).
  const complete = inTransformer('tokenizer.json') && (inTransformer('config.json') ? hasWeights(transformer) : has('adapter_config.json') && has('adapter_model.safetensors'));
  return complete ? dir : undefined;
}

/** The folder holds model.safetensors, or an index and every shard it names. */
function hasWeights(dir: string): boolean {
  try {
    return weightFiles(dir) !== undefined;
  } catch {
    return false;
  }
}

/** The most specific reason fetch gives for a failure: ECONNREFUSED, ENOTFOUND, … */
function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message;
}

/**
 * GETs `url` (with the token when there is one) and maps failures to ColtrastErrors. `file` names the
 * file being fetched; without it the request is the repository listing.
 */
async function request(hub: Hub, url: string, file?: string, headers: Record<string, string> = {}): Promise<Response> {
  if (hub.token) headers.authorization = `Bearer ${hub.token}`;
  let response: Response;
  try {
    response = await hub.fetch(url, { headers, redirect: 'follow' });
  } catch (error) {
    throw new ColtrastError(
      'NETWORK',
      `cannot reach ${hub.endpoint} to download ${hub.repoId} (${networkReason(error)}); ` +
        `it is not in the cache (${hub.repoDir}). Connect once to download it, or ${FOLDER_HINT}`,
      { cause: error },
    );
  }
  if (response.status === 401 || response.status === 403) {
    throw new ColtrastError(
      'NETWORK',
      `${hub.endpoint} refused access to ${hub.repoId} (HTTP ${response.status}): it is gated or private. ` +
        'Accept its terms on the hub and set HF_TOKEN (or options.token) to an access token',
    );
  }
  if (response.status === 404) {
    throw new ColtrastError(
      'MODEL_FILES',
      file === undefined
        ? `no model ${hub.repoId} at revision ${hub.revision} on ${hub.endpoint} (HTTP 404); check the id`
        : `${hub.endpoint} has no ${file} in ${hub.repoId}@${hub.revision} although it lists it (HTTP 404)`,
    );
  }
  if (!response.ok && response.status !== 206 && response.status !== 416) {
    throw new ColtrastError('NETWORK', `${url} answered HTTP ${response.status} ${response.statusText}`);
  }
  return response;
}

/** Lists the repository at the revision and picks the files to fetch. */
async function listFiles(hub: Hub): Promise<{ commit: string; files: RepoFile[] }> {
  const url = `${hub.endpoint}/api/models/${hub.repoId}/revision/${encodeURIComponent(hub.revision)}?blobs=true`;
  const info = (await (await request(hub, url)).json()) as {
    sha?: string;
    siblings?: { rfilename: string; blobId?: string; size?: number; lfs?: { sha256: string; size: number } }[];
  };
  if (typeof info.sha !== 'string' || !COMMIT.test(info.sha) || !Array.isArray(info.siblings)) {
    throw new ColtrastError('NETWORK', `${url} did not return a model description (no commit sha or file list)`);
  }
  const names = new Set(info.siblings.map((s) => s.rfilename));
  const where = `${hub.repoId}@${hub.revision}`;
  const entry = (s: (typeof info.siblings)[number]): RepoFile => ({
    name: s.rfilename,
    etag: s.lfs?.sha256 ?? s.blobId ?? createHash('sha1').update(`${info.sha}/${s.rfilename}`).digest('hex'),
    size: s.lfs?.size ?? s.size,
    sha256: s.lfs?.sha256,
  });
  // An older sentence-transformers save keeps the Transformer's files (config, weights, tokenizer) in the folder that
  // modules.json names (0_Transformer, 0_BERT), which holds the Transformer's sentence_bert_config.json: modules.json
  // is fetched first to learn which.
  let prefix = '';
  const modulesFile = info.siblings.find((s) => s.rfilename === 'modules.json');
  if (modulesFile && [...names].some((n) => /^[^/]+\/sentence_bert_config\.json$/.test(n))) {
    const file = entry(modulesFile);
    const blob = path.join(hub.repoDir, 'blobs', file.etag);
    if (!fs.existsSync(blob)) await downloadBlob(hub, info.sha, file, blob, 0, 1);
    const modules = parseModules(readJson(blob, 'modules.json'), `modules.json of ${where}`);
    const transformer = modules.find((m) => moduleClass(m.type) === 'Transformer');
    if (transformer?.path) prefix = `${transformer.path}/`;
  }
  const at = (name: string) => `${prefix}${name}`;
  const has = (name: string) => names.has(at(name));
  // An adapter with no model of its own: its weights are adapter_model.safetensors (Encoder.load loads the base it names).
  const adapterOnly = !has('config.json') && names.has('adapter_config.json');
  if (!has('config.json') && !adapterOnly) throw new ColtrastError('MODEL_FILES', `${where} has no ${at('config.json')}; it is not a transformers model`);
  if (adapterOnly && !names.has('adapter_model.safetensors')) {
    throw new ColtrastError(
      'MODEL_FILES',
      `${where} holds a LoRA adapter without adapter_model.safetensors${names.has('adapter_model.bin') ? ' (only adapter_model.bin, a pickle file, which coltrast never loads)' : ''}; ` +
        "save it with safetensors in Python (model.save_pretrained(dir, safe_serialization=True)) and load the folder",
    );
  }
  if (!adapterOnly && !has('model.safetensors') && !has('model.safetensors.index.json')) {
    const pickles = [...names].filter((n) => PICKLE.test(n) && n.startsWith(prefix) && !n.slice(prefix.length).includes('/'));
    throw new ColtrastError(
      'MODEL_FILES',
      `${where} has no ${at('model.safetensors')}` +
        (pickles.length ? ` (only ${pickles.join(', ')}: pickle files, which coltrast never loads)` : '') +
        '. coltrast reads safetensors only; convert the checkpoint once in Python ' +
        "(AutoModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)) and load the folder",
    );
  }
  if (!has('tokenizer.json')) {
    throw new ColtrastError('MODEL_FILES', `${where} has no ${at('tokenizer.json')} (the fast tokenizer file coltrast tokenizes with)`);
  }
  const inTransformer = (name: string) => name.startsWith(prefix) && (WANTED.has(name.slice(prefix.length)) || (!has('model.safetensors') && SHARD.test(name.slice(prefix.length))));
  const files = info.siblings
    .filter((s) => WANTED.has(s.rfilename) || MODULE_FILE.test(s.rfilename) || (!names.has('model.safetensors') && SHARD.test(s.rfilename)) || (prefix !== '' && inTransformer(s.rfilename)))
    .map(entry);
  return { commit: info.sha, files };
}

async function download(hub: Hub): Promise<string> {
  const { commit, files } = await listFiles(hub);
  const snapshot = path.join(hub.repoDir, 'snapshots', commit);
  for (const [index, file] of files.entries()) {
    const blob = path.join(hub.repoDir, 'blobs', file.etag);
    if (!fs.existsSync(blob)) await downloadBlob(hub, commit, file, blob, index, files.length);
    linkIntoSnapshot(blob, path.join(snapshot, file.name));
  }
  // The ref goes last: a cache with a ref is a complete cache.
  if (!COMMIT.test(hub.revision)) writeAtomic(path.join(hub.repoDir, 'refs', hub.revision), commit);
  return snapshot;
}

/** Downloads one file into blobs/<etag>, resuming blobs/<etag>.incomplete when it exists. */
async function downloadBlob(hub: Hub, commit: string, file: RepoFile, blob: string, fileIndex: number, fileCount: number) {
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  const partial = `${blob}.incomplete`;
  let have = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
  if (file.size !== undefined && have > file.size) have = 0;
  const report = (downloaded: number) => hub.onProgress?.({ file: file.name, downloaded, total: file.size, fileIndex, fileCount });
  // A partial file that is already whole (the rename was interrupted) needs no request at all.
  if (file.size === undefined || have < file.size) have = await fetchInto(hub, commit, file, partial, have, report);
  else report(have);
  if (file.size !== undefined && have !== file.size) {
    throw new ColtrastError('NETWORK', `download of ${file.name} from ${hub.repoId} stopped at ${have} of ${file.size} bytes; run again to resume`);
  }
  if (file.sha256 && (await sha256(partial)) !== file.sha256) {
    fs.rmSync(partial, { force: true });
    throw new ColtrastError('NETWORK', `${file.name} from ${hub.repoId} does not match its sha256 ${file.sha256}; the partial file was removed, run again`);
  }
  fs.renameSync(partial, blob);
}

/**
 * Appends the rest of `file` to `partial`, which holds its first `have` bytes, and returns the bytes on
 * disk. A 206 answer continues the file; a 200 (a server that ignores Range) starts it over. A connection
 * lost mid-way keeps what arrived, so the next call resumes from there.
 */
async function fetchInto(hub: Hub, commit: string, file: RepoFile, partial: string, have: number, report: (n: number) => void) {
  const url = `${hub.endpoint}/${hub.repoId}/resolve/${commit}/${file.name.split('/').map(encodeURIComponent).join('/')}`;
  let response = await request(hub, url, file.name, have > 0 ? { range: `bytes=${have}-` } : {});
  if (response.status === 416) {
    await response.body?.cancel();
    response = await request(hub, url, file.name);
  }
  if (response.status !== 206) have = 0;
  const out = await fs.promises.open(partial, have > 0 ? 'a' : 'w');
  let callbackError: unknown;
  const tell = (n: number) => {
    try {
      report(n);
    } catch (error) {
      callbackError = error;
      throw error;
    }
  };
  try {
    tell(have);
    if (response.body) {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        await out.write(chunk);
        have += chunk.byteLength;
        tell(have);
      }
    }
    await out.sync();
  } catch (error) {
    // The caller's own progress callback failing is its error, not a network one.
    if (error instanceof ColtrastError || error === callbackError) throw error;
    throw new ColtrastError(
      'NETWORK',
      `the connection to ${hub.endpoint} broke while downloading ${file.name} of ${hub.repoId} (${networkReason(error)}) ` +
        `after ${have} bytes; run again to resume`,
      { cause: error },
    );
  } finally {
    await out.close();
  }
  return have;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** snapshots/<commit>/<file> -> ../../blobs/<etag>, as huggingface_hub lays it out; a copy where links fail. */
function linkIntoSnapshot(blob: string, pointer: string): void {
  fs.mkdirSync(path.dirname(pointer), { recursive: true });
  fs.rmSync(pointer, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(pointer), blob), pointer);
  } catch {
    fs.copyFileSync(blob, pointer);
  }
}

function writeAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
