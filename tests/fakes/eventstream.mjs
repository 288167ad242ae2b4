// AWS event-stream binary framing (application/vnd.amazon.eventstream), as used by Bedrock ConverseStream.
//
//   message  = prelude headers payload message_crc
//   prelude  = total_length:u32be headers_length:u32be prelude_crc:u32be   (CRC32 of the first 8 bytes)
//   header   = name_length:u8 name type:u8 value          (type 7 = string: value_length:u16be bytes)
//   message_crc = CRC32 of every byte before it
//
// encodeMessage / decodeMessages are exported so tests can build and check frames byte for byte.
import zlib from 'node:zlib';

let table = null;
function crc32Table(buf, crc = 0) {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  crc = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < buf.length; i++) crc = table[(crc ^ buf[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// zlib.crc32 exists from Node 20.15 / 22.2; older runtimes use the table.
export const crc32 = typeof zlib.crc32 === 'function' ? (buf) => zlib.crc32(buf) >>> 0 : (buf) => crc32Table(buf);
export const crc32Fallback = crc32Table;

const HEADER_TYPES = { bool_true: 0, bool_false: 1, byte: 2, short: 3, integer: 4, long: 5, bytes: 6, string: 7, timestamp: 8, uuid: 9 };

// headers: [[name, value]] (string values) or an object; payload: Buffer | string | object (JSON-encoded).
export function encodeMessage(headers, payload, opts = {}) {
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  const hparts = [];
  for (const [name, value] of entries) {
    const n = Buffer.from(name, 'utf8');
    const v = Buffer.from(String(value), 'utf8');
    const h = Buffer.allocUnsafe(1 + n.length + 1 + 2 + v.length);
    h[0] = n.length;
    n.copy(h, 1);
    h[1 + n.length] = HEADER_TYPES.string;
    h.writeUInt16BE(v.length, 2 + n.length);
    v.copy(h, 4 + n.length);
    hparts.push(h);
  }
  const hbuf = Buffer.concat(hparts);
  const pbuf = Buffer.isBuffer(payload) ? payload
    : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload), 'utf8');
  const total = 12 + hbuf.length + pbuf.length + 4;
  const out = Buffer.allocUnsafe(total);
  out.writeUInt32BE(total, 0);
  out.writeUInt32BE(hbuf.length, 4);
  out.writeUInt32BE(crc32(out.subarray(0, 8)), 8);
  hbuf.copy(out, 12);
  pbuf.copy(out, 12 + hbuf.length);
  let mcrc = crc32(out.subarray(0, total - 4));
  if (opts.corruptCrc) mcrc = (mcrc ^ 0xdeadbeef) >>> 0;
  out.writeUInt32BE(mcrc, total - 4);
  return out;
}

export function eventFrame(eventType, payload, opts) {
  return encodeMessage([[':event-type', eventType], [':content-type', 'application/json'], [':message-type', 'event']], payload, opts);
}

export function exceptionFrame(exceptionType, payload) {
  return encodeMessage([[':exception-type', exceptionType], [':content-type', 'application/json'], [':message-type', 'exception']], payload);
}

// Decodes all complete messages in buf. Returns { messages: [{ headers, payload: Buffer, json? }], rest: Buffer }.
// Throws on a CRC mismatch.
export function decodeMessages(buf) {
  const messages = [];
  let off = 0;
  while (buf.length - off >= 12) {
    const total = buf.readUInt32BE(off);
    const hlen = buf.readUInt32BE(off + 4);
    if (crc32(buf.subarray(off, off + 8)) !== buf.readUInt32BE(off + 8)) throw new Error('prelude CRC mismatch');
    if (buf.length - off < total) break;
    const msg = buf.subarray(off, off + total);
    if (crc32(msg.subarray(0, total - 4)) !== msg.readUInt32BE(total - 4)) throw new Error('message CRC mismatch');
    const headers = {};
    let p = 12;
    while (p < 12 + hlen) {
      const nl = msg[p];
      const name = msg.toString('utf8', p + 1, p + 1 + nl);
      p += 1 + nl;
      const type = msg[p++];
      if (type !== 7 && type !== 6) throw new Error(`unsupported header type ${type}`);
      const vl = msg.readUInt16BE(p);
      headers[name] = type === 7 ? msg.toString('utf8', p + 2, p + 2 + vl) : msg.subarray(p + 2, p + 2 + vl);
      p += 2 + vl;
    }
    const payload = msg.subarray(12 + hlen, total - 4);
    let json;
    try { json = JSON.parse(payload.toString('utf8')); } catch { json = undefined; }
    messages.push({ headers, payload, json });
    off += total;
  }
  return { messages, rest: buf.subarray(off) };
}
