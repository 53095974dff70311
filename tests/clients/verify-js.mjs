// sigstore-js's verdict on one Sigstore bundle signed with a managed key, for
// tests/sigstore_clients.rs.
//
// Usage: node verify-js.mjs BUNDLE TRUSTED_ROOT KEY_PEM TIMESTAMP_THRESHOLD
//
// @sigstore/verify's Verifier does the whole verification: the key named by the bundle's
// hint (looked up among the keys given here, so a bundle naming another key is refused),
// every log entry's inclusion (SET, or inclusion proof against a checkpoint signed by a log
// of the trusted root), the entry's body against the envelope, at least
// TIMESTAMP_THRESHOLD verified times (its default is 1; a Rekor v1 SET gives one, a Rekor v2
// entry none), and the DSSE signature over the PAE. Prints one JSON line and exits 0 when
// the bundle verifies; prints the reason on stderr and exits 1 when it does not.

import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { bundleFromJSON } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const [bundlePath, rootPath, keyPath, threshold] = process.argv.slice(2);
if (!threshold) {
  console.error('usage: node verify-js.mjs BUNDLE TRUSTED_ROOT KEY_PEM TIMESTAMP_THRESHOLD');
  process.exit(2);
}

const version = createRequire(import.meta.url)('@sigstore/verify/package.json').version;

try {
  const bundle = bundleFromJSON(JSON.parse(readFileSync(bundlePath, 'utf8')));
  const root = TrustedRoot.fromJSON(JSON.parse(readFileSync(rootPath, 'utf8')));
  // The key selector: the one given key, under its hint (base64 SHA-256 of its DER).
  const der = createPublicKey(readFileSync(keyPath)).export({ type: 'spki', format: 'der' });
  const hint = createHash('sha256').update(der).digest('base64');
  const verifier = new Verifier(toTrustMaterial(root, { [hint]: { rawBytes: der } }), {
    timestampThreshold: Number(threshold),
  });
  verifier.verify(toSignedEntity(bundle));
  const entry = bundle.verificationMaterial.tlogEntries[0];
  console.log(
    JSON.stringify({
      client: `@sigstore/verify ${version}`,
      verified: true,
      entry: `${entry.kindVersion.kind} ${entry.kindVersion.version}`,
      set: entry.inclusionPromise !== undefined,
      timestamp_threshold: Number(threshold),
    })
  );
} catch (e) {
  console.error(`@sigstore/verify ${version} refused the bundle: ${e && e.message ? e.message : e}`);
  process.exit(1);
}
