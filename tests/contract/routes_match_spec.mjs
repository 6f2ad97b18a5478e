// The route table (qdb-control routes) and api/openapi.yaml must describe the same
// routes with the same required role, in both directions.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

const [binary, specPath] = process.argv.slice(2);
const routes = JSON.parse(execFileSync(binary, ['routes'], { encoding: 'utf8' }));
const spec = parse(readFileSync(specPath, 'utf8'));
const methods = ['get', 'put', 'post', 'delete', 'patch'];

const inSpec = new Map();
for (const [path, item] of Object.entries(spec.paths ?? {})) {
  for (const m of methods) {
    if (item[m]) inSpec.set(`${m.toUpperCase()} ${path}`, item[m]);
  }
}
const inTable = new Map(routes.map((r) => [`${r.method} ${r.path}`, r]));

let failed = 0, passed = 0;
const fail = (msg) => { failed++; console.error(`FAIL ${msg}`); };
for (const [key, r] of inTable) {
  const op = inSpec.get(key);
  if (!op) { fail(`${key} is in the route table but not in ${specPath}`); continue; }
  passed++;
  if (op['x-required-role'] !== r.role) fail(`${key}: x-required-role is ${op['x-required-role']}, the route table says ${r.role}`);
  else passed++;
  const isPublic = Array.isArray(op.security) && op.security.length === 0;
  if ((r.role === 'public') !== isPublic) fail(`${key}: security must be [] exactly when the role is public`);
  else passed++;
  if (r.json_body && !op.requestBody?.content?.['application/json']) fail(`${key} takes a JSON body but the spec has no application/json requestBody`);
  else passed++;
}
for (const key of inSpec.keys()) {
  if (!inTable.has(key)) fail(`${key} is in ${specPath} but not in the route table`);
  else passed++;
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
