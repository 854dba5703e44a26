/**
 * A Backstage software template from reconciler's catalog: its form is the catalog's,
 * unchanged (the pipeline's inputs as JSON Schema), its one step `reconciler:request`.
 *
 * `node dist/cli.js --url URL --pipeline NAME` (token in RECONCILER_TOKEN) prints it;
 * `template.yaml` beside this package is the one made from the recorded catalog of
 * the tests (`test/fixtures/catalog.json`).
 */

import { Catalog, JsonSchema } from './client';

const NAME_PATTERN = '^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$';

/** The catalog's inputs schema as react-jsonschema-form takes it (no `$schema`). */
export function formSchema(inputs: JsonSchema): JsonSchema {
  const { $schema: _dialect, ...rest } = inputs;
  const properties = (rest.properties ?? {}) as { [key: string]: JsonSchema };
  const shown: { [key: string]: JsonSchema } = {};
  for (const [name, property] of Object.entries(properties)) {
    shown[name] = property['x-reconciler-secure']
      ? { ...property, 'ui:help': 'A reference such as env:NAME or file:PATH, never the secret' }
      : property;
  }
  return { title: 'Inputs', ...rest, properties: shown };
}

export function templateFromCatalog(
  catalog: Catalog,
  pipeline: string,
  owner = 'platform-team',
): { [key: string]: unknown } {
  const offering = catalog.pipelines.find(p => p.name === pipeline);
  if (!offering) {
    const offered = catalog.pipelines.map(p => p.name).join(', ') || 'none';
    throw new Error(`pipeline ${pipeline} is not in the catalog (offered: ${offered})`);
  }
  return {
    apiVersion: 'scaffolder.backstage.io/v1beta3',
    kind: 'Template',
    metadata: {
      name: `reconciler-${offering.name}`,
      title: offering.title,
      description: offering.description,
      tags: [...offering.tags, 'reconciler'],
      annotations: { 'reconciler/catalog-revision': catalog.revision ?? 'unknown' },
    },
    spec: {
      owner,
      type: 'infrastructure',
      parameters: [
        {
          title: `Request: ${offering.title}`,
          required: ['kind', 'name', 'provider'],
          properties: {
            kind: { title: 'Kind', type: 'string', enum: offering.kinds, default: offering.kinds[0] },
            name: { title: 'Name', type: 'string', pattern: NAME_PATTERN },
            provider: {
              title: 'Provider',
              type: 'string',
              enum: catalog.providers.map(p => p.name),
            },
            profiles: {
              title: 'Profiles',
              type: 'array',
              uniqueItems: true,
              items: { type: 'string', enum: catalog.profiles.map(p => p.name) },
              'ui:widget': 'checkboxes',
            },
            reason: { title: 'Reason', type: 'string', 'ui:widget': 'textarea' },
          },
        },
        {
          title: 'Inputs',
          properties: { inputs: formSchema(offering.inputs) },
        },
      ],
      steps: [
        {
          id: 'request',
          name: 'Request through reconciler',
          action: 'reconciler:request',
          input: {
            kind: '${{ parameters.kind }}',
            name: '${{ parameters.name }}',
            pipeline: offering.name,
            provider: '${{ parameters.provider }}',
            profiles: '${{ parameters.profiles }}',
            inputs: '${{ parameters.inputs }}',
            reason: '${{ parameters.reason }}',
          },
        },
      ],
      output: {
        links: [{ title: 'Pull request', url: '${{ steps.request.output.pullRequestUrl }}' }],
        text: [
          {
            title: 'Request',
            content: 'Request `${{ steps.request.output.requestId }}`: ${{ steps.request.output.phase }}',
          },
        ],
      },
    },
  };
}
