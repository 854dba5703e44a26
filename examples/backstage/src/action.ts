/**
 * `reconciler:request`: a Backstage scaffolder action that asks reconciler for a
 * resource of its service catalog and follows the request until it is ready.
 *
 * It posts `POST /api/v1/requests` once (inside a scaffolder checkpoint, so a task
 * resumed after a restart of Backstage does not ask twice), then polls the request's
 * operation, logging each phase, until `ready` (the step succeeds), `failed` (it
 * fails with the stage, task and error) or `closed` (the branch was deleted
 * unmerged). The requester is the step's input, else the Backstage user's profile.
 */

import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import {
  ClientOptions,
  FINAL_PHASES,
  ReconcilerClient,
  RequestBody,
  RequestOperation,
} from './client';

export interface RequestActionOptions extends ClientOptions {
  /** Milliseconds between two looks at the operation (default 5 s). */
  pollIntervalMs?: number;
  /** The longest the step waits for `ready` (default 2 h: provisioning takes time). */
  timeoutMs?: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new Error('the scaffolder task was cancelled'));
    });
  });

function describe(op: RequestOperation): string {
  const parts: string[] = [`phase ${op.phase}`];
  if (op.progress?.resourcePhase) parts.push(`resource ${op.progress.resourcePhase}`);
  if (op.progress?.stageReached) parts.push(`stage ${op.progress.stageReached}`);
  if (op.progress?.message) parts.push(op.progress.message);
  if (op.pullRequest?.url) parts.push(`pull request ${op.pullRequest.url}`);
  return parts.join(', ');
}

export function createReconcilerRequestAction(options: RequestActionOptions) {
  const client = new ReconcilerClient(options);
  const pollIntervalMs = options.pollIntervalMs ?? 5000;
  const timeoutMs = options.timeoutMs ?? 2 * 60 * 60 * 1000;

  return createTemplateAction({
    id: 'reconciler:request',
    description:
      "Request a resource from reconciler's service catalog; the request becomes a pull " +
      'request, and the step waits until the resource is ready',
    schema: {
      input: {
        kind: z => z.enum(['Machine', 'Instance', 'Resource']).describe('What to declare'),
        name: z => z.string().describe('Its name (lower-case DNS-style)'),
        pipeline: z => z.string().describe('The catalog pipeline'),
        provider: z => z.string().describe('The provider it lives in'),
        profiles: z => z.array(z.string()).optional().describe('Profiles to apply'),
        inputs: z => z.record(z.string(), z.unknown()).optional().describe("The pipeline's inputs"),
        reason: z => z.string().optional().describe('Why: goes into the commit message'),
        requester: z =>
          z
            .object({ name: z.string(), email: z.string() })
            .optional()
            .describe('Who asks (default: the Backstage user)'),
        wait: z => z.boolean().optional().describe('Wait until ready (default true)'),
      },
      output: {
        requestId: z => z.string(),
        phase: z => z.string(),
        branch: z => z.string(),
        pullRequestUrl: z => z.string().optional(),
      },
    },
    async handler(ctx) {
      const profile = ctx.user?.entity?.spec?.profile;
      const requester = ctx.input.requester ?? {
        name: profile?.displayName ?? ctx.user?.ref ?? 'backstage',
        email: profile?.email ?? '',
      };
      if (!requester.email) {
        throw new Error('no requester e-mail: give input.requester, or a user profile email');
      }
      const body: RequestBody = {
        kind: ctx.input.kind,
        name: ctx.input.name,
        pipeline: ctx.input.pipeline,
        provider: ctx.input.provider,
        profiles: ctx.input.profiles ?? [],
        inputs: (ctx.input.inputs ?? {}) as { [key: string]: unknown },
        requester,
        reason: ctx.input.reason ?? '',
      };
      const accepted = await ctx.checkpoint({
        key: `reconciler-request-${ctx.input.kind}-${ctx.input.name}`,
        fn: async () => {
          const answer = await client.submit(body);
          return { id: answer.id, location: answer.location, branch: answer.branch };
        },
      });
      ctx.logger.info(`request ${accepted.id}: branch ${accepted.branch} pushed`);
      ctx.output('requestId', accepted.id);
      ctx.output('branch', accepted.branch);
      ctx.output('phase', 'branch-pushed');
      if (ctx.input.wait === false) return;

      const deadline = Date.now() + timeoutMs;
      let seen = '';
      for (;;) {
        const op = await client.operation(accepted.location);
        const said = describe(op);
        if (said !== seen) {
          ctx.logger.info(`request ${accepted.id}: ${said}`);
          seen = said;
        }
        if (op.pullRequest?.url) ctx.output('pullRequestUrl', op.pullRequest.url);
        ctx.output('phase', op.phase);
        if (FINAL_PHASES.has(op.phase)) {
          if (op.phase === 'ready') return;
          if (op.phase === 'failed' && op.failure) {
            const { stage, task, error } = op.failure;
            throw new Error(`request ${accepted.id} failed at stage ${stage}, task ${task}: ${error}`);
          }
          throw new Error(`request ${accepted.id} was ${op.phase}: its branch was deleted unmerged`);
        }
        if (Date.now() > deadline) {
          throw new Error(`request ${accepted.id} is still ${op.phase} after ${timeoutMs} ms`);
        }
        await sleep(pollIntervalMs, ctx.signal);
      }
    },
  });
}
