// Prints the closing line CI reads, 'N passed, N failed, N skipped', from the vitest JSON report (.tmp/vitest.json).
import { readFileSync } from 'node:fs';

const r = JSON.parse(readFileSync(process.argv[2] ?? '.tmp/vitest.json', 'utf8'));
console.log(
  `${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + (r.numTodoTests || 0)} skipped`,
);
