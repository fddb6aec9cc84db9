#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere; idempotent).

Each seed is laid out the way the fuzzer's FuzzedDataProvider reads it: byte strings
from the front, integers from the back. So a seed is a real run: valid worker-protocol
frames and control packets, encoded here by hand (no protobuf module needed).
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, value):
    return varint(num << 3) + varint(value)


def field_bytes(num, value):
    if isinstance(value, str):
        value = value.encode()
    return varint((num << 3) | 2) + varint(len(value)) + value


def frame(body):
    return len(body).to_bytes(4, "little") + body


# forkpool.internal messages.
def status(code, message):
    return field_varint(1, code) + field_bytes(2, message)


def hello(pid=1234, version=1, runtime="native", init_error=None):
    h = field_varint(1, pid) + field_varint(2, version) + field_bytes(3, runtime)
    if init_error:
        h += field_bytes(4, status(*init_error))
    return field_bytes(1, h)


def packed(items):
    return b"".join(field_bytes(1, item) for item in items)


def results(batch, first, items):
    outputs = packed(out if code == 0 else b"" for code, out in items)
    r = field_varint(1, batch) + field_varint(2, first) + field_bytes(4, outputs)
    for i, (code, out) in enumerate(items):
        if code != 0:
            r += field_bytes(5, field_varint(1, first + i) + field_bytes(2, status(code, "boom")))
    return field_bytes(2, r)


def done(batch, rss=1 << 20):
    return field_bytes(3, field_varint(1, batch) + field_varint(2, rss))


def request(corr, method, body):
    return field_bytes(4, field_varint(1, corr) + field_bytes(2, method) + field_bytes(3, body))


def load_pool(rid, pool, libs, method="forkserver"):
    lp = field_bytes(1, pool) + b"".join(field_bytes(2, l) for l in libs) + field_bytes(3, method)
    return field_varint(1, rid) + field_bytes(2, lp)


def fork_worker(rid, pool, index):
    return field_varint(1, rid) + field_bytes(3, field_bytes(1, pool) + field_varint(2, index))


def pool_loaded(rid, functions):
    return field_varint(1, rid) + field_bytes(2, status(0, "")) + field_bytes(
        3, b"".join(field_bytes(1, f) for f in functions))


def worker_forked(rid, pid):
    return field_varint(1, rid) + field_bytes(2, status(0, "")) + field_bytes(4, field_varint(1, pid))


class Seed:
    """Builds FuzzedDataProvider input: bytes from the front, integers from the back."""

    def __init__(self):
        self.front = bytearray()
        self.back = bytearray()  # in consumption order; reversed at the end

    def integer(self, lo, hi, value):
        rng = hi - lo
        v = value - lo
        assert 0 <= v <= rng
        nbytes = 0
        while nbytes < 8 and (rng >> (8 * nbytes)) > 0:
            nbytes += 1
        for i in reversed(range(nbytes)):  # the first byte read is the most significant
            self.back.append((v >> (8 * i)) & 0xFF)

    def boolean(self, b):
        self.back.append(1 if b else 0)

    def data(self, b):
        self.front += b

    def chunk(self, b, hi=4096):
        self.integer(0, hi, len(b))
        self.data(b)

    def bytes(self):
        return bytes(self.front) + bytes(reversed(self.back))


def write(target, name, seed):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(seed if isinstance(seed, bytes) else seed.bytes())


def frame_decoder():
    conversation = (frame(hello()) + frame(results(1, 0, [(0, b"42")])) + frame(done(1))
                    + frame(results(2, 0, [(0, b"a"), (13, b""), (0, b"c")])) + frame(done(2))
                    + frame(request(7, "queue.put", b"item")) + frame(b""))
    limits = [0, 1, 7, 64, 1000, 64 << 20]
    for use_pipe in (False, True):
        s = Seed()
        s.integer(0, 5, 5)
        s.boolean(use_pipe)
        # One chunk with everything, then the same stream split at awkward places.
        s.chunk(conversation)
        for part in (conversation[:3], conversation[3:17], conversation[17:]):
            s.chunk(part)
        write("frame_decoder", f"conversation_{'pipe' if use_pipe else 'append'}", s)
    s = Seed()
    s.integer(0, 5, limits.index(64))
    s.boolean(False)
    s.chunk(frame(hello()) + (65).to_bytes(4, "little") + b"x" * 65)
    write("frame_decoder", "oversized_after_hello", s)
    s = Seed()
    s.integer(0, 5, 5)
    s.boolean(False)
    s.chunk(frame(hello(init_error=(9, "initializer raised"))))
    write("frame_decoder", "init_error", s)


def worker_connection():
    WRITE, STDERR, SEND, CLOSE = range(4)

    def op(s, o):
        s.integer(0, 3, o)

    s = Seed()
    s.integer(0, 4, 4)
    op(s, WRITE)
    s.chunk(frame(hello()))
    op(s, STDERR)
    s.chunk(b"worker 1234 starting\npartial")
    s.integer(0, 7, 1)
    op(s, WRITE)
    r = frame(results(1, 0, [(0, b"42")])) + frame(done(1))
    s.chunk(r[:5])
    op(s, WRITE)
    s.chunk(r[5:])
    op(s, CLOSE)
    s.chunk(frame(request(3, "queue.get", b"q")))
    write("worker_connection", "conversation", s)

    s = Seed()
    s.integer(0, 4, 2)
    op(s, WRITE)
    s.chunk(frame(hello()) + frame(results(9, 0, [(0, b"x" * 100)])))
    write("worker_connection", "oversized_results", s)

    s = Seed()
    s.integer(0, 4, 4)
    op(s, WRITE)
    s.chunk(frame(b"\xff\xff\xff"))
    write("worker_connection", "unparsable", s)


def control():
    packets = [load_pool(1, "default", ["/usr/lib/libtasks.so"]),
               pool_loaded(1, ["square", "sleep_ms"]),
               fork_worker(2, "default", 0),
               worker_forked(2, 4321),
               load_pool(3, "p", [], "spawn"),
               field_varint(1, 4) + field_bytes(2, status(5, "pool 'x' is not loaded"))]
    s = Seed()
    for p in packets:
        s.integer(1, 4096, len(p))
        s.data(p)
    write("control", "conversation", s)


def packed_items():
    write("packed_items", "three", packed([b"1", b"", b"x" * 200]))
    write("packed_items", "empty", b"")
    write("packed_items", "truncated", packed([b"abc"])[:-1])


if __name__ == "__main__":
    frame_decoder()
    worker_connection()
    control()
    packed_items()
