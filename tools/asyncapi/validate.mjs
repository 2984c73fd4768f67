#!/usr/bin/env node
// Validates an AsyncAPI document (JSON or YAML) with the official AsyncAPI parser.
//
//   node validate.mjs <document> [--same-as <other document>]
//
// Prints every diagnostic of the parser (errors, warnings, infos, hints) and exits 1 if
// any is an error, 0 otherwise: warnings are printed but allowed. Then, since the parser
// does not check AsyncAPI 3 message examples itself, it validates each message example's
// payload and headers against the message's schemas (Ajv, JSON Schema draft-07, which
// the AsyncAPI Schema Object extends); a failing example is an error too.
//
// --same-as: also checks that both files hold the same data (e.g. the YAML and JSON
// renderings of one document).
//
// Setup: (cd tools/asyncapi && npm ci --no-audit --no-fund)

import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

function usage(message) {
  if (message) console.error(`error: ${message}`);
  console.error('usage: node validate.mjs <asyncapi.json|asyncapi.yaml> [--same-as <other>]');
  process.exit(2);
}

const args = process.argv.slice(2);
let file;
let sameAs;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--same-as') {
    sameAs = args[++i] ?? usage('--same-as needs a file');
  } else if (args[i] === '-h' || args[i] === '--help') {
    usage();
  } else if (file === undefined) {
    file = args[i];
  } else {
    usage(`unexpected argument ${args[i]}`);
  }
}
if (file === undefined) usage('no document given');

const path = resolve(file);
let text;
try {
  text = await readFile(path, 'utf8');
} catch (err) {
  console.error(`error: cannot read ${path}: ${err.message}`);
  process.exit(2);
}

const parser = new Parser();
const { document, diagnostics } = await parser.parse(text, { source: path });

let errors = 0;
const counts = {};
for (const d of diagnostics) {
  const severity = SEVERITY[d.severity] ?? `severity ${d.severity}`;
  counts[severity] = (counts[severity] ?? 0) + 1;
  if (d.severity === DiagnosticSeverity.Error) errors++;
  const where = d.path && d.path.length ? ` at ${d.path.join('.')}` : '';
  const line = d.range ? ` (line ${d.range.start.line + 1})` : '';
  console.log(`${severity} ${d.code}${where}${line}: ${d.message}`);
}

if (document === undefined) {
  console.log(`${path}: not a valid AsyncAPI document (${errors} errors)`);
  process.exit(1);
}

// Message examples against their schemas.
const raw = YAML.parse(text);
const base = 'urn:ovasabi:asyncapi-document';
const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
addFormats(ajv);
// Only `components` (which the examples' schemas refer into): the document's root has
// keys Ajv would read as keywords (`id`).
ajv.addSchema({ components: raw.components ?? {} }, base);
const escape = (token) => token.replace(/~/g, '~0').replace(/\//g, '~1');
let examples = 0;
for (const [id, message] of Object.entries(raw.components?.messages ?? {})) {
  for (const [i, example] of (message.examples ?? []).entries()) {
    for (const part of ['payload', 'headers']) {
      if (example[part] === undefined || message[part] === undefined) continue;
      examples++;
      const validate = ajv.compile({
        $ref: `${base}#/components/messages/${escape(id)}/${part}`,
      });
      if (!validate(example[part])) {
        errors++;
        counts.error = (counts.error ?? 0) + 1;
        for (const e of validate.errors) {
          console.log(
            `error ovasabi-message-example at components.messages.${id}.examples.${i}.${part}` +
              `${e.instancePath.replace(/\//g, '.')}: ${e.message}`,
          );
        }
      }
    }
  }
}

if (sameAs !== undefined) {
  const other = YAML.parse(await readFile(resolve(sameAs), 'utf8'));
  if (!isDeepStrictEqual(raw, other)) {
    errors++;
    counts.error = (counts.error ?? 0) + 1;
    console.log(`error ovasabi-same-as: ${file} and ${sameAs} do not hold the same data`);
  }
}

const summary = Object.entries(counts)
  .map(([severity, n]) => `${n} ${severity}`)
  .join(', ');
console.log(
  `${path}: AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.messages().length} messages, ` +
    `${examples} example parts checked; ${summary || 'no diagnostics'}`,
);
process.exit(errors > 0 ? 1 : 0);
