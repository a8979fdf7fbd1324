/** Waiting in tests for something another process or a server's queue does, with a deadline that says what was awaited. */

/**
 * Resolves once `condition` holds, checked every `every` ms; rejects after `ms` with "timed out waiting for <what>",
 * followed by `detail()` when given (what a child printed so far, say). A condition that throws rejects at once.
 */
export async function until(
  what: string,
  condition: () => boolean | Promise<boolean>,
  { ms = 20_000, every = 5, detail }: { ms?: number; every?: number; detail?: () => string } = {},
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${detail ? `; ${detail()}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}
