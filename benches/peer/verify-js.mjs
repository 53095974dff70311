// The sigstore-js side of benches/sigstore_verify.rs: verifies the same bundles, artifacts,
// identities and trusted roots with @sigstore/verify in one Node.js process, for a fixed
// duration, and prints one JSON line {"bundles": N, "seconds": S}.
//
// Usage: node verify-js.mjs CASES.json, where CASES.json is written by the Rust bench:
// {"warmup_seconds": 1, "seconds": 5, "cases": [{"name", "bundle", "artifact", "root",
// "identity", "issuer"} or {..., "key"}]}. Every bundle must verify once before timing;
// otherwise the script exits 1 naming the case, so a broken peer is never timed.

import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { bundleFromJSON } from '@sigstore/bundle';
import { PublicKeyDetails, TrustedRoot } from '@sigstore/protobuf-specs';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// The managed keys by their hint (base64 SHA-256 of the DER key), as the bundle names them.
// The key locator reads only the raw bytes and validity, so the key type is left unspecified.
function managedKeys(cases) {
  const keys = {};
  for (const c of cases) {
    if (!c.key) continue;
    const der = createPublicKey(readFileSync(c.key)).export({ type: 'spki', format: 'der' });
    const hint = createHash('sha256').update(der).digest('base64');
    keys[hint] = { rawBytes: der, keyDetails: PublicKeyDetails.PUBLIC_KEY_DETAILS_UNSPECIFIED };
  }
  return keys;
}

// One verifier per trusted-root file, prepared outside the timed loop, as provd's bench does.
const keys = managedKeys(plan.cases);
const verifiers = new Map();
for (const c of plan.cases) {
  if (!verifiers.has(c.root)) {
    const root = TrustedRoot.fromJSON(JSON.parse(readFileSync(c.root, 'utf8')));
    verifiers.set(c.root, new Verifier(toTrustMaterial(root, keys)));
  }
}

// @sigstore/verify 4 tests a string SAN as an unanchored pattern (so "x" would match any SAN
// containing an x); an anchored, escaped pattern makes it the exact match provd checks.
function exactly(identity) {
  return new RegExp(`^${identity.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
}

const work = plan.cases.map((c) => ({
  name: c.name,
  bundle: readFileSync(c.bundle),
  artifact: readFileSync(c.artifact),
  verifier: verifiers.get(c.root),
  policy: c.key ? undefined : { subjectAlternativeName: exactly(c.identity), extensions: { issuer: c.issuer } },
}));

// @sigstore/verify does not bind a DSSE envelope to the artifact, while provd does (the
// artifact's digest must be a subject of the in-toto statement), so the same check is made
// here to compare the same work.
function checkSubject(bundle, artifact) {
  if (bundle.content.$case !== 'dsseEnvelope') return;
  const statement = JSON.parse(Buffer.from(bundle.content.dsseEnvelope.payload).toString('utf8'));
  const digest = createHash('sha256').update(artifact).digest('hex');
  if (!(statement.subject || []).some((s) => s.digest && s.digest.sha256 === digest)) {
    throw new Error('the artifact is not a subject of the in-toto statement');
  }
}

// One complete verification from the bundle's bytes, as provd's `verify` takes them.
function verifyOne(w) {
  const bundle = bundleFromJSON(JSON.parse(w.bundle.toString('utf8')));
  w.verifier.verify(toSignedEntity(bundle, w.artifact), w.policy);
  checkSubject(bundle, w.artifact);
}

for (const w of work) {
  try {
    verifyOne(w);
  } catch (e) {
    console.error(`sigstore-js did not verify ${w.name}: ${e && e.message ? e.message : e}`);
    process.exit(1);
  }
}

// Round-robin over the bundles until the duration is over; returns how many verified.
function run(seconds) {
  const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  let n = 0;
  while (process.hrtime.bigint() < end) {
    verifyOne(work[n % work.length]);
    n += 1;
  }
  return n;
}

run(plan.warmup_seconds);
const start = process.hrtime.bigint();
const bundles = run(plan.seconds);
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(JSON.stringify({ bundles, seconds }));
