#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: it installs (once, and
# idempotently) what the browser tests need, then runs every suite.
#   - cargo tests: unit tests and tests/api (real server on a real socket)
#   - browser end-to-end tests (tests/e2e, headless Chromium), when present
# Set POSTGRES_URL to also run the PostgreSQL and cluster suites.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --bins
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"
