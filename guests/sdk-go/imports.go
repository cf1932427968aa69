package edgeward

// The imports of module "edgeward" (docs/guest-abi.md). A string parameter
// is passed as (pointer, length), which is what the host expects for a
// name or a line; bytes go as a pointer to the first one and a length.

//go:wasmimport edgeward log
//go:noescape
func sysLog(level int32, text string) int32

//go:wasmimport edgeward now_ns
func sysNowNs() int64

//go:wasmimport edgeward channel
//go:noescape
func sysChannel(name string) int32

//go:wasmimport edgeward send
//go:noescape
func sysSend(ch int32, data *byte, n int32) int32

//go:wasmimport edgeward message_seq
func sysMessageSeq() int64

//go:wasmimport edgeward snapshot_put
//go:noescape
func sysSnapshotPut(state *byte, n int32) int32

// The imports of command modules (command.go).

//go:wasmimport edgeward recv_wait
//go:noescape
func sysRecvWait(ch int32, buf *byte, n int32, timeoutNs int64) int32

//go:wasmimport edgeward channel_fd
func sysChannelFd(ch int32) int32

//go:wasmimport edgeward snapshot_get
//go:noescape
func sysSnapshotGet(buf *byte, n int32) int32
