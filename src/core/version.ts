// Bumped together with docs/PROTOCOL.md; clients refuse a helper of another protocol.
export const VERSION = '0.1.0';
export const PROTOCOL = 2;
