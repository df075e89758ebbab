import { writeFileSync } from 'node:fs';
import { renderBundleDocs } from '../schemas/docgen.js';

writeFileSync(new URL('../docs/bundle.md', import.meta.url), renderBundleDocs());
console.log('wrote docs/bundle.md');
