/**
 * Hierarchical token pooling (Clavié et al., "Reducing the Footprint of Multi-Vector Retrieval with Minimal
 * Performance Impact via Token Pooling", 2024): a document's token vectors are clustered and each cluster replaced
 * by its mean, keeping about 1 / poolFactor of them. Defined as sentence-transformers 6's HierarchicalTokenPooling
 * (and PyLate after its condensed-Ward fix): the first `protectedTokens` vectors are kept as they are; the others
 * are clustered by Ward's linkage over the cosine distances clip(1 - cos, 0, 2), the dendrogram cut into
 * max(⌊n / poolFactor⌋, 1) clusters as scipy's fcluster(criterion="maxclust") cuts it, and each cluster's mean
 * (not renormalized) follows the protected vectors, in sentence-transformers' order (fcluster's numbering).
 * `test/python-interop.test.ts` checks it against sentence-transformers itself.
 *
 * Written here, not taken from a package: the linkage is scipy's (a Python C extension) and no npm package has
 * Ward's linkage with its Lance–Williams update; it is the nearest-neighbour-chain algorithm (Müllner, "Modern
 * hierarchical, agglomerative clustering algorithms", 2011), O(n²) for a document of n tokens.
 */
import type { Matrix } from './encoder';
import { ColtrastError } from './errors';
import { Turns } from './turns';
import { floatMatrix, numberValue, positiveInteger } from './validate';

/** The merges of Ward's linkage of `n` points with distances `d` (n × n, symmetric; overwritten): [a, b, height]. */
function wardMerges(d: Float64Array, n: number): [number, number, number][] {
  const size = new Float64Array(n).fill(1); // 0 once a cluster has been merged into another
  const chain: number[] = [];
  const merges: [number, number, number][] = [];
  while (merges.length < n - 1) {
    if (chain.length === 0) chain.push(size.findIndex((s) => s > 0));
    let x = 0;
    let y = 0;
    let nearest = Infinity;
    // Follow nearest neighbours until two are each other's; the previous link wins ties, so the chain never cycles.
    for (;;) {
      x = chain[chain.length - 1];
      nearest = Infinity;
      if (chain.length > 1) {
        y = chain[chain.length - 2];
        nearest = d[x * n + y];
      }
      for (let i = 0; i < n; i++) {
        if (size[i] === 0 || i === x) continue;
        if (d[x * n + i] < nearest) {
          nearest = d[x * n + i];
          y = i;
        }
      }
      if (chain.length > 1 && y === chain[chain.length - 2]) break;
      chain.push(y);
    }
    chain.length -= 2;
    if (x > y) [x, y] = [y, x];
    merges.push([x, y, nearest]);
    // The merged cluster takes y's place; Lance–Williams' update for Ward's method.
    const nx = size[x];
    const ny = size[y];
    size[x] = 0;
    size[y] = nx + ny;
    for (let i = 0; i < n; i++) {
      const ni = size[i];
      if (ni === 0 || i === y) continue;
      const t = 1 / (nx + ny + ni);
      const dxi = d[i * n + x];
      const dyi = d[i * n + y];
      const v = Math.sqrt((ni + nx) * t * dxi * dxi + (ni + ny) * t * dyi * dyi - ni * t * nearest * nearest);
      d[i * n + y] = v;
      d[y * n + i] = v;
    }
  }
  return merges;
}

/**
 * The clusters of `n` points cut from their merges as fcluster(criterion="maxclust", t=clusters) cuts them: every
 * merge at or below the lowest height that leaves at most `clusters` clusters. Numbered from 0 as fcluster numbers
 * them: the merges sorted by height (stably) make scipy's tree (a merge's cluster numbered n + its rank, its
 * children in increasing number), walked from the root as fcluster walks it.
 */
