import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * Two projects: `unit` (test/unit/: no processes, sockets or engines; answers
 * in seconds: `npm run test:unit`) and `integration` (everything else, against
 * real components). `npm test` runs both.
 */
export default defineConfig({
  test: {
    pool: 'forks',
    // Integration tests mostly wait on processes, engines and sockets: two files at once even on two cores
    // (vitest's default there would be one), which halves the suite's time in CI.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // expect.poll waits for what a page or a process shows: a deadline generous enough for a busy machine
    // (vitest's default is one second), never a measure of speed.
    expect: { poll: { timeout: 20_000, interval: 100 } },
    // The JSON report is what .ci/run counts; the default reporter is for people.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { extends: true, test: { name: 'integration', include: ['test/**/*.test.ts'], exclude: ['test/unit/**'] } },
    ],
  },
});
