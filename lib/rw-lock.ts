/**
 * A readers-writer lock for async work on one JS thread: any number of readers at once, a writer alone, in
 * arrival order (a writer waits for the readers before it; readers after a waiting writer wait for it, so
 * writers are never starved). Index uses it so that searches (readers) never see a half-applied add or
 * remove (writers). Written here: it is a queue and two counters, and the npm locks we looked at either lack a
 * shared mode (async-mutex) or are unmaintained.
 */
export class ReadWriteLock {
  private readers = 0;
  private writing = false;
  private readonly waiting: { write: boolean; start: () => void }[] = [];

  /** Runs `work` alongside other readers, once no writer holds or waits for the lock ahead of it. */
  read<T>(work: () => Promise<T>): Promise<T> {
    return this.run(false, work);
  }

  /** Runs `work` alone, once the readers and writers ahead of it are done. */
  write<T>(work: () => Promise<T>): Promise<T> {
    return this.run(true, work);
  }

  private async run<T>(write: boolean, work: () => Promise<T>): Promise<T> {
    await new Promise<void>((start) => {
      this.waiting.push({ write, start });
      this.pump();
    });
    try {
      return await work();
    } finally {
      if (write) this.writing = false;
      else this.readers--;
      this.pump();
    }
  }

  /** Starts whoever may start now, in arrival order. */
  private pump(): void {
    while (this.waiting.length > 0 && !this.writing) {
      const next = this.waiting[0];
      if (next.write) {
        if (this.readers > 0) return;
        this.writing = true;
      } else {
        this.readers++;
      }
      this.waiting.shift();
      next.start();
    }
  }
}
