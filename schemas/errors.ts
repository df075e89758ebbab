/**
 * An error the CLI reports as one line and exit code 2: bad usage or bad input (a missing, truncated,
 * foreign or future bundle, an unparsable capture). Anything else is a bug: the CLI still reports it on
 * one line ("internal error", exit 2) so hostile input never prints a stack; ROLLTRACE_DEBUG=1 keeps
 * the stack, and the tests treat an internal error as a failure.
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
