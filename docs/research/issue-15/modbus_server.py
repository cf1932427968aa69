"""Minimal pymodbus 3.16 TCP server for connector tests (SimDevice API, no deprecated contexts)."""
import asyncio, struct, sys, time
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice, DataType

def regs(fmt, v):  # big-endian bytes -> list of u16 registers (ABCD order)
    b = struct.pack(">" + fmt, v)
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]

hr = [0x1234, 0xFFFE] + regs("I", 0xDEADBEEF) + regs("i", -123456) + regs("f", 21.5)
hr += list(reversed(regs("f", 21.5)))  # CDAB word order at 8..9
state = {"polls": 0, "stall": False}

async def action(fc, start, addr, count, current, set_values):
    if fc == 4:  # read input registers: register 0 counts polls
        state["polls"] += 1
        current[0] = state["polls"] & 0xFFFF
    if state["stall"]:
        await asyncio.sleep(3600)
    return None

device = SimDevice(
    id=1,
    simdata=(
        [SimData(address=0, count=16, values=False, datatype=DataType.BITS)],           # coils
        [SimData(address=0, count=16, values=True, datatype=DataType.BITS)],            # discrete inputs
        [SimData(address=0, values=hr + [0] * (32 - len(hr)), datatype=DataType.REGISTERS)],  # holding
        [SimData(address=0, values=[0] * 8, datatype=DataType.REGISTERS)],               # input
    ),
    action=action,
)

async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5020
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    print(f"modbus server on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()

asyncio.run(main())
