import { defineConfig } from 'vitest/config';

/**
 * Two projects: `unit` (test/unit/: no processes, sockets or engines; answers
 * in seconds: `npm run test:unit`) and `integration` (everything else, against
 * real components). `npm test` runs both.
 */
export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The JSON report is what .ci/run counts; the default reporter is for people.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { extends: true, test: { name: 'integration', include: ['test/**/*.test.ts'], exclude: ['test/unit/**'] } },
    ],
  },
});
