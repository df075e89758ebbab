/** moved to schemas/decode/packet.ts (shared with the analyzer: export, redact, merge read chunked frames) */
export * from '../../schemas/decode/packet.js';
