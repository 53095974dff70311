// sigstore-js's own Rekor client against provd's dev log, for tests/stock_clients_dev_log.rs.
//
// Usage: node stock_rekor_js.mjs LOG_URL TRUSTED_ROOT WORK_DIR
//
// Makes a throwaway CA and a leaf certificate (ECDSA P-256) with the openssl CLI in
// WORK_DIR, signs an artifact and an in-toto statement with the leaf key (node:crypto), and
// logs them with @sigstore/sign's RekorWitness, the witness sigstore-js's signing flow uses,
// passing the certificate as sigstore-js does:
//   - Rekor v1: `intoto` 0.0.2 (entryType 'intoto'), `dsse` 0.0.1 and `hashedrekord` 0.0.1;
//     the intoto entry is sent twice, the second time answered 409 and fetched
//     (fetchOnConflict), as sigstore-js recovers from a conflict;
//   - Rekor v2: `hashedrekord` 0.0.2 with the certificate as DER; and sigstore-js's v2 DSSE
//     request (`dsseRequestV002`), which Rekor v2 refuses: the refusal is reported.
// Each entry is put in a bundle built with @sigstore/bundle (certificate, signature or
// envelope, the entry) and verified by @sigstore/verify's Verifier against TRUSTED_ROOT
// with the CA added: the certificate chain, the entry's inclusion (SET or checkpoint), the
// entry's body against the signature and certificate, the signature itself. SCTs are not
// required (no CT log here). A v1 entry's SET gives the verified time; a v2 entry has none,
// and sigstore-js checks a certificate chain only at verified times, so for v2 the
// Verifier's log and signature steps run without the chain step. Prints one JSON line and exits 0; on any failure prints the step
// and the error on stderr and exits 1.

import { createHash, createPrivateKey, createPublicKey, randomUUID, sign } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { toDSSEBundle, toMessageSignatureBundle } from '@sigstore/bundle';
import { HashAlgorithm, TransparencyLogEntry, TrustedRoot } from '@sigstore/protobuf-specs';
import { RekorWitness } from '@sigstore/sign';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const [url, rootPath, dir] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node stock_rekor_js.mjs LOG_URL TRUSTED_ROOT WORK_DIR');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const version = `@sigstore/sign ${require('@sigstore/sign/package.json').version}, @sigstore/verify ${require('@sigstore/verify/package.json').version}`;

