/**
 * The k best of the positions 0..n-1 under `better` (a strict order on positions), best first. A heap keeps the k
 * best seen, its root the worst of them: O(n log k) rather than a sort's O(n log n), which over a corpus per query
 * costs more than the scoring itself (a GPU's MaxSim, BM25's sums).
 */
export function topK(n: number, k: number, better: (a: number, b: number) => boolean): number[] {
  const size = Math.min(k, n);
  const heap: number[] = []; // heap[0]: the worst position kept
  const siftDown = (at: number) => {
    for (;;) {
      const left = 2 * at + 1;
      const right = left + 1;
      let worst = at;
      if (left < heap.length && better(heap[worst], heap[left])) worst = left;
      if (right < heap.length && better(heap[worst], heap[right])) worst = right;
      if (worst === at) return;
      [heap[at], heap[worst]] = [heap[worst], heap[at]];
      at = worst;
    }
  };
  for (let i = 0; i < n && size > 0; i++) {
    if (heap.length < size) {
      heap.push(i);
      for (let at = heap.length - 1; at > 0; ) {
        const parent = (at - 1) >> 1;
        if (!better(heap[parent], heap[at])) break;
        [heap[at], heap[parent]] = [heap[parent], heap[at]];
        at = parent;
      }
    } else if (better(i, heap[0])) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
}
