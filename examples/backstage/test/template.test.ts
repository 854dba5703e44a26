import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { formSchema, templateFromCatalog } from '../src/template';
import { CATALOG } from './fakeApi';

test('the committed template is the one made from the recorded catalog', () => {
  const committed = parse(readFileSync(join(__dirname, '..', 'template.yaml'), 'utf-8'));
  expect(committed).toEqual(templateFromCatalog(CATALOG, 'server'));
});

test("the form is the catalog's inputs schema, unchanged but for its dialect", () => {
  const offering = CATALOG.pipelines[0];
  const form = formSchema(offering.inputs);
  const { $schema: _dialect, ...expected } = offering.inputs;
  expect(form.required).toEqual(expected.required);
  expect(form.additionalProperties).toBe(false);
  expect((form.properties as any).os).toEqual(expected.properties.os);
  expect((form.properties as any).rootPassword['ui:help']).toMatch(/reference/);
  expect(form.$schema).toBeUndefined();
});

test('the template names the pipeline, its kinds, the providers and profiles', () => {
  const template = templateFromCatalog(CATALOG, 'server') as any;
  const first = template.spec.parameters[0].properties;
  expect(first.kind.enum).toEqual(['Machine']);
  expect(first.provider.enum).toEqual(['lab']);
  expect(first.profiles.items.enum).toEqual(['web']);
  expect(template.spec.steps[0].action).toBe('reconciler:request');
  expect(template.spec.steps[0].input.pipeline).toBe('server');
  expect(() => templateFromCatalog(CATALOG, 'nope')).toThrow('offered: server');
});
