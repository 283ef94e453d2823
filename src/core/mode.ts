// How a lock is held: alone (exclusive) or beside other shared holders.
export type Mode = 'exclusive' | 'shared';
