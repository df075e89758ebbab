/**
 * Member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux), read here so that the bpftrace program
 * reaches the few kernel struct fields it needs by plain offsets (`*(uint32 *)((uint64)ptr + N)`)
 * instead of through struct types: a struct type (or `curtask->`) in a bpftrace 0.17 program makes it
 * build C definitions from BTF and parse them with clang, ~0.4 s of its start-up on this machine.
 *
 * Pure: the BTF bytes in, offsets out (null when a struct or member is not there). One pass notes where
 * each type's record is; names and members are read only for the types looked up.
 */

/** BTF_KIND_* numbers used here */
const INT = 1, PTR = 2, ARRAY = 3, STRUCT = 4, UNION = 5, ENUM = 6, TYPEDEF = 8, VOLATILE = 9, CONST = 10, RESTRICT = 11,
  FUNC_PROTO = 13, VAR = 14, DATASEC = 15, DECL_TAG = 17, TYPE_TAG = 18, ENUM64 = 19;
const QUALIFIER = new Set([TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG]);

export class Btf {
  private b: Buffer;
  private s0: number;
  private strLen: number;
  /** byte offset of type id's record (ids from 1) */
  private at: number[] = [0];

  constructor(data: Uint8Array) {
    const b = this.b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (b.length < 24 || b.readUInt16LE(0) !== 0xeb9f) throw new Error('not BTF (bad magic)');
    const hdrLen = b.readUInt32LE(4), typeOff = b.readUInt32LE(8), typeLen = b.readUInt32LE(12), strOff = b.readUInt32LE(16);
    this.strLen = b.readUInt32LE(20);
    const t0 = hdrLen + typeOff;
    this.s0 = hdrLen + strOff;
    if (t0 + typeLen > b.length || this.s0 + this.strLen > b.length) throw new Error('BTF sections past the end');
    const end = t0 + typeLen;
    for (let o = t0; o + 12 <= end;) {
      this.at.push(o);
      const info = b.readUInt32LE(o + 4);
      const kind = (info >>> 24) & 0x1f, vlen = info & 0xffff;
      o += 12;
      switch (kind) {
        case INT: case VAR: case DECL_TAG: o += 4; break;
        case ARRAY: o += 12; break;
        case STRUCT: case UNION: case DATASEC: case ENUM64: o += 12 * vlen; break;
        case ENUM: case FUNC_PROTO: o += 8 * vlen; break;
        default: break; // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG: no extra data
      }
    }
  }

  private kind(id: number): number { const o = this.at[id]; return o === undefined ? -1 : (this.b.readUInt32LE(o + 4) >>> 24) & 0x1f; }
  private ref(id: number): number { return this.b.readUInt32LE(this.at[id]! + 8); }
  private nameIs(off: number, name: string): boolean {
    if (off === 0 || off >= this.strLen) return name === '';
    const s = this.s0 + off;
    return this.b[s + name.length] === 0 && this.b.toString('latin1', s, s + name.length) === name;
  }

  /** the first struct of that name with members (a name can also be a forward declaration) */
  private struct(name: string): number {
    for (let id = 1; id < this.at.length; id++) {
      const o = this.at[id]!;
      const info = this.b.readUInt32LE(o + 4);
      if (((info >>> 24) & 0x1f) === STRUCT && (info & 0xffff) > 0 && this.nameIs(this.b.readUInt32LE(o), name)) return id;
    }
    return -1;
  }

  /** through typedefs and qualifiers */
  private strip(id: number): number {
    for (let i = 0; i < 16 && QUALIFIER.has(this.kind(id)); i++) id = this.ref(id);
    return id;
  }

  /** byte offset and type of a member of a struct/union, looking inside anonymous members */
  private member(id: number, name: string): { offset: number; type: number } | null {
    const k = this.kind(id);
    if (k !== STRUCT && k !== UNION) return null;
    const o = this.at[id]!;
    const info = this.b.readUInt32LE(o + 4);
    const vlen = info & 0xffff, kflag = info >>> 31;
    for (let i = 0, m = o + 12; i < vlen; i++, m += 12) {
      const nameOff = this.b.readUInt32LE(m), type = this.b.readUInt32LE(m + 4), raw = this.b.readUInt32LE(m + 8);
      const bits = kflag ? raw & 0xffffff : raw;
      if (bits % 8 !== 0) continue; // a bitfield: never one of ours
      if (nameOff === 0) {
        const hit = this.member(this.strip(type), name);
        if (hit) return { offset: bits / 8 + hit.offset, type: hit.type };
      } else if (this.nameIs(nameOff, name)) return { offset: bits / 8, type };
    }
    return null;
  }

  /**
   * A member path inside `struct name` (e.g. `__sk_common.skc_net`), following embedded structs only
   * (not pointers): its byte offset and its type id (through typedefs and qualifiers); null when a step is missing.
   */
  private walk(struct: string, path: string): { offset: number; type: number } | null {
    let id = this.struct(struct);
    if (id < 0) return null;
    let off = 0;
    for (const step of path.split('.')) {
      const m = this.member(id, step);
      if (!m) return null;
      off += m.offset;
      id = this.strip(m.type);
    }
    return { offset: off, type: id };
  }

  offsetOf(struct: string, path: string): number | null { return this.walk(struct, path)?.offset ?? null; }

  /** is the member at the end of the path a pointer? */
  isPointer(struct: string, path: string): boolean { const w = this.walk(struct, path); return w !== null && this.kind(w.type) === PTR; }
}

/** what the program reads by offset: see program.ts */
export interface KernelOffsets {
  /** struct sock -> the `struct net *` (sk->__sk_common.skc_net.net) */
  skNet: number;
  /** struct net -> its namespace inode (net->ns.inum) */
  netInum: number;
  /** struct task_struct -> exit_code */
  exitCode: number;
  /** struct sk_buff -> the `struct net_device *` (skb->dev) */
  skbDev: number;
  /** struct net_device -> the `struct net *` (dev->nd_net.net) */
  devNet: number;
}

/** The offsets the program needs, or null when this kernel's BTF lacks one of them. */
export function kernelOffsets(btf: Btf): KernelOffsets | null {
  const skNet = btf.offsetOf('sock', '__sk_common.skc_net.net');
  const netInum = btf.offsetOf('net', 'ns.inum');
  const exitCode = btf.offsetOf('task_struct', 'exit_code');
  const skbDev = btf.offsetOf('sk_buff', 'dev');
  const devNet = btf.offsetOf('net_device', 'nd_net.net');
  if (skNet === null || netInum === null || exitCode === null || skbDev === null || devNet === null) return null;
  if (!btf.isPointer('sock', '__sk_common.skc_net.net') || !btf.isPointer('sk_buff', 'dev') || !btf.isPointer('net_device', 'nd_net.net')) return null;
  return { skNet, netInum, exitCode, skbDev, devNet };
}
