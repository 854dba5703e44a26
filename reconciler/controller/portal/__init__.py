"""Requests from portals: the service catalog, requests that become pull requests, scopes.

Beside the HTTP API of `reconciler run` (`reconciler.controller.server` mounts `api.portal_router`).
The flow of one request, one module per step:

- `auth`: who calls (named tokens by reference, scopes read/request/sync/admin);
- `catalog` (pure): the pipelines a revision offers, their inputs as JSON Schema;
- `requests` (pure): a request's shape, its document, the loader's errors by field;
- `gitops`: the tracked branch loaded as `validate` loads it, the request's commit
  pushed to `request/<id>`, and what Git says about it afterwards;
- `phases` (pure): branch-pushed -> planned -> merged -> provisioning -> ready/failed,
  or closed, from those facts;
- `store`: the request records, across restarts (SQLite behind a small protocol);
- `forge`: the pull (merge) request on GitHub or GitLab, its description the plan;
- `service`: the above put together; `api`: the routes and the follower.
"""
