// The demo web service: a real Better Auth (email and password, the jwt plugin, users in a
// SQLite file) and one static page whose script calls the task API on another origin.
// What a Next.js app does with Better Auth, in one small file a team can read in one go.
//
// Settings (environment variables):
//   BETTER_AUTH_SECRET  required, at least 32 characters: Better Auth's own secret (cookies,
//                       the encryption of its private keys); `make demo` takes it from .env
//   PORT                the port to listen on (3000)
//   HOST                the interface (localhost: both 127.0.0.1 and ::1)
//   BETTER_AUTH_URL     this service's public URL (http://localhost:PORT); the API must be
//                       given the same one, as the issuer and audience of the tokens
//   API_URL             the task API, as the browser reaches it (http://127.0.0.1:8000)
//   WEB_DATABASE        Better Auth's SQLite file (auth.sqlite beside this file)
//   JWT_EXPIRATION      the lifetime of the tokens the page sends to the API (15m)
//   TRUSTED_ORIGINS     other origins allowed to sign in here, comma-separated
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";
import Database from "better-sqlite3";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(1);
}

const secret = env.BETTER_AUTH_SECRET ?? "";
if (secret.length < 32) fail("BETTER_AUTH_SECRET must be set, at least 32 characters (make demo takes it from .env)");
const port = Number(env.PORT ?? 3000);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`PORT must be a port number, not ${env.PORT}`);
const host = env.HOST ?? "localhost";
const baseURL = (env.BETTER_AUTH_URL ?? `http://localhost:${port}`).replace(/\/+$/, "");
let apiURL;
try {
  apiURL = new URL(env.API_URL ?? "http://127.0.0.1:8000");
} catch {
  fail(`API_URL must be a URL such as http://127.0.0.1:8000, not ${env.API_URL}`);
}
const trustedOrigins = (env.TRUSTED_ORIGINS ?? "").split(",").map((origin) => origin.trim()).filter(Boolean);

const options = {
  baseURL,
  secret,
  database: new Database(env.WEB_DATABASE ?? join(here, "auth.sqlite")),
  emailAndPassword: { enabled: true },
  trustedOrigins,
  // The page asks for a token with authClient.token(); the API checks it against the
  // public keys at BETTER_AUTH_URL/api/auth/jwks (issuer and audience: this origin).
  plugins: [jwt({ jwt: { expirationTime: env.JWT_EXPIRATION ?? "15m" } })],
  telemetry: { enabled: false },
  logger: { level: "warn" },
};
// Better Auth's own tables (user, session, account, verification, jwks), created or
// brought up to date before the first request.
await (await getMigrations(options)).runMigrations();
const auth = betterAuth(options);
const authHandler = toNodeHandler(auth);

// The page's script, bundled once at start: TypeScript and Better Auth's client in one file.
const bundle = await build({
  entryPoints: [join(here, "src", "app.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: "inline",
  write: false,
  logLevel: "warning",
});
const escapeAttribute = (text) => text.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
const page = (await readFile(join(here, "public", "index.html"), "utf8")).replace(
  "%API_URL%",
  escapeAttribute(apiURL.href.replace(/\/+$/, "")),
);
const assets = {
  "/": { type: "text/html; charset=utf-8", body: page },
  "/app.js": { type: "text/javascript; charset=utf-8", body: bundle.outputFiles[0].text },
  "/app.css": { type: "text/css; charset=utf-8", body: await readFile(join(here, "public", "app.css"), "utf8") },
};
const securityHeaders = {
  // Scripts and styles from here only; the page may call this origin (Better Auth) and the API.
  "Content-Security-Policy": `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ${apiURL.origin}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

const server = createServer((request, response) => {
  const path = new URL(request.url ?? "/", "http://localhost").pathname;
  if (path.startsWith("/api/auth/")) return authHandler(request, response);
  const asset = assets[path];
  if (!asset || !["GET", "HEAD"].includes(request.method ?? "")) {
    response.writeHead(404, { "Content-Type": "text/plain; charset=utf-8", ...securityHeaders });
    return response.end("Not found\n");
  }
  response.writeHead(200, { "Content-Type": asset.type, "Cache-Control": "no-cache", ...securityHeaders });
  response.end(request.method === "HEAD" ? undefined : asset.body);
});

// "localhost" is 127.0.0.1 for some clients and ::1 for others (Node, Python, browsers
// differ): listen on both, so that the API's fetch of the keys and the browser both arrive.
const addresses = host === "localhost" ? ["127.0.0.1", "::1"] : [host];
const servers = [];
for (const [index, address] of addresses.entries()) {
  const listener = index === 0 ? server : createServer(server.listeners("request")[0]);
  try {
    await new Promise((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(port, address, resolve);
    });
    servers.push(listener);
  } catch (error) {
    if (index > 0 && error.code === "EADDRNOTAVAIL") continue; // no IPv6 here
    if (error.code === "EADDRINUSE") fail(`port ${port} on ${address} is already in use; stop what uses it, or choose another port (make demo WEB_PORT=3001, or PORT=3001 node server.mjs)`);
    fail(`cannot listen on ${address}:${port}: ${error.message}`);
  }
}
console.log(`Web app ready: open ${baseURL} (the task API at ${apiURL.origin})`);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    for (const listener of servers) listener.close();
    for (const listener of servers) listener.closeAllConnections();
    process.exit(0);
  });
}
