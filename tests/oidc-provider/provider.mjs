// A real OpenID provider (panva/oidc-provider, OpenID Certified) for wardgate's end-to-end
// test: the client-credentials grant, RFC 9068 JWT access tokens through resource indicators.
//
// Usage: node provider.mjs PORT KEYDIR KID[,KID…]
//   PORT     0 for any free port, or the port to serve again after a key rotation
//   KEYDIR   where RSA keys live by kid (made on first use, so a restart can keep old keys)
//   KID,…    the published keys, the first one signing
// Prints one JSON line `{"issuer": "...", "port": N}` once it serves.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import Provider from 'oidc-provider';

const [portArg, keyDir, kids] = process.argv.slice(2);

function key(kid) {
  const file = path.join(keyDir, `${kid}.json`);
  if (!fs.existsSync(file)) {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
    fs.writeFileSync(file, JSON.stringify(jwk));
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const server = http.createServer();
server.listen(Number(portArg), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        // Client-credentials tokens carry the client as `sub`.
        client_id: 'dr-ada',
        client_secret: 'dr-ada-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    jwks: { keys: kids.split(',').map(key) },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://records.clinic.example',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'patients:read patients:write',
          audience: 'records-api',
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: () => ({ roles: ['doctor'] }),
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});
