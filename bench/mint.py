#!/usr/bin/env python3
"""Makes the benchmark's keys and token with openssl only: an RSA-2048 key, its JWKS and
public PEM (for HAProxy), and an RS256 token (~590 bytes) for dr-ada, a doctor."""
import base64, json, subprocess, sys, time, pathlib

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
key, pub = out / "key.pem", out / "pub.pem"
if not key.exists():
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(key)], check=True, capture_output=True)
subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
text = subprocess.run(["openssl", "rsa", "-in", str(key), "-noout", "-modulus"],
                      check=True, capture_output=True, text=True).stdout
n = bytes.fromhex(text.strip().split("=", 1)[1])

def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

jwks = {"keys": [{"kty": "RSA", "kid": "bench-1", "alg": "RS256", "use": "sig",
                  "n": b64(n), "e": b64((65537).to_bytes(3, "big"))}]}
(out / "jwks.json").write_text(json.dumps(jwks))
now = int(time.time())
header = {"alg": "RS256", "typ": "JWT", "kid": "bench-1"}
claims = {"iss": "https://idp.bench.wardgate", "aud": "records-api", "sub": "dr-ada",
          "roles": ["doctor"], "amr": ["pwd", "otp"],
          "iat": now, "exp": now + 6 * 3600}
signing_input = f"{b64(json.dumps(header, separators=(',', ':')).encode())}." \
                f"{b64(json.dumps(claims, separators=(',', ':')).encode())}"
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(),
                     check=True, capture_output=True).stdout
(out / "token").write_text(f"{signing_input}.{b64(sig)}")
print(len(signing_input) + 1 + len(b64(sig)))
