/**
 * A local HTTP fake of reconciler's portal API (127.0.0.1, a free port), recording the
 * calls: the catalog is the one recorded from a real controller (fixtures/catalog.json,
 * kept in step with the controller by tests/portal/test_backstage.py), and each request
 * walks the phases a scenario gives, one per poll.
 */

import { AddressInfo } from 'node:net';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const TOKEN = 'portal-token-for-tests';
export const CATALOG = JSON.parse(
  readFileSync(join(__dirname, 'fixtures', 'catalog.json'), 'utf-8'),
);

export interface Call {
  method: string;
  path: string;
  authorization?: string;
  body?: unknown;
}

export interface Scenario {
  /** Operations answered by successive polls; the last repeats. */
  phases?: { [key: string]: unknown }[];
  /** Answer the POST with these field errors (422) instead. */
  refuse?: { field: string; message: string; at?: string }[];
}

export interface FakeApi {
  url: string;
  calls: Call[];
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(data);
}

async function read(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf-8');
  return text ? JSON.parse(text) : undefined;
}

export async function startFakeApi(scenario: Scenario): Promise<FakeApi> {
  const calls: Call[] = [];
  let polls = 0;
  const id = 'a1b2c3d4e5f60718';
  const server: Server = createServer(async (req, res) => {
    const body = await read(req);
    calls.push({ method: req.method!, path: req.url!, authorization: req.headers.authorization, body });
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      return send(res, 401, { detail: 'bearer token required' });
    }
    if (req.method === 'GET' && req.url === '/api/v1/catalog') return send(res, 200, CATALOG);
    if (req.method === 'POST' && req.url === '/api/v1/requests') {
      if (scenario.refuse) {
        return send(res, 422, {
          detail: 'the request is invalid: nothing was created',
          errors: scenario.refuse,
        });
      }
      const location = `/api/v1/requests/${id}`;
      return send(
        res,
        202,
        { id, phase: 'branch-pushed', location, branch: `request/${id}`, commit: 'c0ffee' },
        { location },
      );
    }
    if (req.method === 'GET' && req.url === `/api/v1/requests/${id}`) {
      const phases = scenario.phases ?? [{ phase: 'ready' }];
      const step = phases[Math.min(polls, phases.length - 1)];
      polls += 1;
      return send(res, 200, { id, resource: 'Machine/web-07', branch: `request/${id}`,
                              history: [], terminal: false, ...step });
    }
    return send(res, 404, { detail: 'Not Found' });
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () => new Promise<void>(resolve => server.close(() => resolve())),
  };
}
