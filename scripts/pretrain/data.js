#!/usr/bin/env node
// Builds the default model's training and test data from public text on a Debian machine:
//   debian: a package's short description (query) ↔ its long description (positive), from apt's own index
//           (`apt-get -o Acquire::Languages=en update` brings the English long descriptions into it);
//   man:    a manual page's NAME line, the part after the dash (query) ↔ its DESCRIPTION section (positive),
//           for the English pages under /usr/share/man (install Debian's `manpages` and `manpages-dev`).
// Each source is split by package (Debian: by source package, so binary packages of one source that share a
// description never straddle the split; man pages: by the package that owns the file), never by pair.
// One pair per group and no repeated text, so in-batch negatives are real negatives.
//   node scripts/pretrain/data.js <out-dir> [--test-fraction 0.05] [--man-test-fraction 0.2] [--max-words 160]
// Writes <out-dir>/{debian,man}/train.jsonl ({query, positive, group}), <out-dir>/{debian,man}/test/ (a BEIR
// folder: corpus.jsonl, queries.jsonl, qrels/test.tsv) and <out-dir>/manifest.json (counts, inputs, sha256).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const crypto = require('node:crypto');
const { execFileSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const LISTS = '/var/lib/apt/lists';
const MAN = '/usr/share/man';

/** A list file's text; apt keeps them compressed (lz4 here), and its own helper reads every format. */
function readAptList(file) {
  return execFileSync('/usr/lib/apt/apt-helper', ['cat-file', file], { maxBuffer: 1 << 30, encoding: 'utf8' });
}

/** Deb822 stanzas of a list file, each a Map of field → value (continuation lines joined with \n). */
function* stanzas(text) {
  for (const block of text.split(/\n\s*\n/)) {
    const fields = new Map();
    let last;
    for (const line of block.split('\n')) {
      if (/^\s/.test(line) && last) fields.set(last, `${fields.get(last)}\n${line}`);
      else {
        const colon = line.indexOf(':');
        if (colon <= 0) continue;
        last = line.slice(0, colon);
        fields.set(last, line.slice(colon + 1).trim());
      }
    }
    if (fields.size > 0) yield fields;
  }
}

const words = (s) => s.split(/\s+/).filter(Boolean);
const clip = (s, max) => words(s).slice(0, max).join(' ');
// Deterministic split by group: the same group is always on the same side, on every machine.
const isTest = (group, fraction) => crypto.createHash('sha256').update(group).digest().readUInt32BE(0) / 2 ** 32 < fraction;

function debianPairs(maxWords) {
  const files = fs.readdirSync(LISTS);
  const translations = files.filter((f) => /_i18n_Translation-en(\.|$)/.test(f));
  if (translations.length === 0) {
    throw new Error(`no English long descriptions in ${LISTS}: run \`apt-get -o Acquire::Languages=en update\` first`);
  }
  const source = new Map();
  for (const f of files.filter((f) => /_binary-[a-z0-9]+_Packages(\.|$)/.test(f))) {
    for (const s of stanzas(readAptList(path.join(LISTS, f)))) {
      source.set(s.get('Package'), (s.get('Source') || s.get('Package')).replace(/\s*\(.*$/, ''));
    }
  }
  const byGroup = new Map();
  for (const f of translations.sort()) {
    for (const s of stanzas(readAptList(path.join(LISTS, f)))) {
      const description = s.get('Description-en');
      if (!description) continue;
      const [short, ...long] = description.split('\n');
      // Long description: one space of indent; a lone "." is a paragraph break.
      const text = long.map((l) => l.trim()).map((l) => (l === '.' ? '' : l)).join(' ').replace(/\s+/g, ' ').trim();
      if (words(short).length < 2 || words(text).length < 8) continue;
      const pkg = s.get('Package');
      const group = source.get(pkg) || pkg;
      const pair = { query: short.trim(), positive: clip(text, maxWords), group: `deb:${group}` };
      // One pair per source package: the one with the longest description (ties: the first in the list).
      const old = byGroup.get(pair.group);
      if (!old || words(text).length > old.length) byGroup.set(pair.group, { pair, length: words(text).length });
    }
  }
  return { pairs: [...byGroup.values()].map((v) => v.pair), inputs: translations, packages: new Set(source.keys()) };
}

/** Plain text of roff source (man and mdoc macros), good enough for training text: fonts, escapes, macros dropped. */
function roffText(lines) {
  const out = [];
  for (let line of lines) {
    if (/^\.\\"|^'\\"|^\.\s*$/.test(line)) continue;
    if (/^[.']/.test(line)) {
      const m = /^[.']\s*([A-Za-z]{1,3})\s*(.*)$/.exec(line);
      if (!m) continue;
      const [, macro, args] = m;
      // Font macros and mdoc's inline macros keep their arguments; layout requests and the rest vanish.
      if (/^(B|I|BI|BR|IB|IR|RB|RI|SM|SB|Nm|Nd|Fl|Ar|Pa|Xr|Cm|Ic|Va|Ev|Dv|Er|Li|Em|Sy|Dq|Sq|Ql|Op|It|Fn|Fa|Ft|Ql|Tn|Pq|Aq|Bq)$/.test(macro)) {
        line = args.replace(/"/g, '').replace(/\b(Ns|Fl|Ar|Pa|Xr|Cm|Op|Ic|Ql|Dq|Sq|Pq|Nm|Em|Sy|Li|Va|Ev)\b/g, ' ');
      } else continue;
    }
    out.push(line);
  }
  return out
    .join(' ')
    .replace(/\\f(\(..|\[[^\]]*\]|.)/g, '')
    .replace(/\\\*(\(..|\[[^\]]*\]|.)/g, '')
    .replace(/\\\((em|en|hy|mi)/g, '-')
    .replace(/\\\((lq|rq|oq|cq|dq)/g, '"')
    .replace(/\\\(../g, ' ')
    .replace(/\\\[[^\]]*\]/g, ' ')
    .replace(/\\[-]/g, '-')
    .replace(/\\e/g, '\\')
    .replace(/\\[&|^%:/,]/g, '')
    .replace(/\\s[-+]?\d/g, '')
    .replace(/\\./g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The sections of a man page's roff source, by upper-cased title. */
function manSections(source) {
  const sections = new Map();
  let current;
  for (const line of source.split('\n')) {
    const m = /^\.\s*(SH|Sh)\s+"?([^"]*)"?\s*$/.exec(line);
    if (m) {
      current = m[2].trim().toUpperCase();
      if (!sections.has(current)) sections.set(current, []);
    } else if (current) sections.get(current).push(line);
  }
  return sections;
}

function manOwners() {
  const owner = new Map();
  const info = '/var/lib/dpkg/info';
  for (const f of fs.readdirSync(info).filter((f) => f.endsWith('.list'))) {
    const pkg = f.slice(0, -5).replace(/:.*$/, '');
    for (const file of fs.readFileSync(path.join(info, f), 'utf8').split('\n')) if (file.startsWith(`${MAN}/man`)) owner.set(file, pkg);
  }
  return owner;
}

function manPairs(maxWords, debianPackages) {
  const owner = manOwners();
  const byGroup = new Map();
  const seen = new Set();
  let pages = 0;
  for (const dir of fs.readdirSync(MAN).filter((d) => /^man[1-8]$/.test(d)).sort()) {
    for (const name of fs.readdirSync(path.join(MAN, dir)).sort()) {
      const file = path.join(MAN, dir, name);
      if (fs.lstatSync(file).isSymbolicLink()) continue;
      let source;
      try {
        const raw = fs.readFileSync(file);
        source = (name.endsWith('.gz') ? zlib.gunzipSync(raw) : raw).toString('utf8');
      } catch {
        continue;
      }
      if (/^\.so\s/m.test(source.slice(0, 200))) continue; // a link to another page
      pages++;
      const sections = manSections(source);
      const nameText = roffText(sections.get('NAME') || []);
      const dash = nameText.search(/\s[-–—]+\s/);
      if (dash < 0) continue;
      const query = nameText.slice(dash).replace(/^\s[-–—]+\s/, '').trim();
      const description = roffText(sections.get('DESCRIPTION') || []);
      if (words(query).length < 2 || words(description).length < 8) continue;
      const positive = clip(description, maxWords);
      if (seen.has(query) || seen.has(positive)) continue;
      // Only pages that Debian itself ships (not those of packages from other apt sources).
      const pkg = owner.get(file);
      if (!pkg || !debianPackages.has(pkg)) continue;
      seen.add(query);
      seen.add(positive);
      const group = `man:${pkg}`;
      byGroup.set(group, [...(byGroup.get(group) || []), { query, positive, group }]);
    }
  }
  return { pairs: [...byGroup.values()].flat(), inputs: [`${pages} pages under ${MAN}/man[1-8]`] };
}

function writeJsonl(file, rows) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

function writeSplit(dir, name, pairs, fraction) {
  const train = pairs.filter((p) => !isTest(p.group, fraction));
  const test = pairs.filter((p) => isTest(p.group, fraction));
  writeJsonl(path.join(dir, name, 'train.jsonl'), train);
  const beir = path.join(dir, name, 'test');
  writeJsonl(path.join(beir, 'corpus.jsonl'), test.map((p, i) => ({ _id: `d${i}`, title: '', text: p.positive, group: p.group })));
  writeJsonl(path.join(beir, 'queries.jsonl'), test.map((p, i) => ({ _id: `q${i}`, text: p.query })));
  fs.mkdirSync(path.join(beir, 'qrels'), { recursive: true });
  fs.writeFileSync(path.join(beir, 'qrels', 'test.tsv'), ['query-id\tcorpus-id\tscore', ...test.map((_, i) => `q${i}\td${i}\t1`)].join('\n') + '\n');
  const sha = crypto.createHash('sha256').update(JSON.stringify(pairs)).digest('hex');
  return { train: train.length, test: test.length, groups: new Set(pairs.map((p) => p.group)).size, sha256: sha };
}

function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'test-fraction': { type: 'string', default: '0.05' },
      // Man pages come from few packages (manpages-dev alone has most), so a larger share is held out.
      'man-test-fraction': { type: 'string', default: '0.2' },
      'max-words': { type: 'string', default: '160' } },
  });
  if (positionals.length !== 1) {
    console.error('usage: data.js <out-dir> [--test-fraction 0.05] [--man-test-fraction 0.2] [--max-words 160]');
    process.exit(2);
  }
  const out = path.resolve(positionals[0]);
  const fraction = Number(values['test-fraction']);
  const maxWords = Number(values['max-words']);
  const manFraction = Number(values['man-test-fraction']);
  const manifest = { created: new Date().toISOString(), testFraction: { debian: fraction, man: manFraction }, maxWords, sources: {} };
  const debian = debianPairs(maxWords);
  const man = manPairs(maxWords, debian.packages);
  for (const [name, { pairs, inputs }, f] of [['debian', debian, fraction], ['man', man, manFraction]]) {
    manifest.sources[name] = { inputs, ...writeSplit(out, name, pairs, f) };
    console.log(`${name}: ${JSON.stringify(manifest.sources[name])}`);
  }
  fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}

module.exports = { roffText, manSections, stanzas, isTest };

if (require.main === module) main();
