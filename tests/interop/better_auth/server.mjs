// A real Better Auth server for the interop tests: memory adapter (no database to set up),
// email-and-password sign-up, and the jwt plugin whose tokens the API must accept.
//
// Configured by environment variables:
//   BETTER_AUTH_SECRET  Better Auth's own secret (cookies, private-key encryption), >= 32 chars
//   PORT                port on 127.0.0.1; 0 picks a free one
//   JWT_ALG             keyPairConfig algorithm: EdDSA (default), ES256, ES512, RS256, PS256
//   JWT_EXPIRATION      the tokens' lifetime, e.g. "15m" (default) or "2s"
//   JWKS_ROTATION       key rotation interval in seconds (default: no rotation)
//   JWKS_GRACE          grace period in seconds for rotated keys (default: Better Auth's, 30 days)
// Prints one JSON line {"ready": true, "url": ...} on stdout once it listens.
import { createServer } from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";

const env = process.env;
const server = createServer();

server.listen(Number(env.PORT ?? 0), "127.0.0.1", () => {
  const url = `http://127.0.0.1:${server.address().port}`;
  const alg = env.JWT_ALG ?? "EdDSA";
  const auth = betterAuth({
    baseURL: url,
    secret: env.BETTER_AUTH_SECRET,
    database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
    emailAndPassword: { enabled: true },
    plugins: [
      jwt({
        jwks: {
          keyPairConfig: alg === "EdDSA" ? { alg, crv: "Ed25519" } : alg.startsWith("RS") || alg.startsWith("PS") ? { alg, modulusLength: 2048 } : { alg },
          ...(env.JWKS_ROTATION ? { rotationInterval: Number(env.JWKS_ROTATION) } : {}),
          ...(env.JWKS_GRACE ? { gracePeriod: Number(env.JWKS_GRACE) } : {}),
        },
        jwt: { expirationTime: env.JWT_EXPIRATION ?? "15m" },
      }),
    ],
    logger: { level: "error" },
  });
  server.on("request", toNodeHandler(auth));
  console.log(JSON.stringify({ ready: true, url }));
});

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
