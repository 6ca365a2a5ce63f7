import { defineConfig } from 'vitest/config';

// Unit tests of the viewer's pure logic (no browser: Node's own globals are enough). The
// Chromium tests in ../tests drive the built page end to end.
export default defineConfig({
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
    // A run that finds no test is a broken run (a renamed folder, a bad glob), not a pass.
    passWithNoTests: false,
  },
});
