// Validates docs/asyncapi.yaml with the AsyncAPI parser, then checks examples against it.
//
//   node validate.mjs [path/to/asyncapi.yaml] [path/to/websocket.md]
//
// 1. The parser (structure against the AsyncAPI 3 schema, references, the recommended ruleset):
//    every diagnostic is printed; errors and warnings fail the run, information and hints are
//    printed only.
// 2. Every message example in the document must validate against its message's payload schema.
// 3. Every ```json example frame in docs/websocket.md must validate against the message of its
//    `type` and direction: frames under "## Sending typing frames" against the `send`
//    operations' messages, every other frame against the `receive` operations' messages.
//
// Exits 0 when everything passes, 1 otherwise (2 when a file cannot be read).

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { DiagnosticSeverity, Parser } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const specPath = path.resolve(process.argv[2] ?? path.join(repo, 'docs', 'asyncapi.yaml'));
const guidePath = path.resolve(process.argv[3] ?? path.join(repo, 'docs', 'websocket.md'));

// The section of docs/websocket.md whose example frames are sent by clients.
const CLIENT_FRAMES_HEADING = '## Sending typing frames';

const SEVERITY_NAMES = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

const relative = (file) => path.relative(repo, file) || file;

function read(file) {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    process.exit(2);
  }
}

let failures = 0;
function fail(message) {
  failures += 1;
  console.log(`  FAIL ${message}`);
}

// --- 1. The parser -------------------------------------------------------------------------

const specText = read(specPath);
const parser = new Parser();
const { document, diagnostics } = await parser.parse(specText, { source: specPath });

const counts = { error: 0, warning: 0, info: 0, hint: 0 };
console.log(`${relative(specPath)}: ${diagnostics.length} parser diagnostic(s)`);
for (const diagnostic of diagnostics) {
  const severity = SEVERITY_NAMES[diagnostic.severity] ?? `severity ${diagnostic.severity}`;
  const start = diagnostic.range?.start;
  const where = start ? `${start.line + 1}:${start.character + 1}` : '-';
  const at = diagnostic.path?.length ? ` at ${diagnostic.path.join('.')}` : '';
  if (severity in counts) {
    counts[severity] += 1;
  } else {
    // An unknown severity is treated as an error.
    counts.error += 1;
  }
  console.log(`  ${severity.padEnd(8)} ${where.padEnd(8)} ${diagnostic.code}: ${diagnostic.message}${at}`);
}
console.log(
  `  parser: ${counts.error} error(s), ${counts.warning} warning(s), ` +
    `${counts.info} info, ${counts.hint} hint(s)`,
);
failures += counts.error + counts.warning;

if (!document) {
  console.log('FAILED: the parser produced no document');
  process.exit(1);
}

// --- 2. Message examples against their payload schemas -------------------------------------

// The payload schemas are the default AsyncAPI schema format (JSON Schema draft 07 plus
// annotations); the parser adds `x-parser-*` keys, hence `strict: false`.
const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);

const describe = (errors) =>
  ajv.errorsText(errors, { separator: '; ', dataVar: 'frame' });

/** `{ type, id, validate }` of each message of the operations with `action`, by event type. */
function messagesOf(action) {
  const byType = new Map();
  for (const operation of document.operations().all()) {
    if (operation.action() !== action) continue;
    for (const message of operation.messages().all()) {
      const payload = message.payload()?.json();
      const eventType = payload?.properties?.type?.const;
      if (typeof eventType !== 'string') {
        fail(`${action} message ${message.id()}: its payload has no string \`type\` const`);
        continue;
      }
      const known = byType.get(eventType);
      if (known && known.id !== message.id()) {
        fail(`${action} messages ${known.id} and ${message.id()} both have type ${eventType}`);
        continue;
      }
      byType.set(eventType, { type: eventType, id: message.id(), message, validate: ajv.compile(payload) });
    }
  }
  return byType;
}

const received = messagesOf('receive');
const sent = messagesOf('send');

let examples = 0;
for (const [action, byType] of [['receive', received], ['send', sent]]) {
  for (const { type, id, message, validate } of byType.values()) {
    const messageExamples = message.examples().all();
    for (const [index, example] of messageExamples.entries()) {
      examples += 1;
      const name = example.name() ?? `#${index}`;
      if (!validate(example.payload())) {
        fail(`${action} message ${id} (${type}) example ${name}: ${describe(validate.errors)}`);
      }
    }
  }
}
console.log(
  `${relative(specPath)}: ${received.size} receive and ${sent.size} send message type(s), ` +
    `${examples} message example(s) checked`,
);

// --- 3. docs/websocket.md example frames against the messages -------------------------------

const guide = read(guidePath);
let fence = null;
let level2 = '';
let frames = 0;
for (const [index, line] of guide.split('\n').entries()) {
  const lineNumber = index + 1;
  if (line.startsWith('```')) {
    fence = fence === null ? line.slice(3).trim() : null;
    continue;
  }
  if (fence === null) {
    if (line.startsWith('## ')) level2 = line.trim();
    continue;
  }
  if (fence !== 'json' || line.trim() === '') continue;
  frames += 1;
  const where = `${relative(guidePath)}:${lineNumber}`;
  let frame;
  try {
    frame = JSON.parse(line);
  } catch (error) {
    fail(`${where}: not JSON (${error.message})`);
    continue;
  }
  const [action, byType] = level2 === CLIENT_FRAMES_HEADING ? ['send', sent] : ['receive', received];
  const entry = byType.get(frame?.type);
  if (!entry) {
    fail(`${where}: no ${action} message has type ${JSON.stringify(frame?.type)}`);
    continue;
  }
  if (!entry.validate(frame)) {
    fail(`${where}: does not match ${action} message ${entry.id}: ${describe(entry.validate.errors)}`);
  }
}
console.log(`${relative(guidePath)}: ${frames} example frame(s) checked`);

if (failures > 0) {
  console.log(`FAILED: ${failures} problem(s)`);
  process.exit(1);
}
console.log('OK');
