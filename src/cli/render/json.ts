// JSON output of every command (--json, and errors under --json): one value, indented by two spaces, on stdout.

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}
