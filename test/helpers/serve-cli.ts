/** `coltrast serve` as a child process for tests: started, awaited until it listens, stopped by a signal. */
import { spawn } from 'node:child_process';
import path from 'node:path';

const CLI = path.resolve(__dirname, '..', '..', 'dist', 'cli.js');

export interface ServeChild {
  /** The address it listens on, from its "listening on <url>" line. */
  url: string;
  /** Its "listening on ..." line (what it says of its models and index). */
  listening: string;
  /** What it wrote so far. */
  stdout(): string;
  stderr(): string;
  /** Its exit code (null when ended by a signal it did not catch). */
  exited: Promise<number | null>;
  /** Sends `signal` (SIGTERM: the server finishes the requests in progress and ends) and resolves to its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `coltrast serve <args>` and resolves once it says it listens; rejects with its stderr when it ends before, or
 * after `ms` (a minute) without listening, killing it then.
 */
export function startServe(args: string[], { env, ms = 60_000 }: { env?: NodeJS.ProcessEnv; ms?: number } = {}): Promise<ServeChild> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise<ServeChild>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`coltrast serve did not listen within ${ms} ms; its stderr:\n${stderr}`));
    }, ms);
    child.stdout.on('data', () => {
      const line = /listening on (http:\/\/\S+).*/.exec(stdout);
      if (!line) return;
      clearTimeout(timer);
      resolve({
        url: line[1],
        listening: line[0],
        stdout: () => stdout,
        stderr: () => stderr,
        exited,
        stop: (signal = 'SIGTERM') => {
          child.kill(signal);
          return exited;
        },
      });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`coltrast serve ended (${code}) before it listened; its stderr:\n${stderr}`));
    });
  });
}

/**
 * Runs `coltrast serve <args>` to its end: its exit code and stderr. A server that listens gets `whileUp(url)` (then
 * SIGTERM; a rejection of whileUp rejects this), or SIGTERM at once without it: for refusals, which end it before.
 */
export function runServe(args: string[], whileUp?: (url: string) => Promise<void>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let out = '';
    let up = false;
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (!m || up) return;
      up = true;
      (whileUp ? whileUp(m[1]) : Promise.resolve()).then(
        () => child.kill('SIGTERM'),
        (e) => (child.kill('SIGTERM'), reject(e)),
      );
    });
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}
