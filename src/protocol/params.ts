// Each method's parameters, as src/protocol/schemas/params.json lets them through.
import type { Owner } from '../store/types';

export interface TargetParams {
  path?: string;
  name?: string;
  dir?: string;
  backend?: string;
}

export interface AcquireParams extends TargetParams {
  shared?: boolean;
  timeout?: number | null;
  owner?: Owner;
  scope?: 'connection' | 'run';
  member?: string;
  notify?: number;
  prefix?: string;
  batch?: BatchParams;
  slots?: number;
  protocol?: number;
}

// The names of one task's batch (a linear play's hosts), taken in one order (policy/runholds.ts).
export interface BatchParams {
  id: string;
  members?: Array<{ member: string; name: string }>;
}

export interface Params {
  hello: { client?: string; member?: string };
  acquire: AcquireParams;
  try: AcquireParams;
  block: { handle: string; timeout?: number | null; notify?: number };
  release: TargetParams & { handle?: string; scope?: 'run'; member?: string; batch?: BatchParams; protocol?: number };
  status: TargetParams;
  list: { dir?: string; backend?: string };
}
