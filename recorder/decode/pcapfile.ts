/** moved to schemas/decode/pcapfile.ts (shared with the analyzer: export, redact, merge read chunked frames) */
export * from '../../schemas/decode/pcapfile.js';