function cutClusters(merges: [number, number, number][], n: number, clusters: number): Int32Array {
  const order = merges.map((_, i) => i).sort((a, b) => merges[a][2] - merges[b][2] || a - b);
  // Which cluster each point is in as the sorted merges are applied (union-find; the new cluster its root).
  const parent = Int32Array.from({ length: 2 * n - 1 }, (_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]];
    return i;
  };
  const children = new Int32Array(2 * (n - 1));
  const height = new Float64Array(n - 1);
  order.forEach((m, rank) => {
    const [x, y, h] = merges[m];
    const a = find(x);
    const b = find(y);
    children[2 * rank] = Math.min(a, b);
    children[2 * rank + 1] = Math.max(a, b);
    height[rank] = h;
    parent[a] = parent[b] = n + rank;
  });
  const threshold = clusters >= n ? -Infinity : height[n - clusters - 1];
  // fcluster's walk: a merge's merged children first (first child first), then its single points. A merge at or below
  // the threshold met with no cluster open opens one (the next number), which all points below it take.
  const label = new Int32Array(n);
  const visited = new Uint8Array(2 * n - 1);
  const stack = [2 * n - 2];
  let open = -1;
  let count = 0;
  while (stack.length > 0) {
    const r = stack[stack.length - 1] - n;
    const [a, b] = [children[2 * r], children[2 * r + 1]];
    if (open === -1 && height[r] <= threshold) {
      open = r;
      count++;
    }
    if (a >= n && !visited[a]) {
      visited[a] = 1;
      stack.push(a);
      continue;
    }
    if (b >= n && !visited[b]) {
      visited[b] = 1;
      stack.push(b);
      continue;
    }
    for (const point of [a, b]) {
      if (point >= n) continue;
      if (open === -1) count++;
      label[point] = count - 1;
    }
    if (open === r) open = -1;
    stack.pop();
  }
  return label;
}

/**
 * One document's token vectors [n, dim] pooled to about n / poolFactor (see the file comment); n ≤ 1 vector, or
 * a pool factor that would keep them all, returns them as they are.
 */
export function poolTokens(tokens: Matrix, poolFactor: number, protectedTokens = 1): Matrix {
  floatMatrix('tokens', tokens, 'a float32 matrix { dims: [tokens, dim], data: Float32Array } (one document\'s token vectors)');
  positiveInteger('poolFactor', poolFactor);
  numberValue('protectedTokens', protectedTokens, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0');
  const [count, dim] = tokens.dims;
  // A NaN distance is never the nearest, so Ward's chain would merge wrong clusters and return fewer, NaN, vectors.
  const bad = tokens.data.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `tokens holds ${tokens.data[bad]} (token ${Math.floor(bad / dim)}, column ${bad % dim}): token pooling needs finite vectors; fix or drop that document's vectors`);
  }
  const keep = Math.min(protectedTokens, count);
  const n = count - keep;
  const clusters = Math.max(Math.floor(n / poolFactor), 1);
  if (clusters >= n) return tokens;
  const rows = tokens.data.subarray(keep * dim);
  const d = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let dot = 0;
      for (let c = 0; c < dim; c++) dot += rows[i * dim + c] * rows[j * dim + c];
      d[i * n + j] = d[j * n + i] = Math.min(2, Math.max(0, 1 - dot));
    }
  }
  const label = cutClusters(wardMerges(d, n), n, clusters);
  const found = Math.max(...label) + 1;
  const sums = new Float64Array(found * dim);
  const sizes = new Float64Array(found);
  for (let i = 0; i < n; i++) {
    sizes[label[i]]++;
    for (let c = 0; c < dim; c++) sums[label[i] * dim + c] += rows[i * dim + c];
  }
  const out = new Float32Array((keep + found) * dim);
  out.set(tokens.data.subarray(0, keep * dim));
  for (let g = 0; g < found; g++) for (let c = 0; c < dim; c++) out[(keep + g) * dim + c] = sums[g * dim + c] / sizes[g];
  return { dims: [keep + found, dim], data: out };
}

/**
 * Each matrix pooled by poolTokens, in turns (lib/turns.ts: the event loop runs every 10 ms; one 512-token document
 * takes tens of milliseconds).
 */
export async function poolAll(matrices: Matrix[], poolFactor: number, protectedTokens = 1): Promise<Matrix[]> {
  const out: Matrix[] = [];
  const turns = new Turns();
  for (const m of matrices) {
    await turns.maybe();
    out.push(poolTokens(m, poolFactor, protectedTokens));
  }
  return out;
}
