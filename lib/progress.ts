/**
 * Progress for long work: a one-line bar with rate and ETA on a terminal, plain periodic lines when
 * output is not a TTY (logs, CI).
 */
export class ProgressBar {
  /** When the first update came (set then). */
  private start = 0;
  /** Work already done at the first update (a resumed run): not counted in the rate. */
  private base: number | undefined;
  private lastPlain = 0;

  constructor(
    private readonly label: string,
    private readonly unit: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  update(done: number, total: number): void {
    if (this.base === undefined) {
      // The first update marks where this process started; its rate is measured from there.
      this.base = done;
      this.start = Date.now();
    }
    const seconds = (Date.now() - this.start) / 1000;
    const rate = seconds > 0 ? (done - this.base) / seconds : 0;
    const eta = done >= total ? 0 : rate > 0 ? (total - done) / rate : Infinity; // '?' until there is a rate
    const fraction = total > 0 ? done / total : 1;
    const stats = `${amount(done)}/${amount(total)} ${this.unit} | ${rate.toFixed(1)} ${this.unit}/s | ETA ${formatSeconds(eta)}`;
    if (this.stream.isTTY) {
      const width = 24;
      const filled = Math.round(fraction * width);
      this.stream.write(`\r${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${stats}\x1b[K`);
      if (done >= total) this.stream.write('\n');
    } else if (done >= total || Date.now() - this.lastPlain > 5000) {
      this.lastPlain = Date.now();
      this.stream.write(`${this.label} ${(fraction * 100).toFixed(0)}% ${stats}\n`);
    }
  }
}

function amount(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${Math.round(s % 60)}s` : `${s.toFixed(1)}s`;
}
