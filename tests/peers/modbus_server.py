"""Modbus TCP test peer for the connector's modbus driver (pymodbus 3.16 SimDevice API).

Usage: modbus_server.py PORT        (listens on 127.0.0.1:PORT, unit id 1)

Register map (unit 1). "big"/"little" name the byte order inside each 16-bit register and the
word order of 32-bit values (word big = high word first = ABCD; word little = CDAB; byte little
+ word big = BADC; both little = DCBA).

  holding (function 3/6/16), addresses 0..63, 64 and above are illegal (exception 2):
    0       u16 0x1234 (4660)            byte big          bit 2 set, bit 0 clear
    1       u16 0x1234                   byte little (0x3412)
    2       i16 -12345 (0xCFC7)          byte big
    3       i16 -12345                   byte little (0xC7CF)
    4..5    u32 0xDEADBEEF (3735928559)  ABCD
    6..7    u32 0xDEADBEEF               CDAB
    8..9    u32 0xDEADBEEF               BADC
    10..11  u32 0xDEADBEEF               DCBA
    12..13  i32 -123456                  ABCD
    14..15  i32 -123456                  CDAB
    16..17  i32 -123456                  BADC
    18..19  i32 -123456                  DCBA
    20..21  f32 123.456                  ABCD
    22..23  f32 123.456                  CDAB
    24..25  f32 123.456                  BADC
    26..27  f32 123.456                  DCBA
    28..63  0 (free for write tests)
  input (function 4), addresses 0..7:
    0       counts reads of input registers starting at address 0 (wraps at 65536)
    1       i16 -12345 (byte big)
    2..3    f32 123.456 ABCD
    4..7    0
  coils (function 1/5/15), addresses 0..15: 0 on, 1 off, 2 on, 3..15 off
  discrete inputs (function 2), addresses 0..15: 0 off, 1 on, 2..15 off

Control: one command per line on stdin, exactly one reply line on stdout each (logs go to stderr):
  stall                      every Modbus request from now on hangs (no answer) -> "ok"
  resume                     answer again; hung requests are answered -> "ok"
  get TABLE ADDRESS COUNT    TABLE is h, i, c or d -> "values V1 V2 ..." (bits as 0/1)
  set TABLE ADDRESS V1 ...   write values directly (no Modbus) -> "ok"
Anything else -> "error ...".
"""

import asyncio
import struct
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

FUNCTION = {"h": (3, 16), "i": (4, None), "c": (1, 15), "d": (2, None)}


def regs(fmt, value, byte_order, word_order):
    """Registers holding `value` packed with struct format `fmt` in the given orders."""
    raw = struct.pack(">" + fmt, value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def holding():
    """The holding register map documented above."""
    hr = regs("H", 0x1234, "big", "big") + regs("H", 0x1234, "little", "big")
    hr += regs("h", -12345, "big", "big") + regs("h", -12345, "little", "big")
    for fmt, value in (("I", 0xDEADBEEF), ("i", -123456), ("f", 123.456)):
        for byte_order, word_order in (("big", "big"), ("big", "little"),
                                       ("little", "big"), ("little", "little")):
            hr += regs(fmt, value, byte_order, word_order)
    assert len(hr) == 28
    return hr + [0] * (64 - len(hr))


INPUT = [0] + regs("h", -12345, "big", "big") + regs("f", 123.456, "big", "big") + [0] * 4
COILS = [True, False, True] + [False] * 13
DISCRETE = [False, True] + [False] * 14

state = {"resume": asyncio.Event(), "reads": 0}
state["resume"].set()


async def action(function_code, start, address, count, registers, set_values):
    """Runs on every Modbus request after its addresses were checked."""
    if function_code == 4 and address == 0:
        state["reads"] = (state["reads"] + 1) & 0xFFFF
        registers[0 - start] = state["reads"]
    if set_values is not None:
        print(f"write fc={function_code} address={address} values={list(set_values)}",
              file=sys.stderr, flush=True)
    await state["resume"].wait()
    return None


def control_bypass(server):
    """The device's runtime: reads and writes here skip `action` (never stall)."""
    return server.context.devices[1]


async def handle(server, line):
    """One control command -> its reply line."""
    words = line.split()
    if not words:
        return "error empty command"
    if words[0] == "stall":
        state["resume"].clear()
        return "ok"
    if words[0] == "resume":
        state["resume"].set()
        return "ok"
    if words[0] in ("get", "set") and len(words) >= 4 and words[1] in FUNCTION:
        runtime = control_bypass(server)
        read_fc, write_fc = FUNCTION[words[1]]
        address = int(words[2])
        saved, runtime.action = runtime.action, None
        try:
            if words[0] == "get":
                got = await runtime.async_getValues(read_fc, address, int(words[3]))
                if not isinstance(got, list):
                    return f"error {got!r}"
                return "values " + " ".join(str(int(v)) for v in got)
            values = [int(v) for v in words[3:]]
            if words[1] in ("c", "d"):
                values = [bool(v) for v in values]
            # Discrete inputs and input registers have no write function: use the read
            # function's block (the runtime maps a function code to its block).
            result = await runtime.async_setValues(write_fc or read_fc, address, values)
            return "ok" if result is None else f"error {result!r}"
        finally:
            runtime.action = saved
    return f"error unknown command {line.strip()!r}"


async def control(server):
    """Reads commands from stdin until it closes (then the server exits)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            reply = await handle(server, line.decode())
        except (ValueError, IndexError) as error:
            reply = f"error {error}"
        print(reply, flush=True)


async def main():
    port = int(sys.argv[1])
    device = SimDevice(
        id=1,
        simdata=(
            [SimData(address=0, values=COILS, datatype=DataType.BITS)],
            [SimData(address=0, values=DISCRETE, datatype=DataType.BITS)],
            [SimData(address=0, values=holding(), datatype=DataType.REGISTERS)],
            [SimData(address=0, values=INPUT, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    print(f"modbus server on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await control(server)
    serving.cancel()


asyncio.run(main())