function openssl(...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

// A CA and a leaf it issued, with a code-signing key usage like Fulcio's certificates.
function certificatePair() {
  openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
  openssl('req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=provd test CA', '-days', '1',
    '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0',
    '-addext', 'keyUsage=critical,keyCertSign', '-out', 'ca.pem');
  openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'leaf.key');
  openssl('req', '-new', '-key', 'leaf.key', '-subj', '/O=provd test', '-out', 'leaf.csr');
  writeFileSync(join(dir, 'leaf.ext'),
    'subjectAltName=critical,email:signer@provd.test\n' +
    'keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n');
  openssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-CAcreateserial', '-days', '1', '-extfile', 'leaf.ext', '-out', 'leaf.pem');
  const pem = (name) => readFileSync(join(dir, name), 'utf8');
  const der = (text) => Buffer.from(text.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return {
    caDer: der(pem('ca.pem')),
    leafPem: pem('leaf.pem'),
    leafDer: der(pem('leaf.pem')),
    key: createPrivateKey(pem('leaf.key')),
  };
}

function pae(type, payload) {
  return Buffer.concat([
    Buffer.from(`DSSEv1 ${Buffer.byteLength(type)} ${type} ${payload.length} `),
    payload,
  ]);
}

let step = 'setup';
try {
  const { caDer, leafPem, leafDer, key } = certificatePair();
  // The trusted root the test gives (the dev log's keys) with this CA added.
  const rootJSON = JSON.parse(readFileSync(rootPath, 'utf8'));
  rootJSON.certificateAuthorities = [{
    subject: { organization: 'provd test', commonName: 'provd test CA' },
    uri: 'https://ca.provd.test',
    certChain: { certificates: [{ rawBytes: caDer.toString('base64') }] },
    validFor: { start: '2020-01-01T00:00:00Z' },
  }];
  const root = TrustedRoot.fromJSON(rootJSON);
  const verify = (bundle, artifact, api) => {
    const verifier = new Verifier(toTrustMaterial(root), {
      ctlogThreshold: 0,
      tlogThreshold: 1,
      timestampThreshold: api === 'v1' ? 1 : 0,
    });
    const entity = toSignedEntity(bundle, artifact);
    if (api === 'v1') {
      verifier.verify(entity);
      return 'Verifier.verify';
    }
    // sigstore-js checks a certificate's chain at each verified time; a Rekor v2 entry has
    // none (no SET, no TSA here), so the Verifier's other steps run on their own.
    verifier.verifyTLogs(entity);
    verifier.verifySignature(entity, { key: createPublicKey(leafPem) });
    return 'Verifier.verifyTLogs + verifySignature (no verified time for the chain)';
  };

  const artifact = Buffer.from(`an artifact signed for provd's dev log ${randomUUID()}`);
  const digest = createHash('sha256').update(artifact).digest();
  const artifactSig = sign('sha256', artifact, key);
  const payloadType = 'application/vnd.in-toto+json';
  const payload = Buffer.from(JSON.stringify({
    _type: 'https://in-toto.io/Statement/v1',
    subject: [{ name: 'artifact', digest: { sha256: digest.toString('hex') } }],
    predicateType: 'https://provd.test/attestation/v1',
    predicate: { nonce: randomUUID() },
  }));
  const envelopeSig = sign('sha256', pae(payloadType, payload), key);
  const dsse = {
    $case: 'dsseEnvelope',
    dsseEnvelope: { payloadType, payload, signatures: [{ keyid: '', sig: envelopeSig }] },
  };
  const message = {
    $case: 'messageSignature',
    messageSignature: {
      messageDigest: { algorithm: HashAlgorithm.SHA2_256, digest },
      signature: artifactSig,
    },
  };
  const dsseBundle = () => toDSSEBundle({
    artifact: payload, artifactType: payloadType, signature: envelopeSig, certificate: leafDer,
  });
  const messageBundle = () => toMessageSignatureBundle({
    digest, signature: artifactSig, certificate: leafDer,
  });

  const out = { client: version, entries: [], certificate_pem: leafPem };
  const witness = (options) => new RekorWitness({ rekorBaseURL: url, retry: 0, timeout: 20000, ...options });
  const logged = async (name, api, options, content, bundle, artifactArg) => {
    step = `${name}: RekorWitness.testify`;
    const { tlogEntries } = await witness(options).testify(content, leafPem);
    const tle = tlogEntries[0];
    step = `${name}: @sigstore/verify on a bundle with the entry`;
    bundle.verificationMaterial.tlogEntries = [tle];
    const checks = verify(bundle, artifactArg, api);
    out.entries.push({ name, api, checks, tle: TransparencyLogEntry.toJSON(tle) });
  };

  await logged('v1 intoto', 'v1', { entryType: 'intoto' }, dsse, dsseBundle());
  await logged('v1 intoto again (409, fetched)', 'v1',
    { entryType: 'intoto', fetchOnConflict: true }, dsse, dsseBundle());
  await logged('v1 dsse', 'v1', { entryType: 'dsse' }, dsse, dsseBundle());
  await logged('v1 hashedrekord', 'v1', {}, message, messageBundle(), artifact);
  await logged('v2 hashedrekord', 'v2', { majorApiVersion: 2 }, message, messageBundle(), artifact);

  step = 'v2 dsse: RekorWitness.testify (dsseRequestV002)';
  try {
    await witness({ majorApiVersion: 2 }).testify(dsse, leafPem);
    out.v2_dsse = 'accepted';
  } catch (e) {
    out.v2_dsse = `refused: ${e && e.message ? e.message : e}`;
  }
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(`${version} failed at ${step}: ${e && e.message ? e.message : e}`);
  process.exit(1);
}
