/**
 * The k best of the positions 0..n-1 under `better` (a strict order on positions), best first. A heap keeps the k
 * best seen, its root the worst of them: O(n log k) rather than a sort's O(n log n), which over a corpus per query
 * costs more than the scoring itself (a GPU's MaxSim, BM25's sums).
 */
export function topK(n: number, k: number, better: (a: number, b: number) => boolean): number[] {
  const heap = new TopKHeap(k, better);
  for (let i = 0; i < n; i++) heap.offer(i);
  return heap.best();
}

/**
 * topK's heap, offered positions one at a time: a caller may stop between them (to let the event loop run over a
 * million positions) and go on later. best() gives the k best offered, best first.
 */
export class TopKHeap {
  private readonly heap: number[] = []; // heap[0]: the worst position kept

  constructor(
    private readonly k: number,
    private readonly better: (a: number, b: number) => boolean,
  ) {}

  offer(i: number): void {
    const { heap, better } = this;
    if (heap.length < this.k) {
      heap.push(i);
      for (let at = heap.length - 1; at > 0; ) {
        const parent = (at - 1) >> 1;
        if (!better(heap[parent], heap[at])) break;
        [heap[at], heap[parent]] = [heap[parent], heap[at]];
        at = parent;
      }
    } else if (this.k > 0 && better(i, heap[0])) {
      heap[0] = i;
      this.siftDown(0);
    }
  }

  best(): number[] {
    const { better } = this;
    return this.heap.slice().sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
  }

  private siftDown(from: number): void {
    const { heap, better } = this;
    for (let at = from; ; ) {
      const left = 2 * at + 1;
      const right = left + 1;
      let worst = at;
      if (left < heap.length && better(heap[worst], heap[left])) worst = left;
      if (right < heap.length && better(heap[worst], heap[right])) worst = right;
      if (worst === at) return;
      [heap[at], heap[worst]] = [heap[worst], heap[at]];
      at = worst;
    }
  }
}
