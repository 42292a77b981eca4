#!/usr/bin/env bash
# `make demo`: the API on the embedded SQLite database (demo.db) and the web app, each
# configured for the other, until Ctrl-C (or either of them stopping) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f .env ]; then
  set -a
  . ./.env # BETTER_AUTH_SECRET: Better Auth's own secret here, and accepted by the API for HS256
  set +a
fi
api_port=${API_PORT:-8000}
web_port=${WEB_PORT:-3000}
web_url=http://localhost:$web_port

# The API accepts the web app's tokens (issuer, audience and keys at BETTER_AUTH_URL) and
# lets its page call it (CORS_ORIGINS); the page is told where the API is (API_URL).
DATABASE_URL=${DEMO_DATABASE_URL:-sqlite:///./demo.db} BETTER_AUTH_URL=$web_url CORS_ORIGINS=$web_url \
  ${TODO_API:-.venv/bin/todo-api} serve --host 127.0.0.1 --port "$api_port" --migrate &
api=$!
API_URL=http://127.0.0.1:$api_port HOST=localhost PORT=$web_port BETTER_AUTH_URL=$web_url node web/server.mjs &
web=$!
trap 'kill $api $web 2>/dev/null || true; wait' EXIT
# Ctrl-C reaches the whole process group: the API is already shutting down gracefully, and
# a second signal now would make uvicorn skip its shutdown; wait for it first. A TERM to
# this script alone stops both through the EXIT trap.
trap 'wait $api 2>/dev/null || true; exit 0' INT
trap 'exit 0' TERM

# Say where to go once both answer, after their start-up lines.
for _ in $(seq 100); do
  if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$api_port/ready'); u.urlopen('http://127.0.0.1:$web_port/app.js')" 2>/dev/null; then
    echo
    echo "==> Open $web_url and create an account. Ctrl-C stops both."
    if [ -z "${CHAT_MODEL:-}" ]; then
      echo "    (The chat panel needs a model: CHAT_MODEL=gpt-4o-mini OPENAI_API_KEY=sk-... make demo,"
      echo "    or a local one: CHAT_MODEL=llama3.2 OPENAI_BASE_URL=http://127.0.0.1:11434/v1 make demo)"
    fi
    echo
    break
  fi
  kill -0 $api $web 2>/dev/null || break
  sleep 0.2
done
wait -n
