import { createMockActionContext } from '@backstage/plugin-scaffolder-node-test-utils';
import { createReconcilerRequestAction } from '../src/action';
import { ReconcilerClient, RequestRefused } from '../src/client';
import { CATALOG, FakeApi, startFakeApi, TOKEN } from './fakeApi';

const INPUT = {
  kind: 'Machine',
  name: 'web-07',
  pipeline: 'server',
  provider: 'lab',
  profiles: ['web'],
  inputs: { os: 'rhel-9', rootPassword: 'env:WEB07_ROOT' },
  reason: 'A web server for the conference site',
  requester: { name: 'Grace Hopper', email: 'grace@example.com' },
};

let api: FakeApi | undefined;
afterEach(async () => {
  await api?.close();
  api = undefined;
});

function action(url: string) {
  return createReconcilerRequestAction({ baseUrl: url, token: TOKEN, pollIntervalMs: 5 });
}

function context(input: object = INPUT) {
  return createMockActionContext({ input: input as any });
}

test('posts the request once and polls until ready', async () => {
  api = await startFakeApi({
    phases: [
      { phase: 'branch-pushed' },
      { phase: 'planned', pullRequest: { number: 7, url: 'https://forge/pr/7' } },
      { phase: 'merged', pullRequest: { number: 7, url: 'https://forge/pr/7' } },
      { phase: 'provisioning', progress: { resourcePhase: 'Provisioning', stageReached: 'install-os' } },
      { phase: 'ready', pullRequest: { number: 7, url: 'https://forge/pr/7' } },
    ],
  });
  const ctx = context();
  await action(api.url).handler(ctx as any);

  const posts = api.calls.filter(c => c.method === 'POST');
  expect(posts).toHaveLength(1);
  expect(posts[0].path).toBe('/api/v1/requests');
  expect(posts[0].authorization).toBe(`Bearer ${TOKEN}`);
  expect(posts[0].body).toEqual(INPUT);
  const polls = api.calls.filter(c => c.method === 'GET');
  expect(polls).toHaveLength(5);
  expect(polls.every(c => c.path === '/api/v1/requests/a1b2c3d4e5f60718')).toBe(true);
  expect(ctx.output).toHaveBeenCalledWith('requestId', 'a1b2c3d4e5f60718');
  expect(ctx.output).toHaveBeenCalledWith('branch', 'request/a1b2c3d4e5f60718');
  expect(ctx.output).toHaveBeenCalledWith('pullRequestUrl', 'https://forge/pr/7');
  expect(ctx.output).toHaveBeenLastCalledWith('phase', 'ready');
});

test('a failed request fails the step with its stage, task and error', async () => {
  api = await startFakeApi({
    phases: [
      { phase: 'merged' },
      { phase: 'failed', failure: { stage: 'install-os', task: 'install', error: 'BMC said no' } },
    ],
  });
  await expect(action(api.url).handler(context() as any)).rejects.toThrow(
    'request a1b2c3d4e5f60718 failed at stage install-os, task install: BMC said no',
  );
});

test('a closed request fails the step', async () => {
  api = await startFakeApi({ phases: [{ phase: 'planned' }, { phase: 'closed' }] });
  await expect(action(api.url).handler(context() as any)).rejects.toThrow(
    'was closed: its branch was deleted unmerged',
  );
});

test('field errors are reported and nothing is polled', async () => {
  api = await startFakeApi({
    refuse: [
      {
        field: 'inputs.os',
        message: "param 'os' = 'windows' is not offered by pipeline 'server' (allowed: ubuntu-24.04, rhel-9)",
      },
    ],
  });
  const failed = action(api.url).handler(context({ ...INPUT, inputs: { os: 'windows' } }) as any);
  await expect(failed).rejects.toThrow(RequestRefused);
  await expect(failed).rejects.toThrow("inputs.os: param 'os' = 'windows' is not offered");
  expect(api.calls.map(c => c.method)).toEqual(['POST']);
});

test('a resumed task does not post again (the checkpoint keeps the answer)', async () => {
  api = await startFakeApi({ phases: [{ phase: 'ready' }] });
  const kept = new Map<string, unknown>();
  const checkpoint = async ({ key, fn }: { key: string; fn: () => Promise<unknown> }) => {
    if (!kept.has(key)) kept.set(key, await fn());
    return kept.get(key);
  };
  for (let run = 0; run < 2; run++) {
    const ctx = { ...context(), checkpoint } as any;
    await action(api.url).handler(ctx);
  }
  expect(api.calls.filter(c => c.method === 'POST')).toHaveLength(1);
});

test('the requester defaults to the Backstage user', async () => {
  api = await startFakeApi({});
  const { requester: _given, ...input } = INPUT;
  const ctx = createMockActionContext({
    input: input as any,
    user: {
      ref: 'user:default/ada',
      entity: {
        apiVersion: 'backstage.io/v1alpha1',
        kind: 'User',
        metadata: { name: 'ada' },
        spec: { profile: { displayName: 'Ada Lovelace', email: 'ada@example.com' } },
      },
    },
  });
  await action(api.url).handler(ctx as any);
  const post = api.calls.find(c => c.method === 'POST')!;
  expect((post.body as any).requester).toEqual({ name: 'Ada Lovelace', email: 'ada@example.com' });
});

test('the client reads the recorded catalog', async () => {
  api = await startFakeApi({});
  const catalog = await new ReconcilerClient({ baseUrl: api.url, token: TOKEN }).catalog();
  expect(catalog).toEqual(CATALOG);
  await expect(
    new ReconcilerClient({ baseUrl: api.url, token: 'wrong' }).catalog(),
  ).rejects.toThrow('reading the catalog: 401 bearer token required');
});
