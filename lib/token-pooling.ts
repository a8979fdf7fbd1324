/**
 * Hierarchical token pooling (Clavié et al., "Reducing the Footprint of Multi-Vector Retrieval with Minimal
 * Performance Impact via Token Pooling", 2024): a document's token vectors are clustered and each cluster replaced
 * by its mean, keeping about 1 / poolFactor of them. Defined as sentence-transformers 6's HierarchicalTokenPooling
 * (and PyLate after its condensed-Ward fix): the first `protectedTokens` vectors are kept as they are; the others
 * are clustered by Ward's linkage over the cosine distances clip(1 - cos, 0, 2), the dendrogram cut into
 * max(⌊n / poolFactor⌋, 1) clusters as scipy's fcluster(criterion="maxclust") cuts it, and each cluster's mean
 * (not renormalized) follows the protected vectors. `test/python-interop.test.ts` checks it against
 * sentence-transformers itself.
 *
 * Written here, not taken from a package: the linkage is scipy's (a Python C extension) and no npm package has
 * Ward's linkage with its Lance–Williams update; it is the nearest-neighbour-chain algorithm (Müllner, "Modern
 * hierarchical, agglomerative clustering algorithms", 2011), O(n²) for a document of n tokens.
 */
import type { Matrix } from './encoder';

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
 * merge at or below the lowest height that leaves at most `clusters` clusters. Returns each point's cluster, the
 * clusters numbered in the order of their first point.
 */
function cutClusters(merges: [number, number, number][], n: number, clusters: number): Int32Array {
  const parent = Int32Array.from({ length: n }, (_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]];
    return i;
  };
  // A merge of slots x and y joins the points whose clusters sit in them: each slot's first point stands for it.
  const member = Int32Array.from({ length: n }, (_, i) => i);
  const joins = merges.map(([x, y, height]) => {
    const join: [number, number, number] = [member[x], member[y], height];
    member[y] = member[x];
    return join;
  });
  const heights = joins.map((j) => j[2]).sort((a, b) => a - b);
  const threshold = clusters >= n ? -Infinity : heights[n - clusters - 1];
  for (const [a, b, height] of joins) if (height <= threshold) parent[find(a)] = find(b);
  const label = new Int32Array(n);
  const numbers = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const root = find(i);
    if (!numbers.has(root)) numbers.set(root, numbers.size);
    label[i] = numbers.get(root)!;
  }
  return label;
}

/**
 * One document's token vectors [n, dim] pooled to about n / poolFactor (see the file comment); n ≤ 1 vector, or
 * a pool factor that would keep them all, returns them as they are.
 */
export function poolTokens(tokens: Matrix, poolFactor: number, protectedTokens = 1): Matrix {
  const [count, dim] = tokens.dims;
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
