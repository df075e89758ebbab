/** `rolltrace lab run --real`: placeholder replaced below. */
export async function runRealRun(_opts: unknown): Promise<number> { return 2; }
