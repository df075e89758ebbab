/**
 * An error the CLI reports as one line and exit code 2: bad usage or bad input (a missing, truncated,
 * foreign or future bundle, an unparsable capture). Anything else is a bug and keeps its stack.
 */
export class InputError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

export function isInputError(e: unknown): e is InputError {
  return e instanceof Error && (e as { name?: string }).name === 'InputError';
}
