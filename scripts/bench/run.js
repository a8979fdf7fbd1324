#!/usr/bin/env node
// Runs the benchmark suites that fit this machine, one child process each (so one suite's memory and
// threads do not colour the next), and writes what they measured:
//   <out>/<suite>-<device>.json   each suite's own JSON (machine, versions, rows)
//   <out>/results.json            all of them, with the exact commands
//   <out>/results.md              one Markdown table per suite, headed by machine, date and command
//   <out>/<suite>-<device>.svg    a bar chart of each suite's headline number per row
// Suites: ops (fused losses against eager libtorch), embed (texts/s), train (samples/s), index (search
// latency and QPS); each on the CPU, and on CUDA too where a GPU and a CUDA build are present.
// `npm run bench` and `coltrast bench` run this. --quick: small sizes, a few minutes on two cores.
//   node scripts/bench/run.js [--out bench-results] [--suites ops,embed,train,index] [--quick]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: 'bench-results' },
    suites: { type: 'string', default: 'ops,embed,train,index' },
    quick: { type: 'boolean', default: false },
  },
});

const root = path.resolve(__dirname, '..', '..');
const { runtimeInfo } = require(path.join(root, 'dist'));

// Each suite: its script, arguments per device (full and --quick), and the number its chart shows.
const SUITES = {
  ops: {
    script: 'ops.js',
    args: (device, quick) => ['--device', device, '--runs', quick ? '5' : '20', ...(device === 'cuda' ? ['--dtype', 'bfloat16'] : [])],
    label: (r) => `${r.op} B=${r.B} N=${r.N}`,
    value: (r) => r.speedup,
    unit: 'speed-up of the fused op over eager libtorch (×)',
  },
  embed: {
    script: 'embed.js',
    args: (device, quick) => ['--device', device, '--shapes', quick ? 'tiny,minilm' : 'tiny,minilm,base', '--texts', quick ? '400' : '2000'],
    label: (r) => r.model,
    value: (r) => r.textsPerSecond,
    unit: 'texts/s',
  },
  train: {
    script: 'train.js',
    args: (device, quick) => ['--device', device, '--shapes', quick ? 'tiny,minilm' : 'tiny,minilm,base', '--steps', quick ? '3' : '6', '--batch-size', '16'],
    label: (r) => `${r.model} batch ${r.batchSize}`,
    value: (r) => r.samplesPerSecond,
    unit: 'samples/s',
  },
  index: {
    script: 'index.js',
    args: (device, quick) => (device === 'cpu' ? ['--rows', quick ? '100000' : '1000000', '--dim', '384', '--storage', 'float16'] : null),
    label: (r) => `${r.rows} rows, batch ${r.batch}`,
    value: (r) => r.queriesPerSecond,
    unit: 'queries/s',
  },
};

/** A horizontal bar chart: one bar per row, the value printed at its end. Hand-written (see lib/report.ts). */
function barChart(title, unit, bars) {
  const rowHeight = 26;
  const labelWidth = 230;
  const width = 640;
  const plot = width - labelWidth - 70;
  const height = 50 + rowHeight * bars.length + 20;
  const max = Math.max(...bars.map((b) => b.value), 1e-9);
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="10" y="38" fill="#555">${esc(unit)}</text>`,
  ];
  bars.forEach((b, i) => {
    const y = 50 + i * rowHeight;
    const w = Math.max(1, (b.value / max) * plot);
    parts.push(`<text x="${labelWidth - 6}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>`);
    parts.push(`<rect x="${labelWidth}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowHeight - 8}" fill="#3b6ea5"/>`);
    parts.push(`<text x="${(labelWidth + w + 4).toFixed(1)}" y="${y + 15}">${esc(b.value)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function markdownTable(rows) {
  if (rows.length === 0) return '(no rows)';
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return [`| ${keys.join(' | ')} |`, `|${keys.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${keys.map((k) => r[k] ?? '').join(' | ')} |`)].join('\n');
}

function main() {
  const out = path.resolve(values.out);
  fs.mkdirSync(out, { recursive: true });
  const info = runtimeInfo();
  const devices = ['cpu', ...(info.cudaAvailable ? ['cuda'] : [])];
  const results = [];
  const failures = [];
  for (const name of values.suites.split(',')) {
    const suite = SUITES[name];
    if (!suite) {
      console.error(`bench: unknown suite '${name}' (${Object.keys(SUITES).join(', ')})`);
      process.exit(2);
    }
    for (const device of devices) {
      const args = suite.args(device, values.quick);
      if (!args) continue;
      const json = path.join(out, `${name}-${device}.json`);
      const command = ['node', `scripts/bench/${suite.script}`, ...args, '--json', json];
      console.log(`bench: ${command.join(' ')}`);
      const started = Date.now();
      const r = spawnSync(process.execPath, [path.join(__dirname, suite.script), ...args, '--json', json], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
      if (r.status !== 0 || !fs.existsSync(json)) {
        failures.push(`${name} on ${device} (exit ${r.status ?? r.signal})`);
        continue;
      }
      const result = JSON.parse(fs.readFileSync(json, 'utf8'));
      results.push({ suite: name, device, command: command.join(' '), seconds: (Date.now() - started) / 1000, result });
      const bars = result.rows.filter((row) => typeof suite.value(row) === 'number').map((row) => ({ label: suite.label(row), value: suite.value(row) }));
      fs.writeFileSync(path.join(out, `${name}-${device}.svg`), barChart(`${name} on ${device}`, suite.unit, bars));
    }
  }
  fs.writeFileSync(path.join(out, 'results.json'), `${JSON.stringify({ date: new Date().toISOString(), quick: values.quick, results, failures }, null, 2)}\n`);
  const md = results.map(({ suite, device, command, result }) =>
    [
      `## ${suite} on ${device}`,
      '',
      `${result.date}; ${result.cpu}, ${result.threads} threads, libtorch ${result.torch}, BLAS ${result.blas}. Command: \`${command}\``,
      '',
      markdownTable(result.rows),
      '',
      `![${suite} on ${device}](${suite}-${device}.svg)`,
      '',
    ].join('\n'),
  );
  fs.writeFileSync(path.join(out, 'results.md'), `# coltrast benchmarks\n\n${md.join('\n')}${failures.length ? `\nFailed: ${failures.join('; ')}\n` : ''}`);
  console.log(`bench: wrote ${path.relative(process.cwd(), out) || out}/results.{json,md} and ${results.length} charts`);
  if (failures.length) {
    console.error(`bench: failed: ${failures.join('; ')}`);
    process.exit(1);
  }
}

main();
