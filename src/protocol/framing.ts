// Line framing: the protocol is one JSON message per line. Bytes arrive in
// arbitrary chunks; complete lines leave in order, and a line longer than the
// cap is refused once and skipped up to its newline, without being buffered.
export const MAX_LINE = 1024 * 1024;

export class LineFramer {
  private buf: Buffer[] = [];
  private bufLen = 0;
  private skipping = false; // inside an over-long line: drop bytes up to its newline

  constructor(
    private readonly onLine: (line: Buffer) => void,
    private readonly onOverlong: () => void,
  ) {}

  feed(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const part = chunk.subarray(start, nl);
      start = nl + 1;
      if (this.skipping) {
        this.skipping = false;
        continue;
      }
      const line = this.bufLen ? Buffer.concat([...this.buf, part]) : part;
      this.buf = [];
      this.bufLen = 0;
      if (line.length > MAX_LINE) this.onOverlong();
      else this.onLine(line);
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0 || this.skipping) return;
    if (this.bufLen + rest.length > MAX_LINE) {
      this.buf = [];
      this.bufLen = 0;
      this.skipping = true;
      this.onOverlong();
      return;
    }
    this.buf.push(Buffer.from(rest));
    this.bufLen += rest.length;
  }
}
