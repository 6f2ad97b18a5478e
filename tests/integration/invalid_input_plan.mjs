// For test_invalid_input.c: what every operation of api/openapi.yaml takes, with $refs
// resolved, as one JSON array on stdout:
//   [{method, path, params: [{name, in, required, schema}], body: {media, schema} | null}]
// The C test turns each schema into values of the right shape that break it.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

const spec = parse(readFileSync(process.argv[2], 'utf8'));
const methods = ['get', 'put', 'post', 'delete', 'patch'];

function deref(node, depth = 0) {
  if (depth > 20 || node === null || typeof node !== 'object') return node;
  if (Array.isArray(node)) return node.map((n) => deref(n, depth + 1));
  if (typeof node.$ref === 'string' && node.$ref.startsWith('#/')) {
    const target = node.$ref.slice(2).split('/').reduce((o, k) => o?.[k], spec);
    return deref(target, depth + 1);
  }
  const out = {};
  for (const [k, v] of Object.entries(node)) out[k] = deref(v, depth + 1);
  return out;
}

const plan = [];
for (const [path, rawItem] of Object.entries(spec.paths ?? {})) {
  const item = deref(rawItem);
  for (const m of methods) {
    const op = item[m];
    if (!op) continue;
    const params = [...(item.parameters ?? []), ...(op.parameters ?? [])].map((p) => ({
      name: p.name, in: p.in, required: !!p.required, schema: p.schema ?? {},
    }));
    let body = null;
    const content = op.requestBody?.content ?? {};
    const media = Object.keys(content)[0];
    if (media) body = { media, schema: content[media].schema ?? {} };
    plan.push({ method: m.toUpperCase(), path, params, body });
  }
}
process.stdout.write(JSON.stringify(plan));
