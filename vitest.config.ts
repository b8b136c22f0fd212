import { defineConfig } from 'vitest/config';

// Two projects: `unit` (pure, beside the code) and `native` (real kernel and outside programs, as root).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          // scripts/*.test.mjs: tests of the project's own check scripts (e.g. check-imports.mjs)
          include: ['src/**/*.test.ts', 'scripts/**/*.test.mjs'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'native',
          include: ['native-test/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          pool: 'forks',
        },
      },
    ],
  },
});
