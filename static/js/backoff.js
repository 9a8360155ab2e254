// How long to wait before the next retry: the one back-off of the client.
//
// Every retry loop (the live stream's long-poll, the app's initial load)
// asks here, so that the schedule is written down once; each passes the
// bounds that suit it.

/**
 * Exponential back-off: `firstMs` after the first failure, doubling per
 * failure up to `maxMs`. With `jitter` the wait is spread over ±25 %, so
 * that many clients cut off at once do not come back in step.
 *
 * @param failures how many attempts failed in a row (1 after the first).
 */
export function backoff(failures, { firstMs = 1000, maxMs = 10_000, jitter = true } = {}) {
  const base = Math.min(firstMs * 2 ** Math.max(0, failures - 1), maxMs);
  return jitter ? Math.round(base * (0.75 + Math.random() * 0.5)) : base;
}

/** Resolves after `ms`. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
