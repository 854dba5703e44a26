/** `node dist/cli.js --url URL --pipeline NAME [--owner TEAM]`: print a template. */

import { stringify } from 'yaml';
import { ReconcilerClient } from './client';
import { templateFromCatalog } from './template';

async function main(argv: string[]): Promise<void> {
  const flag = (name: string) => {
    const at = argv.indexOf(`--${name}`);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  const url = flag('url');
  const pipeline = flag('pipeline');
  const token = process.env.RECONCILER_TOKEN;
  if (!url || !pipeline || !token) {
    throw new Error('usage: RECONCILER_TOKEN=… node dist/cli.js --url URL --pipeline NAME');
  }
  const catalog = await new ReconcilerClient({ baseUrl: url, token }).catalog();
  process.stdout.write(stringify(templateFromCatalog(catalog, pipeline, flag('owner'))));
}

main(process.argv.slice(2)).catch(error => {
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
});
