#!/usr/bin/env node
// rolltrace entry point: runs the TypeScript sources directly through tsx (no build step to remember).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv);
