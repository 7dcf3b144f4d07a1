// Validates AsyncAPI documents with the official parser, @asyncapi/parser (pinned in
// package-lock.json): the AsyncAPI JSON Schema of the document's version, the parser's
// Spectral rulesets (references, channel parameters, operations, servers, tags ...) and
// every payload schema. tests/integration/test_asyncapi.py runs it on docs/asyncapi.yaml.
//
//   node tools/asyncapi/validate.mjs FILE...
//
// Prints one JSON object per file on stdout: the parser's version, the counts of
// diagnostics by severity, each diagnostic (code, message, path), and what the parsed
// document holds. Exits 0 when no file has an error, 1 when one does, 2 on bad usage.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Parser, fromFile } from '@asyncapi/parser';

const SEVERITIES = ['error', 'warning', 'information', 'hint'];
const parserVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@asyncapi/parser/package.json', import.meta.url), 'utf8'),
).version;

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs FILE...');
  process.exit(2);
}

const parser = new Parser();
let failed = false;
for (const file of files) {
  const path = resolve(file);
  const { document, diagnostics } = await fromFile(parser, path).parse();
  const counts = Object.fromEntries(SEVERITIES.map((name) => [name, 0]));
  for (const diagnostic of diagnostics) counts[SEVERITIES[diagnostic.severity]] += 1;
  const report = {
    file: path,
    parser: parserVersion,
    valid: document !== undefined && counts.error === 0,
    ...counts,
    diagnostics: diagnostics.map((d) => ({
      severity: SEVERITIES[d.severity],
      code: d.code,
      message: d.message,
      path: d.path.join('/'),
    })),
  };
  if (document !== undefined) {
    report.asyncapi = document.version();
    report.channels = document.channels().all().map((c) => c.address());
    report.operations = document.operations().all().map((o) => o.id());
    report.messages = document.components().messages().all().map((m) => m.id());
  }
  console.log(JSON.stringify(report));
  failed ||= !report.valid;
}
process.exit(failed ? 1 : 0);
