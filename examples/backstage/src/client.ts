/**
 * A small client of reconciler's portal API: the catalog, requests, their operations.
 *
 * `POST /api/v1/requests` answers 202 with an operation (`id`, `phase`, `location`);
 * `GET /api/v1/requests/{id}` shows its phase as the request moves through Git:
 * branch-pushed -> planned -> merged -> provisioning -> ready | failed, or closed.
 */

export type Phase =
  | 'branch-pushed'
  | 'planned'
  | 'merged'
  | 'provisioning'
  | 'ready'
  | 'failed'
  | 'closed';

/** Phases the action stops at (a failed request may still be retried by people). */
export const FINAL_PHASES: ReadonlySet<Phase> = new Set(['ready', 'failed', 'closed']);

export interface Offering {
  name: string;
  title: string;
  description: string;
  kinds: string[];
  tags: string[];
  inputs: JsonSchema;
}

export interface Catalog {
  revision: string | null;
  pipelines: Offering[];
  profiles: { name: string; description: string }[];
  providers: { name: string; type: string }[];
}

export type JsonSchema = { [key: string]: unknown };

export interface RequestBody {
  kind: string;
  name: string;
  pipeline: string;
  provider: string;
  profiles?: string[];
  inputs?: { [key: string]: unknown };
  requester: { name: string; email: string };
  reason?: string;
}

export interface Accepted {
  id: string;
  phase: Phase;
  location: string;
  branch: string;
  commit: string;
}

export interface RequestOperation {
  id: string;
  phase: Phase;
  resource: string;
  branch: string;
  history: { phase: Phase; at: string }[];
  terminal: boolean;
  pullRequest?: { number?: number; url?: string; error?: string };
  progress?: { resourcePhase?: string; stageReached?: string; message?: string };
  failure?: { stage: string; task: string; error: string };
  note?: string;
}

export interface FieldError {
  field: string;
  message: string;
  at?: string;
}

/** The API refused a request: every error by field (422), or another refusal. */
export class RequestRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: FieldError[] = [],
  ) {
    super(message);
    this.name = 'RequestRefused';
  }
}

export interface ClientOptions {
  /** Where `reconciler run` listens, e.g. https://reconciler.example.com */
  baseUrl: string;
  /** A token with the `request` scope (`RECONCILER_API_TOKENS`). */
  token: string;
  fetch?: typeof fetch;
}

export class ReconcilerClient {
  private readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.fetchImpl = options.fetch ?? fetch;
  }

  private async call(path: string, init: RequestInit = {}): Promise<Response> {
    return this.fetchImpl(`${this.baseUrl}${path}`, {
      ...init,
      headers: {
        Authorization: `Bearer ${this.options.token}`,
        Accept: 'application/json',
        ...(init.body ? { 'Content-Type': 'application/json' } : {}),
      },
    });
  }

  private static async refusal(response: Response, doing: string): Promise<RequestRefused> {
    const body = await response.json().catch(() => ({}) as { [key: string]: unknown });
    const errors = Array.isArray(body.errors) ? (body.errors as FieldError[]) : [];
    const detail = typeof body.detail === 'string' ? body.detail : response.statusText;
    const listed = errors.map(e => `${e.field || '(request)'}: ${e.message}`);
    return new RequestRefused(
      response.status,
      [`${doing}: ${response.status} ${detail}`, ...listed].join('\n'),
      errors,
    );
  }

  async catalog(): Promise<Catalog> {
    const response = await this.call('/api/v1/catalog');
    if (!response.ok) throw await ReconcilerClient.refusal(response, 'reading the catalog');
    return (await response.json()) as Catalog;
  }

  async submit(body: RequestBody): Promise<Accepted> {
    const response = await this.call('/api/v1/requests', {
      method: 'POST',
      body: JSON.stringify(body),
    });
    if (response.status !== 202) {
      throw await ReconcilerClient.refusal(response, 'the request was refused');
    }
    return (await response.json()) as Accepted;
  }

  async operation(location: string): Promise<RequestOperation> {
    const response = await this.call(location);
    if (!response.ok) throw await ReconcilerClient.refusal(response, `reading ${location}`);
    return (await response.json()) as RequestOperation;
  }
}
